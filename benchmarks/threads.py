"""README's first command (RSP on PointMaze UMaze, configs/rsp/pointmaze-umaze-cpu.yaml) timed with each thread
setting, alone, beside busy processes, and as N runs at once on N CPUs: what `performance.threads auto` buys on a
shared machine. Each line of stdout is one JSON scenario; the last is all of them.

    python benchmarks/threads.py [--updates 2000] [--settings auto 1 2] [--busy-per-cpu 2] [--timeout 600]

`--updates` shortens the recipe (two stages of updates/2, evaluation off, so the times are the training's); the
busy processes are Python loops (`while True: pass`), `--busy-per-cpu` of them per usable CPU. Setting 2 on a
2-CPU machine is torch's default, what `offrl fit` ran with before it chose its threads. Each run's wall time
includes its start (imports, data load: 8-15 s here), the same for every setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from offrl.cpu_threads import THREAD_VARIABLES, usable_cpus

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "rsp" / "pointmaze-umaze-cpu.yaml"


def fit_command(updates: int, setting: str) -> list[str]:
    stage = updates // 2
    return [
        sys.executable, "-m", "offrl.cli", "fit", "--config", str(CONFIG),
        "--trainer.max_steps", str(updates), "--model.init_args.steps_per_stage", str(stage),
        "--data.init_args.steps_per_epoch", str(stage), "--checkpoint.every_n_train_steps", str(stage),
        "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false", "--performance.threads", setting,
    ]


def run_fits(count: int, updates: int, setting: str, busy: int, timeout: float, workdir: Path) -> dict:
    """`count` fits started together beside `busy` spinning processes: each one's wall seconds (None past the
    timeout), the thread line it printed, and the load average at the end."""
    env = {key: value for key, value in os.environ.items() if key not in THREAD_VARIABLES} | {"PYTHONWARNINGS": "ignore"}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        time.sleep(2.0 if busy else 0.0)  # the load is there before the runs look at the machine
        started = time.monotonic()
        fits = []
        for index in range(count):
            folder = workdir / f"{setting}-{count}-{busy}-{index}"
            folder.mkdir(parents=True, exist_ok=True)
            fits.append(subprocess.Popen(fit_command(updates, setting), cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        seconds, lines = [], []
        for fit in fits:
            try:
                output, _ = fit.communicate(timeout=max(1.0, timeout - (time.monotonic() - started)))
                seconds.append(round(time.monotonic() - started, 1) if fit.returncode == 0 else None)
                lines.append(" | ".join(line for line in output.splitlines() if "CPU thread" in line) or output[-300:])
            except subprocess.TimeoutExpired:
                fit.kill()
                fit.communicate()
                seconds.append(None)
                lines.append(f"killed at the {timeout:.0f} s timeout")
        load = os.getloadavg()[0]
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    return {"fits": count, "setting": setting, "busy_processes": busy, "seconds": seconds, "thread_lines": lines, "load_average_1min": round(load, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--settings", nargs="+", default=["auto", "1", "2"])
    parser.add_argument("--busy-per-cpu", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a scenario's fits are killed")
    parser.add_argument("--scenarios", nargs="+", default=["alone", "loaded", "concurrent"])
    args = parser.parse_args()
    cpus = usable_cpus()
    shapes = {"alone": (1, 0), "loaded": (1, args.busy_per_cpu * cpus), "concurrent": (cpus, 0)}
    results = []
    with tempfile.TemporaryDirectory() as workdir:
        os.environ.setdefault("MINARI_DATASETS_PATH", str(Path.home() / ".minari" / "datasets"))
        # The dataset is made once, outside the timings.
        subprocess.run(fit_command(20, "1"), cwd=workdir, check=True, capture_output=True)
        for scenario in args.scenarios:
            count, busy = shapes[scenario]
            for setting in args.settings:
                result = {"scenario": scenario, "updates": args.updates, "usable_cpus": cpus,
                          **run_fits(count, args.updates, setting, busy, args.timeout, Path(workdir))}
                print(json.dumps(result), flush=True)
                results.append(result)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
