"""ADMPO-ON vs SAC on Hopper: learning curves (evaluation normalised score vs env steps) for a fixed env-step budget,
and how much sooner ADMPO-ON reaches a score (arXiv 2405.17031 claims 1.33x faster learning than the best online
baseline).

Every (algorithm, seed) is one `offrl fit` of configs/admpo_on/hopper.yaml or configs/sac/hopper.yaml in its own
process and folder, `--jobs` at once, with trainer.max_steps set so both take `--env-steps` env steps
(env steps = warm-up + updates / updates_per_env_step) and an evaluation every `--eval-every` env steps.
"Speed-up" = env steps SAC's mean curve needs to first reach `--threshold-fraction` of SAC's final mean score,
divided by the env steps ADMPO-ON's mean curve needs for the same score (None if ADMPO-ON never reaches it).

Full mode: the configs as they are, 55k env steps (the official Hopper run: 5k warm-up + 50k), 3 seeds (hours per
ADMPO-ON run on a GPU).
`--reduced`: a CPU smoke budget (small networks, 700 env steps, ADMPO-ON at UTD 5, light model retraining):
its numbers say the pipeline runs, not who wins. Prints JSON as its last line; writes
benchmarks/results/admpo_online.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("admpo_on", "sac")


def updates_per_env_step(algorithm: str, args) -> float:
    """SAC: 1 update per env step (its config); ADMPO-ON: --admpo-utd (the config's 20 in full mode)."""
    return args.admpo_utd if algorithm == "admpo_on" else 1.0


def fit_command(algorithm: str, seed: int, args) -> list[str]:
    utd = updates_per_env_step(algorithm, args)
    updates = int((args.env_steps - args.warmup) * utd)
    command = [
        sys.executable, "-m", "offrl.cli", "fit", "--config", str(ROOT / "configs" / algorithm / "hopper.yaml"),
        "--seed_everything", str(seed), "--trainer.callbacks.seed", str(seed),
        "--trainer.callbacks.warmup_steps", str(args.warmup), "--trainer.callbacks.updates_per_env_step", str(utd),
        "--trainer.max_steps", str(updates),
        "--data.steps_per_epoch", str(int(args.eval_every * utd)), "--checkpoint.every_n_train_steps", str(updates),
        "--trainer.accelerator", "gpu" if args.device == "cuda" else "cpu", "--trainer.enable_progress_bar", "false",
        "--evaluation.num_episodes", str(args.eval_episodes), "--evaluation.num_envs", str(args.eval_episodes),
    ]
    if args.reduced:
        command += ["--model.hidden_dims", "[64, 64]"]
        if algorithm == "admpo_on":
            command += [
                "--model.dynamics_hidden_dim", "64", "--model.dynamics_gru_layers", "2", "--model.dynamics_residual_blocks", "2",
                "--model.dynamics_max_epochs", "2", "--model.dynamics_updates_per_epoch", "50", "--model.rollout_batch_size", "1000",
                "--model.horizon_ramp_start", str(args.warmup), "--model.horizon_ramp_end", str(args.env_steps),
            ]
    return command


def learning_curve(run_dir: Path, warmup: int, utd: float) -> list[tuple[float, float]]:
    """(env steps, eval/normalized_score) of every evaluation of a run."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    # Lightning writes validation metrics at the index of the epoch's last update (updates done - 1).
    return [(warmup + (event.step + 1) / utd, event.value) for event in events.Scalars("eval/normalized_score")]


def run_one(algorithm: str, seed: int, args) -> dict:
    folder = Path(args.work_dir) / f"{algorithm}-seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(fit_command(algorithm, seed, args), cwd=folder, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{algorithm} seed {seed} failed:\n{result.stderr[-3000:]}")
    run_dir = folder / "logs" / algorithm / "Hopper" / "version_0"
    curve = learning_curve(run_dir, args.warmup, updates_per_env_step(algorithm, args))
    return {"algorithm": algorithm, "seed": seed, "curve": curve, "seconds": time.perf_counter() - start}


def first_reach(steps: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    reached = np.nonzero(scores >= target)[0]
    return float(steps[reached[0]]) if len(reached) else None


def summarise(runs: list[dict], args) -> dict:
    curves = {}
    for algorithm in ALGORITHMS:
        per_seed = [run["curve"] for run in runs if run["algorithm"] == algorithm]
        length = min(len(curve) for curve in per_seed)
        steps = np.array([point[0] for point in per_seed[0][:length]])
        scores = np.array([[point[1] for point in curve[:length]] for curve in per_seed])
        curves[algorithm] = {"env_steps": steps.tolist(), "mean": scores.mean(0).tolist(), "std": scores.std(0).tolist()}
    sac_final = curves["sac"]["mean"][-1]
    target = args.threshold_fraction * sac_final
    reach = {name: first_reach(np.array(c["env_steps"]), np.array(c["mean"]), target) for name, c in curves.items()}
    speedup = reach["sac"] / reach["admpo_on"] if reach["sac"] and reach["admpo_on"] else None
    return {
        "env_steps": args.env_steps, "admpo_utd": args.admpo_utd, "seeds": args.seeds, "device": args.device, "reduced": args.reduced,
        "target_score": target, "env_steps_to_target": reach, "speedup": speedup,
        "final_mean_score": {name: c["mean"][-1] for name, c in curves.items()}, "curves": curves,
        "seconds": {run["algorithm"] + f"-seed{run['seed']}": round(run["seconds"], 1) for run in runs},
    }


def write_markdown(summary: dict, path: Path) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    budget = (f"reduced CPU smoke budget (small networks, light model retraining, ADMPO-ON at {summary['admpo_utd']} updates "
              "per env step)" if summary["reduced"] else f"full configs (ADMPO-ON at {summary['admpo_utd']} updates per env step)")
    lines = [
        "# ADMPO-ON vs SAC on Hopper-v5 (learning curves)",
        "",
        f"Budget: {summary['env_steps']} env steps, {budget}; seeds {summary['seeds']}; device {summary['device']}; "
        f"date {today}. Command: `python {' '.join(sys.argv)}`.",
        "",
        "Mean (std) evaluation normalised score by env steps:",
        "",
        "| env steps | " + " | ".join(ALGORITHMS) + " |",
        "| --- | " + " | ".join("---" for _ in ALGORITHMS) + " |",
    ]
    for i, steps in enumerate(summary["curves"]["sac"]["env_steps"]):
        cells = []
        for name in ALGORITHMS:
            curve = summary["curves"][name]
            cells.append(f"{curve['mean'][i]:.1f} ({curve['std'][i]:.1f})" if i < len(curve["mean"]) else "")
        lines.append(f"| {steps:.0f} | " + " | ".join(cells) + " |")
    reach = summary["env_steps_to_target"]
    lines += [
        "",
        f"Target score {summary['target_score']:.1f} (fraction of SAC's final mean): SAC reaches it at {reach['sac']} "
        f"env steps, ADMPO-ON at {reach['admpo_on']}; speed-up {summary['speedup']} (paper: 1.33x).",
    ]
    if summary["reduced"]:
        lines += ["", "Reduced budget: these numbers only show that the pipeline runs; they say nothing about the claim."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--reduced", action="store_true", help="CPU smoke budget (see the docstring)")
    parser.add_argument("--env-steps", type=int, default=None, help="env steps per run (full 55000, reduced 700)")
    parser.add_argument("--warmup", type=int, default=None, help="random warm-up steps (full 5000, reduced 400)")
    parser.add_argument("--eval-every", type=int, default=None, help="env steps between evaluations (full 1000, reduced 100)")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (full 10, reduced 3)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="full 0 1 2, reduced 0")
    parser.add_argument("--admpo-utd", type=float, default=None, help="ADMPO-ON updates per env step (full 20, reduced 5)")
    parser.add_argument("--threshold-fraction", type=float, default=0.9)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--work-dir", default="benchmarks/runs/admpo_online")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "admpo_online.md")
    args = parser.parse_args()
    defaults = {"env_steps": (700, 55_000), "warmup": (400, 5000), "eval_every": (100, 1000), "eval_episodes": (3, 10),
                "seeds": ([0], [0, 1, 2]), "admpo_utd": (5.0, 20.0)}
    for name, (reduced, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, reduced if args.reduced else full)

    jobs = [(algorithm, seed) for algorithm in ALGORITHMS for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(*job, args), jobs))
    summary = summarise(runs, args)
    write_markdown(summary, args.output)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
