"""How far do predicted future states drift from the truth with the horizon? One-step vs skip-step vs recursive.

    python benchmarks/rsp_rollout_error.py [--device cpu|cuda] [--quick] [--updates N] [--hidden 1024 1024]

Trains three goal-conditioned RSP sub-goal models on a PointMaze dataset (each an RSP trained jointly, so every
level gets `--updates` Adam updates; k = 32):
  one-step   scales [1]       f_1(s, g) -> s_{t+1}
  half-step  scales [16]      f_16(s, g) -> s_{t+16}
  planner    scales [16, 32]  f_32(s, g) -> s_{t+32}, then f_16(s, g, s_{t+32}) -> s_{t+16} (coarse to fine)
and rolls each out, from the TRUE s_t, on held-out episodes (the same recipe, another seed), conditioned on the
episode's final achieved goal, always feeding back its own predicted state (means, no sampling):
  (a) one_step        f_1 applied h times
  (b) k_step          the planner's coarse level f_32 applied h/32 times
  (b') half_step      f_16 applied h/16 times
  (c) recursive       the planner as RSP executes it: from the current predicted state plan s_{+32}, then the
                      sub-goal s_{+16} conditioned on it, and move to that sub-goal; h/16 times
Between a method's own prediction points (every 1, 32 or 16 steps, starting from the true s_t) the predicted
path is linearly interpolated, so every method has a prediction at every h = 1..96 (= 3k). Error: RMSE over all
start points t with t + 96 <= T (no clamping at the episode end), of the position (x, y) and of the full state
(x, y, vx, vy). Writes benchmarks/results/rsp_rollout_error.md (full runs only) and prints JSON last.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from offrl.algos.rsp import RSP
from offrl.data import catalog, minari_io, registry
from offrl.data.datamodules import SkipStepDataModule

K = 32
HORIZON = 3 * K
REPORT_HORIZONS = [1, 8, 16, 24, 32, 48, 64, 80, 96]
RESULTS = Path(__file__).parent / "results" / "rsp_rollout_error.md"


def train(dataset_id: str, scales: list[int], args: argparse.Namespace) -> RSP:
    L.seed_everything(args.seed)
    model = RSP(
        hidden_dims=args.hidden, lr=args.lr, training="joint", steps_per_stage=args.updates,
        normalize_observations=args.normalize, noise_scale=1.0,
    )
    data = SkipStepDataModule(dataset_id, batch_size=args.batch_size, steps_per_epoch=args.updates, scales=scales, seed=args.seed)
    L.Trainer(
        max_steps=args.updates, accelerator=args.device, devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
    ).fit(model, data)
    return model.eval()


def held_out_starts(dataset_id: str, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s_t [N, 4], the true s_{t+1..t+96} [N, 96, 4], the episode's final achieved goal [N, 2]) of fresh episodes."""
    generated = catalog.recipe(dataset_id).generate(steps=steps, episodes=None, seed=seed, progress=lambda n: None)
    starts, futures, goals = [], [], []
    for episode in generated.episodes:
        states = np.asarray(episode.observations["observation"], dtype=np.float32)  # T + 1 states
        if len(states) <= HORIZON:
            continue
        windows = np.lib.stride_tricks.sliding_window_view(states, HORIZON + 1, axis=0).transpose(0, 2, 1)
        starts.append(windows[:, 0])
        futures.append(windows[:, 1:])
        goals.append(np.repeat(episode.observations["achieved_goal"][-1:], len(windows), 0))
    return tuple(torch.from_numpy(np.concatenate(parts)).float() for parts in (starts, futures, goals))


def path(anchors: list[torch.Tensor], every: int, start: torch.Tensor) -> torch.Tensor:
    """[N, 96, D] states at h = 1..96 from predictions every `every` steps, linearly interpolated from s_t."""
    points = torch.stack([start, *anchors], 1)  # h = 0, every, 2 every, ...
    h = torch.arange(1, HORIZON + 1, dtype=torch.float32)
    left = (h // every).long().clamp(max=points.shape[1] - 2)
    weight = ((h - left * every) / every)[None, :, None]
    return points[:, left] * (1 - weight) + points[:, left + 1] * weight


@torch.no_grad()
def rollouts(one_step: RSP, half_step: RSP, planner: RSP, start: torch.Tensor, goal: torch.Tensor) -> dict[str, torch.Tensor]:
    def unroll(step, times: int) -> list[torch.Tensor]:
        states, state = [], start
        for _ in range(times):
            state = step(state)
            states.append(state)
        return states

    return {
        "one_step": path(unroll(lambda s: one_step.plan(s, goal)[:, 0], HORIZON), 1, start),
        "k_step": path(unroll(lambda s: planner.plan(s, goal)[:, 0], HORIZON // K), K, start),
        "half_step": path(unroll(lambda s: half_step.plan(s, goal)[:, 0], HORIZON // 16), 16, start),
        "recursive": path(unroll(lambda s: planner.plan(s, goal)[:, 1], HORIZON // 16), 16, start),
    }


def rmse(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """[96] RMSE per horizon over start points and the given dimensions."""
    return (predicted - truth).pow(2).mean((0, 2)).sqrt()


def write_markdown(result: dict, args: argparse.Namespace) -> None:
    methods = list(result["position_rmse"])
    header = "| h | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    tables = {}
    for metric in ("position_rmse", "state_rmse"):
        rows = [f"| {h} | " + " | ".join(f"{result[metric][m][h - 1]:.3f}" for m in methods) + " |" for h in REPORT_HORIZONS]
        tables[metric] = header + "\n".join(rows)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        f"""# RSP: prediction error vs horizon (one-step, k-step, recursive)

Budget: {args.updates} Adam updates per network (batch {args.batch_size}, lr {args.lr} cosine, MLP {args.hidden},
noise scale 1, normalised deltas: {args.normalize}), trained on `{result['dataset']}` ({result['train_transitions']}
transitions), seed {args.seed}; held-out: {result['held_out_starts']} start points from fresh episodes of the same
recipe (generator seed {args.held_out_seed}). Device {result['device']}, {result['date']}, {result['train_seconds']} s of training
(wall-clock for the three models).
Command: `{result['command']}`

## What is compared

Every model is a goal-conditioned RSP sub-goal model (Gaussian MLP on (s, g[, coarser sub-goal]) predicting
s_{{t+k}} - s_t, trained by NLL). From the true s_t of a held-out episode, conditioned on that episode's final
achieved goal, each method predicts s_{{t+h}} for h = 1..96 (3k, k = 32) feeding back its own predictions:

- **one_step** (a): a k = 1 model applied h times.
- **k_step** (b): a k = 32 model (the planner's coarse level) applied h/32 times.
- **half_step** (b'): a k = 16 model applied h/16 times (same step as (c), without the coarse look-ahead).
- **recursive** (c): the depth-2 planner, scales [16, 32], as RSP uses it: plan s_{{+32}}, then the sub-goal
  s_{{+16}} conditioned on that plan, move to the sub-goal, repeat (h/16 times).

Between a method's own points the path is linear from the true s_t. RMSE is over all start points with the
full 96 steps inside their episode. At h = 32, 64, 96 (b) is exact model output, at multiples of 16 (b') and (c) are.

## Position (x, y) RMSE

{tables['position_rmse']}

## Full state (x, y, vx, vy) RMSE

{tables['state_rmse']}

## Finding

{result['finding']}

Caveat: the finer levels (and (c)'s fine level) are trained on the true coarser sub-goal plus noise at the coarser
model's learned std (RSP_JAX). At small budgets that std is still overstated (benchmarks/results/rsp.md), so a
level conditioned on a coarser prediction learns to lean on it less than it could; at the paper's 20k updates
per level and batch 16384 (the default command, a GPU run) this comparison may come out differently.
"""
    )


def finding(result: dict) -> str:
    at = {m: result["position_rmse"][m][HORIZON - 1] for m in result["position_rmse"]}
    mid = {m: result["position_rmse"][m][47] for m in result["position_rmse"]}
    order = sorted(at, key=at.get)
    return (
        f"At h = 96 the position RMSE ranks {' < '.join(f'{m} ({at[m]:.3f})' for m in order)}; at h = 48: "
        + ", ".join(f"{m} {mid[m]:.3f}" for m in mid)
        + ". The paper's mechanism predicts recursive <= k_step < one_step; "
        + ("the recursive planner is closest to the truth here." if order[0] == "recursive" else f"here {order[0]} is closest, not the recursive planner.")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dataset", default="offrl/pointmaze/medium-v0")
    parser.add_argument("--generate-steps", type=int, default=100_000, help="size of the training set if it is missing")
    parser.add_argument("--held-out-steps", type=int, default=20_000)
    parser.add_argument("--held-out-seed", type=int, default=1)
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--hidden", type=int, nargs="+", default=[1024, 1024])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=True,
                        help="z-score inputs and each scale's deltas (fair to the tiny one-step deltas)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="reduced CPU budget: 1500 updates, batch 512, 256x2; no md unless --write")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None, help="write the md (default: unless --quick)")
    if "--quick" in sys.argv:  # reduced defaults; explicit flags still win
        parser.set_defaults(updates=1500, batch_size=512, hidden=[256, 256], held_out_steps=5000)
    args = parser.parse_args()
    if minari_io.dataset_path(args.dataset).exists() is False:
        registry.generate(args.dataset, steps=args.generate_steps, seed=0)

    start_time = time.perf_counter()
    models = [train(args.dataset, scales, args).cpu() for scales in ([1], [16], [16, 32])]
    train_seconds = round(time.perf_counter() - start_time, 1)
    start, truth, goal = held_out_starts(args.dataset, args.held_out_steps, args.held_out_seed)
    predicted = rollouts(*models, start, goal)
    result = {
        "benchmark": "rsp_rollout_error",
        "dataset": args.dataset,
        "train_transitions": registry.load(args.dataset)[0].batch_size[0],
        "held_out_starts": start.shape[0],
        "device": args.device,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "train_seconds": train_seconds,
        "updates": args.updates,
        "batch_size": args.batch_size,
        "hidden": args.hidden,
        "command": "python benchmarks/rsp_rollout_error.py " + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items() if k not in ("quick", "write", "normalize")
        ) + ("" if args.normalize else " --no-normalize"),
        "horizons": list(range(1, HORIZON + 1)),
        "position_rmse": {m: [round(x, 4) for x in rmse(p[..., :2], truth[..., :2]).tolist()] for m, p in predicted.items()},
        "state_rmse": {m: [round(x, 4) for x in rmse(p, truth).tolist()] for m, p in predicted.items()},
    }
    result["finding"] = finding(result)
    if args.write if args.write is not None else not args.quick:
        write_markdown(result, args)
    print(result["finding"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
