"""The slow half of a model-based run, timed on its own: dynamics-model fitting and one penalised roll-out round
of ADMPO-OFF (the any-step GRU) or MOPO (the MLP ensemble), with the shipped config's model and horizon, on a real
dataset. The last stdout line is JSON: milliseconds per fitting update (the updates alone), seconds of an epoch's
hold-out check, the epoch they make at the config's updates per epoch, seconds per roll-out round, the FLOPs of
each (torch.utils.flop_counter.FlopCounterMode) and their fraction of this process's own matmul peak (2048 x 2048
float32 at the same thread count).

    python benchmarks/model_round.py --algo admpo_off [--device cuda] [--starts 5000] [--fit-updates 50] [--threads 1]

The networks are untrained (cost does not depend on the weights); the roll-out round starts from `--starts`
real windows (the configs' 50,000 take 89 s per ADM round and 11 s per MOPO round on one CPU thread; with
the roll-out's rows in chunks, time scales linearly with the starts).
Before 2026-12-07 `fit_ms_per_update` timed a whole one-epoch `fit_dynamics` of --fit-updates updates, so its
per-update figure also carried the epoch's fixed work (window split, two hold-out checks) over only 20-50 updates,
where a real epoch spreads it over hundreds (MOPO) or thousands (ADM).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

from offrl.algos.dynamics import fit_epoch, holdout_errors, updates_per_epoch
from offrl.data.windows import WindowGenerators, split_window_starts
from offrl.models.rollouts import rollout
from offrl.nn.optim import adam
from throughput import instantiate, matmul_peak, synchronize  # benchmarks/throughput.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = {"admpo_off": "configs/admpo_off/hopper-medium.yaml", "mopo": "configs/mopo/hopper-medium.yaml"}


def timed(function, repeats: int, device: torch.device) -> tuple[float, int]:
    """(best seconds of `repeats` calls, FLOPs of one call)."""
    with FlopCounterMode(display=False) as counter:
        function()
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best, counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dataset", default="offrl/mujoco/hopper/medium-v0")
    parser.add_argument("--generate-steps", type=int, default=100_000)
    parser.add_argument("--starts", type=int, default=5000, help="roll-out starts (the configs: 50,000)")
    parser.add_argument("--fit-updates", type=int, default=50, help="fitting updates timed (one short epoch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    config = yaml.safe_load((ROOT / CONFIGS[args.algo]).read_text())
    model = instantiate(config["model"])
    datamodule = instantiate(config["data"], dataset_id=args.dataset, generate_steps=args.generate_steps)
    datamodule.prepare_data()
    datamodule.setup("fit")
    transitions = datamodule.transitions.to(device)
    model.build(datamodule.info, transitions)
    model.to(device)
    dynamics, hp = model.dynamics, model.hparams

    settings = model.fit_settings()
    train_starts, holdout_starts = split_window_starts(
        transitions["episode_last"], dynamics.max_window, settings.holdout_fraction, settings.max_holdout
    )
    optimizer = adam(dynamics.parameters(), lr=settings.lr)
    generators = WindowGenerators(0, device)
    dynamics.train()
    fit_seconds, fit_flops = timed(
        lambda: fit_epoch(dynamics, transitions, train_starts, args.fit_updates, settings.batch_size, optimizer, generators),
        args.repeats, device,
    )
    holdout_seconds, _ = timed(lambda: holdout_errors(dynamics, transitions, holdout_starts), args.repeats, device)
    epoch_updates = updates_per_epoch(settings, train_starts)

    window = dynamics.max_window
    first = model.rollout_starts[torch.randint(len(model.rollout_starts), (args.starts,), device=device)]
    history = first[:, None] + torch.arange(window - 1, device=device)
    policy = lambda observation: model.agent.act(observation, deterministic=False)  # noqa: E731
    round_seconds, round_flops = timed(
        lambda: rollout(
            dynamics, policy, transitions["observation"][history], transitions["action"][history],
            transitions["observation"][first + window - 1], hp.rollout_horizon, model.terminated_fn, hp.penalty_coef,
        ),
        args.repeats, device,
    )
    peak = matmul_peak(device)
    print(json.dumps({
        "algo": args.algo, "device": args.device, "dataset": args.dataset, "threads": torch.get_num_threads(), "torch": torch.__version__,
        "load_average": round(os.getloadavg()[0], 2), "matmul_peak_gflop_s": round(peak / 1e9, 1),
        "fit_updates": args.fit_updates, "fit_update_ms": round(1000 * fit_seconds / args.fit_updates, 1),
        "fit_fraction_of_peak": round(fit_flops / fit_seconds / peak, 3), "holdout_check_s": round(holdout_seconds, 3),
        "fit_updates_per_epoch": epoch_updates,
        "fit_epoch_s": round(epoch_updates * fit_seconds / args.fit_updates + holdout_seconds, 1),
        "rollout_starts": args.starts, "rollout_horizon": hp.rollout_horizon, "rollout_round_s": round(round_seconds, 2),
        "rollout_gflop": round(round_flops / 1e9, 1), "rollout_fraction_of_peak": round(round_flops / round_seconds / peak, 3),
        "projected_round_s_at_config_starts": round(round_seconds * hp.rollout_batch_size / args.starts, 1),
    }))


if __name__ == "__main__":
    main()
