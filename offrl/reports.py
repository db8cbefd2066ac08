"""Results a person can look at, read from a run's TensorBoard event files (tensorboard's own reader): the run's
learning curves as a PNG, and `offrl report`'s Markdown table and PNG per group of runs (one config across seeds).

A run folder is a logger version folder (`logs/<algorithm>/<dataset>/version_N`) holding event files and the
config.yaml the CLI saved."""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import defaultdict
from pathlib import Path

import yaml

from offrl.errors import OffrlError

SCORE_METRICS = ("eval/normalized_score", "eval/success", "eval/return")
Curve = list[tuple[int, float]]


def read_scalars(run_dir: Path, notes: list[str] | None = None) -> dict[str, Curve]:
    """Every scalar tag of the run's event files as sorted (updates made, value); a resumed run's repeated points
    once. Lightning logs at the 0-based index of the update just made: step 39 is the point after 40 updates.
    TensorBoard's reader stops at a cut-off record without a word: one line per such file goes to `notes`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, dict[int, float]] = defaultdict(dict)
    for events_file in sorted(run_dir.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(events_file), size_guidance={"scalars": 0})
        events.Reload()
        read = 0
        for tag in events.Tags()["scalars"]:
            for event in events.Scalars(tag):
                scalars[tag][event.step + 1] = event.value
                read += 1
        if notes is not None and cut_off(events_file):
            kept = f"its {read} points before the cut are reported" if read else "it is skipped (no whole point in it)"
            notes.append(f"{events_file} is cut off (its run was killed or its disk was full mid-write); {kept}")
    return {tag: sorted(points.items()) for tag, points in scalars.items()}


def cut_off(events_file: Path) -> bool:
    """Whether the file's records (8-byte length, 4-byte CRC, data, 4-byte CRC each) fail to end exactly at its end."""
    size, position = events_file.stat().st_size, 0
    with open(events_file, "rb") as file:
        while position < size:
            header = file.read(8)
            if len(header) < 8:
                return True
            position += 8 + 4 + int.from_bytes(header, "little") + 4
            file.seek(position)
    return position != size


def score_metric(scalars: dict[str, Curve]) -> str | None:
    return next((name for name in SCORE_METRICS if scalars.get(name)), None)


def loss_tags(scalars: dict[str, Curve]) -> list[str]:
    return sorted(tag for tag in scalars if tag.startswith("train/") and tag.endswith("_loss"))


def plot_run(run_dir: Path, scalars: dict[str, Curve] | None = None, tests: dict[str, tuple[int, float]] | None = None) -> Path | None:
    """`curves.png` in the run folder: the evaluation score and each loss against updates, and `offrl test`'s
    scores (metric -> (update, value)) as stars (None: nothing logged)."""
    scalars = read_scalars(run_dir) if scalars is None else scalars
    panels = [tag for tag in [score_metric(scalars)] if tag] + loss_tags(scalars)
    if not panels:
        return None
    plt = pyplot()
    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for ax, tag in zip(axes.flat, panels):
        steps, values = zip(*scalars[tag])
        ax.plot(steps, values, marker="o" if len(steps) < 40 else None, markersize=3)
        if tests and tag in tests:
            ax.plot(*tests[tag], marker="*", markersize=12, linestyle="none", label="offrl test")
            ax.legend(fontsize=7)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.suptitle(str(run_dir), fontsize=9)
    figure.tight_layout()
    return save(figure, run_dir / "curves.png")


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run folders at or under `paths` (folders holding a config.yaml and event files)."""
    found = set()
    for path in paths:
        if not path.exists():
            raise OffrlError(f"{path} does not exist; give run folders or folders above them (e.g. logs/)")
        for config in [path / "config.yaml"] if (path / "config.yaml").exists() else path.rglob("config.yaml"):
            tested = config.parent.name == "test" and (config.parent.parent / "config.yaml").exists()  # `offrl test`'s own folder
            if not tested and any(config.parent.glob("events.out.tfevents.*")):
                found.add(config.parent)
    if not found:
        raise OffrlError(f"no run folder (config.yaml and TensorBoard event files) under {', '.join(map(str, paths))}")
    return sorted(found)


def group_name(run_dir: Path) -> str:
    """Runs of one config across seeds share a group: the config without seed_everything and ckpt_path."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError("it holds no mapping of settings")
    for key in ("seed_everything", "ckpt_path"):
        config.pop(key, None)
    model = (config.get("model") or {}).get("class_path", "?").rsplit(".", 1)[-1]
    data = ((config.get("data") or {}).get("init_args") or {}).get("dataset_id", "?")
    return f"{model} {data} #{stable_hash(yaml.safe_dump(config, sort_keys=True))}"


def yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """A YAML syntax error in one line: what was wrong and where (its own text quotes the file over several)."""
    where = f", line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
    return f"{err.context + ': ' if err.context else ''}{err.problem or 'invalid YAML'}{where}"


def stable_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3g}"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}"


def report(paths: list[Path], out_dir: Path, notes: list[str] | None = None) -> str:
    """A Markdown table of the last and best evaluation score per group of runs (mean ± std over its runs, n) and
    one PNG per group in `out_dir`; returns the Markdown (also written to out_dir/report.md). A run folder whose
    config cannot be read is left out, and so is the cut-off end of an event file: one line each in `notes`."""
    notes = [] if notes is None else notes
    groups: dict[str, list[tuple[Path, dict[str, Curve]]]] = defaultdict(list)
    found = run_dirs(paths)
    for run_dir in found:
        try:
            name = group_name(run_dir)
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, AttributeError) as err:
            why = yaml_problem(err) if isinstance(err, yaml.MarkedYAMLError) else " ".join(str(err).split()) or type(err).__name__
            notes.append(f"skipped {run_dir}: its config.yaml cannot be read ({why}); fix or remove that file to report it")
            continue
        groups[name].append((run_dir, read_scalars(run_dir, notes)))
    if not groups:
        raise OffrlError(f"no run folder under {', '.join(map(str, paths))} has a readable config.yaml ({len(found)} skipped)")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = ["| group | metric | last | best | update of last | n | runs | plot |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, runs in sorted(groups.items()):
        metric = next((m for m in SCORE_METRICS if all(scalars.get(m) for _, scalars in runs)), None)
        if metric is None:
            lines.append(f"| {name} | (no evaluation) | | | | {len(runs)} | {', '.join(str(r) for r, _ in runs)} | |")
            continue
        last = [scalars[metric][-1][1] for _, scalars in runs]
        best = [max(value for _, value in scalars[metric]) for _, scalars in runs]
        last_update = sorted({scalars[metric][-1][0] for _, scalars in runs})
        png = plot_group(name, metric, runs, out_dir / f"{name.replace(' ', '_').replace('/', '-').replace('#', '')}.png")
        lines.append(
            f"| {name} | {metric} | {mean_std(last)} | {mean_std(best)} | {', '.join(map(str, last_update))} | {len(runs)} | "
            f"{', '.join(str(r) for r, _ in runs)} | {png.name} |"
        )
    markdown = "\n".join(lines) + "\n"
    (out_dir / "report.md").write_text(markdown)
    return markdown


def plot_group(name: str, metric: str, runs: list[tuple[Path, dict[str, Curve]]], path: Path) -> Path:
    """Each run's curve, and their mean over the updates all runs evaluated."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6, 3.6))
    for run_dir, scalars in runs:
        steps, values = zip(*scalars[metric])
        ax.plot(steps, values, alpha=0.45, linewidth=1, label=run_dir.name)
    shared = sorted(set.intersection(*(set(step for step, _ in scalars[metric]) for _, scalars in runs)))
    if len(runs) > 1 and shared:
        by_step = [dict(scalars[metric]) for _, scalars in runs]
        ax.plot(shared, [statistics.mean(points[step] for points in by_step) for step in shared], color="black", linewidth=2, label="mean")
    ax.set_title(name, fontsize=10)
    ax.set_xlabel("update")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return save(figure, path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def save(figure, path: Path) -> Path:
    """Written to a temporary name, then renamed: a kill mid-write leaves no half PNG."""
    temporary = path.with_name(f".{path.name}.tmp")
    figure.savefig(temporary, dpi=110, format="png")
    pyplot().close(figure)
    temporary.replace(path)
    return path
