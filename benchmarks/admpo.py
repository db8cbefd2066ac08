"""ADMPO-OFF vs MOPO vs BC: D4RL-normalised scores on the local MuJoCo datasets (arXiv 2405.17031, Table 1).

Every (algorithm, dataset, seed) is one `offrl fit` of the algorithm's config (configs/admpo_off, configs/mopo,
configs/bc with the dataset swapped in) in its own process and folder; `--jobs` run at once. With
`--share-model-fit`, a model-based algorithm fits its dynamics model once per dataset, in its first seed's run; the
other seeds start after it and take that model (`model.dynamics_checkpoint`), so they share its errors. The score is the
last evaluation's eval/normalized_score (10 episodes in full mode). Missing datasets are generated first, once.

Full mode is the configs as they are (5M updates; hours per job on a GPU). `--reduced` is a CPU smoke budget:
small generated datasets, few updates, small roll-out batches: its numbers say the pipeline runs, not who wins.
Between the two, `--max-steps`, `--eval-every`, `--eval-episodes`, `--rollout-batch-size`, `--rollout-every`,
`--dynamics-max-epochs` and `--dynamics-updates-per-epoch` set a budget of their own (each stated in the report). The report also gives each
algorithm's learning curve (mean over seeds at every evaluation).
Prints JSON as its last line; writes benchmarks/results/admpo.md.
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

from offrl.data import minari_io, registry

ROOT = Path(__file__).resolve().parents[1]
ALGORITHMS = ("admpo_off", "mopo", "bc")
DATASETS = tuple(f"{env}-{kind}" for env in ("hopper", "halfcheetah", "walker2d") for kind in ("random", "medium", "medium-replay", "medium-expert"))
def dataset_id(short: str) -> str:
    env, kind = short.split("-", 1)
    return f"offrl/mujoco/{env}/{kind}-v0"


def fit_command(algorithm: str, dataset: str, seed: int, args, dynamics_checkpoint: Path | None = None) -> list[str]:
    config = ROOT / "configs" / algorithm / f"{dataset}.yaml"
    if algorithm == "bc":
        config = ROOT / "configs" / "bc" / "hopper-medium.yaml"  # the same BC recipe on every dataset
    command = [
        sys.executable, "-m", "offrl.cli", "fit", "--config", str(config),
        "--data.init_args.dataset_id", dataset_id(dataset), "--seed_everything", str(seed),
        "--trainer.accelerator", "gpu" if args.device == "cuda" else "cpu", "--trainer.enable_progress_bar", "false",
    ]
    if args.generate_steps:
        command += ["--data.init_args.generate_steps", str(args.generate_steps)]
    settings = {"trainer.max_steps": args.max_steps, "data.init_args.steps_per_epoch": args.eval_every,
                "evaluation.num_episodes": args.eval_episodes, "evaluation.num_envs": args.eval_episodes}
    if algorithm != "bc":
        settings.update({
            "model.init_args.rollout_batch_size": args.rollout_batch_size, "model.init_args.rollout_every": args.rollout_every,
            "model.init_args.dynamics_max_epochs": args.dynamics_max_epochs,
            "model.init_args.dynamics_updates_per_epoch": args.dynamics_updates_per_epoch,
        })
    if dynamics_checkpoint is not None:
        settings["model.init_args.dynamics_checkpoint"] = dynamics_checkpoint
    for key, value in settings.items():
        if value is not None:
            command += [f"--{key}", str(value)]
    return command


def job_folder(job: tuple[str, str, int], args) -> Path:
    algorithm, dataset, seed = job
    return args.work_dir / f"{algorithm}-{dataset}-s{seed}"


def takes_shared_fit(job: tuple[str, str, int], args) -> bool:
    """Under --share-model-fit, a model-based job of any seed but the first takes the first seed's fitted model."""
    algorithm, _, seed = job
    return args.share_model_fit and algorithm != "bc" and seed != args.seeds[0]


def shared_fit(job: tuple[str, str, int], args) -> Path | None:
    """The fitted model a job takes: its first seed's (None when it fits its own, or the first seed left none)."""
    algorithm, dataset, _ = job
    if not takes_shared_fit(job, args):
        return None
    fitted = sorted(job_folder((algorithm, dataset, args.seeds[0]), args).glob("logs/*/*/version_*/dynamics/checkpoints/last.ckpt"))
    return fitted[-1] if fitted else None


def score_curve(run_root: Path) -> dict[int, float]:
    """eval/normalized_score by update count, from the run's TensorBoard events ({} if it never evaluated)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted(run_root.glob("logs/*/*/version_*"))
    if not runs:
        return {}
    events = EventAccumulator(str(runs[-1]))
    events.Reload()
    if "eval/normalized_score" not in events.Tags()["scalars"]:
        return {}
    return {e.step + 1: e.value for e in events.Scalars("eval/normalized_score")}


def run_job(job: tuple[str, str, int], args) -> dict:
    algorithm, dataset, seed = job
    folder = job_folder(job, args)
    folder.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    command = fit_command(algorithm, dataset, seed, args, shared_fit(job, args))
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    (folder / "stderr.txt").write_text(result.stderr)
    curve = score_curve(folder)
    return {"algorithm": algorithm, "dataset": dataset, "seed": seed, "returncode": result.returncode,
            "seconds": time.perf_counter() - start, "curve": curve, "score": curve[max(curve)] if curve else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS), choices=ALGORITHMS)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="fits run in parallel")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--generate-steps", type=int, default=None, help="size of generated datasets (default full)")
    parser.add_argument("--max-steps", type=int, default=None, help="updates per fit (default: the configs')")
    parser.add_argument("--eval-every", type=int, default=None, help="updates between evaluations (default: the configs')")
    parser.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation, one env each (default: the configs')")
    parser.add_argument("--rollout-batch-size", type=int, default=None, help="model roll-out starts per round (default: the configs')")
    parser.add_argument("--rollout-every", type=int, default=None, help="updates between roll-out rounds (default: the configs')")
    parser.add_argument("--dynamics-max-epochs", type=int, default=None, help="cap on model pretraining epochs (default: early stopping only)")
    parser.add_argument("--dynamics-updates-per-epoch", type=int, default=None, help="model updates per pretraining epoch (default: a pass over the data)")
    parser.add_argument("--reduced", action="store_true", help="CPU smoke budget: 20k-step datasets, 1000 updates, 5 episodes, 1000 roll-out starts every 250, 3 model epochs of 100 updates")
    parser.add_argument("--share-model-fit", action="store_true", help="one dynamics fit per (algorithm, dataset): later seeds take the first seed's")
    parser.add_argument("--work-dir", type=Path, default=Path("benchmark_runs/admpo"))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "admpo.md")
    args = parser.parse_args()
    if args.reduced:
        args.generate_steps = args.generate_steps or 20000
        args.max_steps = args.max_steps or 1000
        args.eval_every, args.eval_episodes = args.eval_every or args.max_steps // 2, args.eval_episodes or 5
        args.rollout_batch_size, args.rollout_every = args.rollout_batch_size or 1000, args.rollout_every or 250
        args.dynamics_max_epochs, args.dynamics_updates_per_epoch = args.dynamics_max_epochs or 3, args.dynamics_updates_per_epoch or 100
    args.work_dir = args.work_dir.resolve()

    for dataset in args.datasets:  # generate once, before the parallel fits read them
        if not minari_io.dataset_path(dataset_id(dataset)).exists():
            registry.generate(dataset_id(dataset), steps=args.generate_steps, seed=0)
    jobs = [(a, d, s) for d in args.datasets for a in args.algorithms for s in args.seeds]
    start = time.perf_counter()
    # Under --share-model-fit the first seeds (which fit the models) run before the others.
    waves = [[job for job in jobs if not takes_shared_fit(job, args)], [job for job in jobs if takes_shared_fit(job, args)]]
    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for wave in waves:
            results += list(pool.map(lambda job: run_job(job, args), wave))
    table = {}
    for r in results:
        table.setdefault(r["dataset"], {}).setdefault(r["algorithm"], []).append(r["score"])
    summary = {
        "benchmark": "admpo", "device": args.device, "reduced": args.reduced, "seeds": args.seeds,
        "generate_steps": args.generate_steps, "max_steps": args.max_steps, "seconds": time.perf_counter() - start,
        "share_model_fit": args.share_model_fit,
        "failed": [f"{r['algorithm']}/{r['dataset']}/s{r['seed']}" for r in results if r["returncode"] != 0],
        "scores": {d: {a: mean_std(v) for a, v in row.items()} for d, row in table.items()},
        "curves": mean_curves(results),
    }
    write_report(args, summary, results)
    print(json.dumps(summary))


def mean_std(scores: list[float | None]) -> dict:
    values = [s for s in scores if s is not None]
    return {"mean": float(np.mean(values)) if values else None, "std": float(np.std(values)) if values else None, "n": len(values)}


def mean_curves(results: list[dict]) -> dict[str, dict[str, dict[int, float]]]:
    """Per dataset and algorithm: the mean score over seeds at each evaluation every seed reached."""
    curves: dict[str, dict[str, list[dict[int, float]]]] = {}
    for r in results:
        if r["curve"]:
            curves.setdefault(r["dataset"], {}).setdefault(r["algorithm"], []).append(r["curve"])
    return {
        dataset: {
            algorithm: {step: float(np.mean([c[step] for c in runs])) for step in sorted(set.intersection(*(set(c) for c in runs)))}
            for algorithm, runs in row.items()
        }
        for dataset, row in curves.items()
    }


def budget_line(args) -> str:
    overrides = [f"{name} {value}" for name, value in (
        ("updates", args.max_steps), ("evaluation every", args.eval_every), ("episodes per evaluation", args.eval_episodes),
        ("roll-out starts", args.rollout_batch_size), ("roll-outs every", args.rollout_every),
        ("model epochs at most", args.dynamics_max_epochs), ("model updates per epoch", args.dynamics_updates_per_epoch),
    ) if value is not None]
    if not overrides:
        return "full budget (the configs)"
    kind = "REDUCED CPU smoke budget" if args.reduced else "reduced budget"
    return f"{kind} ({', '.join(overrides)}; the rest as the configs): not comparable to the paper"


def dataset_sizes(args) -> str:
    """The local datasets as they are in the store (a smaller earlier `--steps` generation keeps its size)."""
    import minari

    sizes = []
    for dataset in args.datasets:
        try:
            steps = f"{minari.load_dataset(dataset_id(dataset)).total_steps:,} transitions"
        except Exception:  # not generated (a failed run): say so rather than guess
            steps = "missing"
        sizes.append(f"`{dataset_id(dataset)}` {steps}")
    return ", ".join(sizes)


def write_report(args, summary, results) -> None:
    lines = [
        "# ADMPO-OFF vs MOPO vs BC (D4RL-normalised score of the last evaluation, mean ± std over seeds)",
        "",
        f"- Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; device: {args.device}; seeds {args.seeds}; "
        f"{budget_line(args)}.",
        f"- Datasets: {dataset_sizes(args)}; updates per fit: "
        f"{args.max_steps or 'the configs (5M ADMPO/MOPO, 100k BC)'}; wall time {summary['seconds']:.0f}s with {args.jobs} jobs.",
        f"- Command: `python {' '.join(sys.argv)}`",
        "",
        "| dataset | " + " | ".join(args.algorithms) + " |",
        "| --- | " + " | ".join("---" for _ in args.algorithms) + " |",
    ]
    for dataset, row in summary["scores"].items():
        cells = []
        for algorithm in args.algorithms:
            s = row.get(algorithm, {"mean": None})
            cells.append("failed" if s["mean"] is None else f"{s['mean']:.1f} ± {s['std']:.1f}")
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    for dataset, row in summary["curves"].items():
        steps = sorted(set().union(*(set(c) for c in row.values())))
        lines += ["", f"Learning curve on {dataset} (mean over seeds by updates):", "",
                  "| updates | " + " | ".join(row) + " |", "| --- | " + " | ".join("---" for _ in row) + " |"]
        lines += [f"| {step} | " + " | ".join(f"{c[step]:.1f}" if step in c else "" for c in row.values()) + " |" for step in steps]
    lines += ["", "Paper (D4RL v2 data, not these local datasets): ADMPO-OFF average 81.0, MOPO 70.3."]
    if summary["failed"]:
        lines += ["", f"Failed fits (see {args.work_dir}/<job>/stderr.txt): {', '.join(summary['failed'])}"]
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
