"""RSP vs goal-conditioned BC vs goal-conditioned IQL+DDPG+BC at equal wall-clock training time, and the
paper's training-time claim, as JSON on the last stdout line.

    python benchmarks/rsp.py [--device cpu|cuda] [--budget-seconds S] [--seeds 0 1 2] [--quick]
    python benchmarks/rsp.py --mode paper-time --device cuda   # RSP's full recipe on pointmaze-large

compare (default): every algorithm's repo config (configs/{rsp,bc,iql_ddpgbc}/pointmaze-umaze.yaml, pointed at
`--dataset`, with its `performance` section; on MuJoCo `--algorithms rsp_mujoco bc_mujoco iql_mujoco` with
configs/{rsp,bc,iql}/hopper-medium.yaml) trains for `--budget-seconds` each, per seed; `--hidden`/`--batch-size` override
every config alike for a CPU budget. BC and IQL stop at the budget (constant lr). The budget is CPU time of
this process on CPU (one torch thread; fair on a shared machine), wall-clock on CUDA. RSP's cosine
schedule needs its step count up front, so a short calibration fit times one update and the stage length is set
to fill the budget: stagewise (depth + 1) * steps_per_stage updates, joint steps_per_stage updates. Every row
reports the seconds actually trained. Then each policy is evaluated (not timed) on `--episodes` episodes of the
dataset's env; writes benchmarks/results/rsp.md (unless --no-write).
paper-time: configs/rsp/pointmaze-large.yaml unchanged (1M steps generated if missing, 20k updates per stage,
batch 16384, 1024x2), timed from the first to the last update, then evaluated. Paper: about 180 s on a GPU.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import sys
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from offrl.callbacks.throughput import UpdateLoop
from offrl.data import registry
from offrl.envs.evaluation import evaluate
from offrl.envs.factory import make_eval_env

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "rsp.md"
CONFIGS = {
    "rsp_stagewise": ("rsp/pointmaze-umaze.yaml", {"training": "stagewise"}),
    "rsp_joint": ("rsp/pointmaze-umaze.yaml", {"training": "joint"}),
    # Without noise injection: the finer levels and the policy see the clean true sub-goals in training.
    "rsp_stagewise_noise0": ("rsp/pointmaze-umaze.yaml", {"training": "stagewise", "noise_scale": 0.0}),
    "rsp_joint_noise0": ("rsp/pointmaze-umaze.yaml", {"training": "joint", "noise_scale": 0.0}),
    "gcbc": ("bc/pointmaze-umaze.yaml", {}),
    "gciql_ddpgbc": ("iql_ddpgbc/pointmaze-umaze.yaml", {}),
    # Reward tasks (the RSP paper's MuJoCo claim): pass --dataset offrl/mujoco/hopper/medium-v0.
    "rsp_mujoco": ("rsp/hopper-medium.yaml", {"training": "stagewise"}),
    "bc_mujoco": ("bc/hopper-medium.yaml", {}),
    "iql_mujoco": ("iql/hopper-medium.yaml", {}),
}


class TrainClock(L.Callback):
    """Seconds from the first to the last update (data loading and set-up excluded); stops training at `budget`.

    On CPU the clock is this process's CPU time (one torch thread), so a busy shared machine slows every
    algorithm's updates without eating into its budget; on CUDA it is wall-clock time."""

    def __init__(self, device: str, budget: float | None = None):
        self.now = time.perf_counter if device == "cuda" else time.process_time
        self.device, self.budget = device, budget

    def elapsed(self) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        return self.now() - self.start

    def on_train_start(self, trainer, pl_module):
        self.start = self.now()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.budget is not None and trainer.global_step % 10 == 0 and self.elapsed() >= self.budget:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module):
        self.seconds = self.elapsed()


def instantiate(spec: dict, **overrides):
    module, name = spec["class_path"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**{**spec["init_args"], **overrides})


def fit(model, data, device: str, max_steps: int, performance: dict, max_seconds: float | None = None) -> float:
    """Train quietly (no logger, checkpoints or evaluation) with the config's `performance` settings; returns the
    seconds of training."""
    clock = TrainClock(device, max_seconds)
    L.Trainer(
        max_steps=max_steps, accelerator=device, devices=1,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, limit_val_batches=0, callbacks=[clock, UpdateLoop(**performance)],
    ).fit(model, data)
    return clock.seconds


def run(name: str, args: argparse.Namespace, seed: int, budget: float | None) -> dict:
    """Train one algorithm on one seed (for `budget` seconds, or its config's full length if None) and evaluate it."""
    config_file, model_overrides = CONFIGS[name]
    config = yaml.safe_load((ROOT / "configs" / config_file).read_text())
    model_overrides = dict(model_overrides)
    data_overrides = {"dataset_id": args.dataset, "seed": seed}
    if args.hidden:
        model_overrides["hidden_dims"] = args.hidden
    if args.batch_size:
        data_overrides["batch_size"] = args.batch_size

    def build(**extra):
        L.seed_everything(seed)
        return instantiate(config["model"], **{**model_overrides, **extra}), instantiate(config["data"], **data_overrides)

    performance = config.get("performance", {})
    per_step = UpdateLoop(**performance).updates_per_step  # a stage's length must be a multiple of it
    if budget is None:  # the config's own recipe, timed
        model, data = build()
        seconds = fit(model, data, args.device, config["trainer"]["max_steps"], performance)
        updates = config["trainer"]["max_steps"]
    elif name.startswith("rsp"):
        probe_steps = math.ceil(20 / per_step) * per_step
        model, data = build(steps_per_stage=probe_steps)
        stages = model.hparams.training == "stagewise" and len(data.scales) + 1 or 1
        per_update = fit(model, data, args.device, stages * probe_steps, performance) / (stages * probe_steps)
        steps_per_stage = max(1, int(budget / per_update / stages) // per_step) * per_step
        model, data = build(steps_per_stage=steps_per_stage)
        updates = stages * steps_per_stage
        seconds = fit(model, data, args.device, updates, performance)
    else:
        model, data = build()
        seconds = fit(model, data, args.device, 10**9, performance, budget)
        updates = model.trainer.global_step
    model.eval()
    env = make_eval_env(data.info, num_envs=min(10, args.episodes), seed=12345)
    metrics = evaluate(model.act, env, data.info, args.episodes, model.device)
    env.close()
    row = {
        "algorithm": name, "seed": seed, "train_seconds": round(seconds, 1), "updates": updates,
        "success": round(metrics.get("eval/success", float("nan")), 3), "normalized_score": round(metrics.get("eval/normalized_score", float("nan")), 1),
    }
    print(json.dumps(row), flush=True)
    return row


def summary(rows: list[dict]) -> dict[str, dict]:
    table = {}
    for name in dict.fromkeys(row["algorithm"] for row in rows):
        mine = [row for row in rows if row["algorithm"] == name]
        success = torch.tensor([row["success"] for row in mine], dtype=torch.float64)
        score = torch.tensor([row["normalized_score"] for row in mine], dtype=torch.float64)
        table[name] = {
            "success_mean": round(success.mean().item(), 3),
            "success_per_seed": [row["success"] for row in mine],
            "normalized_score_mean": round(score.mean().item(), 1),
            "train_seconds_mean": round(sum(row["train_seconds"] for row in mine) / len(mine), 1),
            "updates_mean": round(sum(row["updates"] for row in mine) / len(mine)),
        }
    return table


def write_markdown(result: dict) -> None:
    lines = [
        "| algorithm | success (mean) | success per seed | normalised score | train s | updates |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in result["summary"].items():
        per_seed = " / ".join(f"{x:.2f}" for x in s["success_per_seed"])
        lines.append(
            f"| {name} | {s['success_mean']:.2f} | {per_seed} | {s['normalized_score_mean']} | {s['train_seconds_mean']} | {s['updates_mean']} |"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    section = f"""## {result['dataset']}: {result['budget_seconds']} s of training per run

Budget {result['budget_seconds']} s of training per run ({'wall-clock' if result['device'] == 'cuda' else 'process CPU time, one torch thread'}), seeds {result['seeds']}, device {result['device']}
({result['threads']} torch thread(s)), {result['date']}; dataset `{result['dataset']}` ({result['transitions']} transitions,
generated with `offrl data generate`), {result['episodes']} evaluation episodes. Networks {result['hidden'] or 'as configured'},
batch {result['batch_size'] or 'as configured'}; RSP noise scale as configured
(1, RSP_JAX) unless the name says noise0.
Command: `{result['command']}`

{chr(10).join(lines)}
"""
    previous = RESULTS.read_text() if RESULTS.exists() else "# RSP vs goal-conditioned BC and IQL at equal wall-clock\n\n"
    RESULTS.write_text(previous.rstrip() + "\n\n" + section)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["compare", "paper-time"], default="compare")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--dataset", default=None, help="compare only; default offrl/pointmaze/medium-v0")
    parser.add_argument("--generate-steps", type=int, default=None, help="size of a missing dataset (default: the recipe's 1M)")
    parser.add_argument("--budget-seconds", type=float, default=180.0, help="training seconds per run: CPU time on cpu, wall-clock on cuda (paper: ~180 s)")
    parser.add_argument("--algorithms", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=30)
    parser.add_argument("--hidden", type=int, nargs="+", default=None, help="override every config's MLP widths")
    parser.add_argument("--batch-size", type=int, default=None, help="override every config's batch size")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=True)
    if "--quick" in sys.argv:  # reduced CPU budget; explicit flags still win
        parser.set_defaults(budget_seconds=60.0, seeds=[0, 1], episodes=20, hidden=[256, 256], batch_size=256, generate_steps=100_000)
    parser.add_argument("--quick", action="store_true", help="60 s, seeds 0 1, 256x2 MLPs, batch 256, 100k-step dataset")
    args = parser.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(1)
    if args.mode == "paper-time":  # configs/rsp/pointmaze-large.yaml as it is
        args.dataset, args.hidden, args.batch_size = "offrl/pointmaze/large-v0", None, None
    args.dataset = args.dataset or "offrl/pointmaze/medium-v0"
    if not registry.minari_io.dataset_path(args.dataset).exists():
        registry.generate(args.dataset, steps=args.generate_steps, seed=0)

    if args.mode == "paper-time":
        CONFIGS["rsp_paper"] = ("rsp/pointmaze-large.yaml", {})
        rows = [run("rsp_paper", args, seed, None) for seed in args.seeds]
        print(json.dumps({"benchmark": "rsp_paper_time", "device": args.device, "paper_seconds": 180, "runs": rows}))
        return

    rows = [run(name, args, seed, args.budget_seconds) for seed in args.seeds for name in args.algorithms]
    result = {
        "benchmark": "rsp_equal_time",
        "dataset": args.dataset,
        "transitions": registry.load(args.dataset)[0].batch_size[0],
        "budget_seconds": args.budget_seconds,
        "seeds": args.seeds,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "episodes": args.episodes,
        "hidden": args.hidden,
        "batch_size": args.batch_size,
        "command": "python benchmarks/rsp.py " + " ".join(sys.argv[1:]),
        "summary": summary(rows),
        "runs": rows,
    }
    if args.write:
        write_markdown(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
