"""ADMPO-ON vs SAC on Hopper from a study's runs: learning curves (evaluation normalised score vs env steps) and how
much sooner ADMPO-ON reaches a score (arXiv 2405.17031 claims 1.33x faster learning than the best online baseline).

    offrl sweep studies/admpo-online-hopper.yaml --address auto     # or studies/admpo-online-hopper-cpu.yaml
    python benchmarks/admpo_online.py logs/admpo-online-hopper

The env steps of an evaluation are warm-up + updates / updates_per_env_step, both read from the run's config.yaml.
"Speed-up" = env steps SAC's mean curve needs to first reach `--threshold-fraction` of SAC's final mean score,
divided by the env steps ADMPO-ON's mean curve needs for the same score (None if ADMPO-ON never reaches it).
Writes Markdown and JSON (benchmarks/results/admpo_online.md by default); the last stdout line is the JSON summary.
`offrl report` on the same folder gives the final scores' IQM and confidence intervals.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from offrl.errors import OffrlError
from offrl.reports import Run, read_run, run_dirs

ALGORITHMS = ("admpo_on", "sac")
SCORE = "eval/normalized_score"
INTERACTION = "offrl.callbacks.online.OnlineInteraction"


def learning_curve(run: Run) -> list[tuple[float, float]]:
    """(env steps, normalised score) of every evaluation of an online run."""
    interaction = next((c.get("init_args") or {} for c in run.settings.get("trainer.callbacks") or []
                        if isinstance(c, dict) and c.get("class_path") == INTERACTION), None)
    if interaction is None:
        raise OffrlError(f"{run.path} is not an online run (no {INTERACTION} in its trainer.callbacks)")
    warmup, ratio = interaction.get("warmup_steps", 5000), interaction.get("updates_per_env_step", 1.0)
    return [(warmup + updates / ratio, score) for updates, score in run.scalars.get(SCORE, [])]


def first_reach(steps: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    reached = np.nonzero(scores >= target)[0]
    return float(steps[reached[0]]) if len(reached) else None


def summarise(runs: list[Run], threshold_fraction: float) -> dict:
    curves = {}
    for algorithm in ALGORITHMS:
        per_seed = [learning_curve(run) for run in runs if run.algorithm == algorithm]
        per_seed = [curve for curve in per_seed if curve]
        if not per_seed:
            raise OffrlError(f"no {algorithm} run with evaluations in the study; run both {' and '.join(ALGORITHMS)}")
        length = min(len(curve) for curve in per_seed)
        steps = np.array([point[0] for point in per_seed[0][:length]])
        scores = np.array([[point[1] for point in curve[:length]] for curve in per_seed])
        curves[algorithm] = {"env_steps": steps.tolist(), "mean": scores.mean(0).tolist(), "std": scores.std(0).tolist(), "seeds": len(per_seed)}
    target = threshold_fraction * curves["sac"]["mean"][-1]
    reach = {name: first_reach(np.array(c["env_steps"]), np.array(c["mean"]), target) for name, c in curves.items()}
    speedup = reach["sac"] / reach["admpo_on"] if reach["sac"] and reach["admpo_on"] else None
    return {
        "target_score": target, "threshold_fraction": threshold_fraction, "env_steps_to_target": reach, "speedup": speedup,
        "final_mean_score": {name: c["mean"][-1] for name, c in curves.items()}, "curves": curves,
    }


def write_markdown(summary: dict, study: list[Path], path: Path) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    curves = summary["curves"]
    seeds = ", ".join(f"{name} {c['seeds']} seeds" for name, c in curves.items())
    lines = [
        "# ADMPO-ON vs SAC on Hopper-v5 (learning curves)",
        "",
        f"Runs: {', '.join(map(str, study))} ({seeds}); date {today}. Command: `python {' '.join(sys.argv)}`.",
        "",
        "Mean (std) evaluation normalised score by env steps:",
        "",
        "| env steps | " + " | ".join(ALGORITHMS) + " |",
        "| --- | " + " | ".join("---" for _ in ALGORITHMS) + " |",
    ]
    steps = sorted({step for c in curves.values() for step in c["env_steps"]})
    for step in steps:
        cells = []
        for name in ALGORITHMS:
            at = dict(zip(curves[name]["env_steps"], zip(curves[name]["mean"], curves[name]["std"])))
            cells.append(f"{at[step][0]:.1f} ({at[step][1]:.1f})" if step in at else "")
        lines.append(f"| {step:.0f} | " + " | ".join(cells) + " |")
    reach = summary["env_steps_to_target"]
    lines += [
        "",
        f"Target score {summary['target_score']:.1f} ({summary['threshold_fraction']} of SAC's final mean): SAC reaches it at "
        f"{reach['sac']} env steps, ADMPO-ON at {reach['admpo_on']}; speed-up {summary['speedup']} (paper: 1.33x).",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path, nargs="+", help="the study's folder (logs/<study name>) or run folders")
    parser.add_argument("--threshold-fraction", type=float, default=0.9)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "admpo_online.md")
    args = parser.parse_args()
    notes: list[str] = []
    runs = [read_run(run_dir, notes) for run_dir in run_dirs(args.study)]
    summary = summarise(runs, args.threshold_fraction)
    write_markdown(summary, args.study, args.out)
    args.out.with_suffix(".json").write_text(json.dumps(summary))
    for note in notes:
        print(f"offrl: note: {note}", file=sys.stderr)
    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        main()
    except OffrlError as err:
        sys.exit(f"offrl: error: {err}")
