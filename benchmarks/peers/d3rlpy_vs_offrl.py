"""offrl against d3rlpy, the library a user would pick instead: IQL, TD3+BC and BC trained on the same
offrl-generated dataset with the same settings (networks, batch, learning rates, observation standardisation,
IQL's reward scaling), the same number of updates and the same thread count, one after the other in one
invocation. Per run: updates/s over the library's own training loop (wall), the whole process's CPU seconds
(start-up, data loading, training and the final evaluation, the same for both), and the normalised score of
the trained policy over `--eval-episodes` episodes. The last stdout line is JSON with every figure and the
offrl/d3rlpy ratios; a Markdown table is printed above it.

d3rlpy 2.8.1 pins gymnasium 1.0, so it lives in a venv of its own (the command makes none; once, by hand):

    python3 -m venv .venv-d3rlpy && .venv-d3rlpy/bin/pip install torch==2.13.0 d3rlpy==2.8.1 "gymnasium[mujoco]"

then, from the offrl venv:

    python benchmarks/peers/d3rlpy_vs_offrl.py --updates 20000 [--algorithms iql td3bc bc] [--threads 1] [--offrl-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
# offrl config per algorithm, and the overrides that make it the same algorithm d3rlpy trains.
OFFRL = {
    "iql": ("configs/iql/hopper-medium.yaml", []),
    "td3bc": ("configs/td3bc/hopper-medium.yaml", []),
    "bc": ("configs/bc/hopper-medium.yaml", ["--model.init_args.policy", "deterministic"]),  # d3rlpy's BC: MSE
}


def export(dataset_id: str, generate_steps: int, path: Path) -> dict:
    """The offrl dataset as the arrays d3rlpy's MDPDataset takes, with the evaluation env and reference scores."""
    from offrl.data import registry

    transitions, info = registry.load(dataset_id, generate_steps=generate_steps)
    terminals = transitions["next", "terminated"].numpy().astype(np.float32)
    # episode_last holds each transition's index of its episode's last step.
    ends = transitions["episode_last"].numpy() == np.arange(transitions.batch_size[0])
    spec = info.eval_env_spec or info.env_spec
    np.savez(
        path,
        observations=transitions["observation"].numpy(), actions=transitions["action"].numpy(),
        rewards=transitions["next", "reward"].numpy().astype(np.float32), terminals=terminals,
        timeouts=(ends & (terminals == 0)).astype(np.float32), env_id=spec.id,
        env_kwargs=json.dumps({**spec.kwargs, "max_episode_steps": spec.max_episode_steps}, default=str),
        ref_min=info.ref_min_score, ref_max=info.ref_max_score, normalize_rewards=True,
    )
    return {"dataset": dataset_id, "transitions": int(transitions.batch_size[0]), "episodes": info.num_episodes, "env": spec.id}


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(command: list[str], cwd: Path, threads: int) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    before = child_cpu_seconds()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{result.stderr[-3000:]}")
    return result, child_cpu_seconds() - before


def run_offrl(algo: str, args, work: Path, compile: bool) -> dict:
    config, overrides = OFFRL[algo]
    overrides = [*overrides, "--performance.compile", str(compile).lower()]
    n, episodes = str(args.updates), str(args.eval_episodes)
    command = [
        sys.executable, "-m", "offrl.cli", "fit", "--config", str(ROOT / config), *overrides,
        "--data.init_args.dataset_id", args.dataset, "--trainer.max_steps", n, "--data.init_args.steps_per_epoch", n,
        "--checkpoint.every_n_train_steps", n, "--evaluation.num_episodes", episodes, "--evaluation.num_envs", episodes,
        "--seed_everything", str(args.seed), "--trainer.enable_progress_bar", "false",
    ]
    run_dir = work / f"offrl-{algo}-{'compiled' if compile else 'eager'}"
    run_dir.mkdir()
    _, cpu = run(command, run_dir, args.threads)
    (summary_path,) = run_dir.glob("logs/*/*/version_0/summary.json")
    summary = json.loads(summary_path.read_text())
    return {
        "library": "offrl compiled" if compile else "offrl", "algo": algo, "updates": summary["updates"], "updates_per_s": summary["updates_per_s"],
        "process_cpu_seconds": round(cpu, 1), "normalized_score": round(summary["last"]["eval/normalized_score"], 1),
    }


def run_d3rlpy(algo: str, args, npz: Path, work: Path) -> dict:
    worker = Path(__file__).with_name("d3rlpy_worker.py")
    command = [
        str(args.d3rlpy_python), str(worker), "--npz", str(npz), "--algo", algo, "--updates", str(args.updates),
        "--eval-episodes", str(args.eval_episodes), "--seed", str(args.seed), "--threads", str(args.threads),
    ]
    result, cpu = run(command, work, args.threads)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {**figures, "process_cpu_seconds": round(cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithms", nargs="+", choices=sorted(OFFRL), default=["iql", "td3bc", "bc"])
    parser.add_argument("--updates", type=int, default=20_000)
    parser.add_argument("--dataset", default="offrl/mujoco/hopper/medium-v0")
    parser.add_argument("--generate-steps", type=int, default=100_000, help="size of the dataset if it must be generated")
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--offrl-compile", action="store_true", help="also run offrl with performance.compile true")
    parser.add_argument("--d3rlpy-python", type=Path, default=ROOT / ".venv-d3rlpy" / "bin" / "python")
    args = parser.parse_args()
    if not args.d3rlpy_python.exists():
        raise SystemExit(f"{args.d3rlpy_python} does not exist; make d3rlpy's venv first (see --help)")
    started = time.strftime("%Y-%m-%d %H:%M")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        npz = work / "dataset.npz"
        data = export(args.dataset, args.generate_steps, npz)
        rows = []
        for algo in args.algorithms:
            runners = [lambda: run_offrl(algo, args, work, False), lambda: run_d3rlpy(algo, args, npz, work)]
            if args.offrl_compile:
                runners.insert(1, lambda: run_offrl(algo, args, work, True))
            for runner in runners:
                rows.append(runner())
                print(json.dumps(rows[-1]), flush=True)
    ratios = {}
    print("| algorithm | library | updates/s (wall) | process CPU s | normalised score |\n| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['algo']} | {row['library']} | {row['updates_per_s']} | {row['process_cpu_seconds']} | {row['normalized_score']} |")
    for algo in args.algorithms:
        theirs = next(r for r in rows if r["algo"] == algo and r["library"].startswith("d3rlpy"))
        for ours in (r for r in rows if r["algo"] == algo and r["library"].startswith("offrl")):
            ratios[f"{algo} ({ours['library']})"] = {
                "updates_per_s": round(ours["updates_per_s"] / theirs["updates_per_s"], 2),
                "process_cpu": round(theirs["process_cpu_seconds"] / ours["process_cpu_seconds"], 2),
                "score_difference": round(ours["normalized_score"] - theirs["normalized_score"], 1),
            }
    print(json.dumps({"started": started, **data, "updates": args.updates, "threads": args.threads, "seed": args.seed,
                      "load_average": round(os.getloadavg()[0], 2), "runs": rows, "offrl_over_d3rlpy": ratios}))


if __name__ == "__main__":
    main()
