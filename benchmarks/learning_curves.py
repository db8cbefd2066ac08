"""Learning curves of shipped configs at a reduced budget: `offrl fit` of each config and seed, one process each,
then the D4RL-normalised score of every evaluation, the mean of the last three, and the wall time.

    python benchmarks/learning_curves.py --configs iql/hopper-medium td3bc/hopper-medium bc/hopper-medium \
        --seeds 0 1 --max-steps 50000 --jobs 2 --out benchmarks/results/hopper_medium_50k.md

Each fit is the config as shipped with `--trainer.max_steps` shortened (schedules keep their own horizons, e.g.
IQL's actor cosine over 1M updates) and `--seed_everything S --data.init_args.seed S`; the dataset is whatever the
config names (generated on first use; generate it first with `offrl data generate ID --steps N --seed 0` for a
smaller one). `--collect-only` re-reads the run folders of an earlier invocation. Prints JSON as its last line.
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


def run_fit(config: str, seed: int, args) -> float:
    folder = args.work_dir / f"{config.replace('/', '-')}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, "-m", "offrl.cli", "fit", "--config", str(ROOT / "configs" / f"{config}.yaml"),
        "--trainer.max_steps", str(args.max_steps), "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
        "--trainer.enable_progress_bar", "false",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(folder / "fit.log", "w") as log:
        subprocess.run(command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - start
    (folder / "wall_seconds").write_text(f"{seconds:.0f}")
    return seconds


def curve(folder: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = sorted(folder.glob("logs/*/*/version_*"))[-1:]
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return {e.step + 1: round(e.value, 1) for e in events.Scalars("eval/normalized_score")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", required=True, help="config names under configs/, e.g. iql/hopper-medium")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max-steps", type=int, default=50000)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--work-dir", type=Path, default=Path("benchmark_runs/learning_curves"))
    parser.add_argument("--collect-only", action="store_true", help="only read the run folders of --work-dir")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    jobs = [(config, seed) for config in args.configs for seed in args.seeds]
    if not args.collect_only:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(lambda job: run_fit(*job, args), jobs))

    rows = []
    for config, seed in jobs:
        folder = args.work_dir / f"{config.replace('/', '-')}-s{seed}"
        scores = curve(folder)
        wall = (folder / "wall_seconds").read_text().strip() if (folder / "wall_seconds").exists() else "?"
        rows.append({"config": config, "seed": seed, "curve": scores, "last3_mean": round(float(np.mean(list(scores.values())[-3:])), 1),
                     "wall_seconds": wall})
    steps = sorted({step for row in rows for step in row["curve"]})
    lines = [
        f"# Learning curves at {args.max_steps} updates", "",
        f"`python benchmarks/learning_curves.py --configs {' '.join(args.configs)} --seeds {' '.join(map(str, args.seeds))} "
        f"--max-steps {args.max_steps} --jobs {args.jobs}` ({datetime.date.today()}, CPU, one torch thread per fit, "
        f"{args.jobs} fits at once on a 2-core machine). D4RL-normalised score of each evaluation (10 episodes).", "",
        "| config | seed | " + " | ".join(f"{s // 1000}k" for s in steps) + " | mean of last 3 | wall s |",
        "| --- | --- | " + " | ".join("---" for _ in steps) + " | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['config']} | {row['seed']} | " + " | ".join(str(row["curve"].get(s, "")) for s in steps)
                     + f" | {row['last3_mean']} | {row['wall_seconds']} |")
    lines += ["", "| config | mean of last 3 over seeds |", "| --- | --- |"]
    for config in args.configs:
        values = [row["last3_mean"] for row in rows if row["config"] == config]
        lines.append(f"| {config} | {np.mean(values):.1f} ± {np.std(values):.1f} (n={len(values)}) |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(json.dumps({"benchmark": "learning_curves", "max_steps": args.max_steps, "rows": rows}))


if __name__ == "__main__":
    main()
