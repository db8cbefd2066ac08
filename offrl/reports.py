"""Results a person can look at, read from a run's TensorBoard event files (tensorboard's own reader): the run's
learning curves as a PNG, and `offrl report`'s tables (Markdown and CSV) and plots of many runs: per algorithm x
dataset across seeds, and aggregated across datasets with rliable's statistics.

A run folder is a logger version folder (`logs/<algorithm>/<dataset>/version_N`) holding event files and the
config.yaml the CLI saved."""

from __future__ import annotations

import csv
import hashlib
import io
import itertools
import json
import math
import re
import statistics
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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


def plot_run(run_dir: Path, scalars: dict[str, Curve] | None = None, tests: dict[str, tuple[int, float]] | None = None,
             test_name: str = "test") -> Path | None:
    """`curves.png` in the run folder: the evaluation score and each loss against updates, and the scores of an
    `offrl test` (metric -> (update, value), logged in the run's `test_name` folder) as stars (None: nothing logged)."""
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
            ax.plot(*tests[tag], marker="*", markersize=12, linestyle="none", label=f"offrl test ({test_name})")
            ax.legend(fontsize=7)
        ax.set_title(tag, fontsize=10)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    figure.suptitle(str(run_dir), fontsize=9)
    figure.tight_layout()
    return save(figure, run_dir / "curves.png")


def test_folder_name(subcommand: str, layers: list[str]) -> str:
    """The folder in a run folder that `offrl test` (or validate) of the run's checkpoint logs into: `test`, or
    `test-opex` when a config opex.yaml is layered on the run's own (one folder per kind of test)."""
    return "-".join([subcommand, *(Path(layer).stem for layer in layers)])


def is_test_folder(folder: Path) -> bool:
    return re.fullmatch(r"(test|validate)(-.+)?", folder.name) is not None and (folder.parent / "config.yaml").exists()


def run_dirs(paths: list[Path]) -> list[Path]:
    """The run folders at or under `paths` (folders holding a config.yaml and event files)."""
    found = set()
    for path in paths:
        if not path.exists():
            raise OffrlError(f"{path} does not exist; give run folders or folders above them (e.g. logs/)")
        for config in [path / "config.yaml"] if (path / "config.yaml").exists() else path.rglob("config.yaml"):
            if not is_test_folder(config.parent) and any(config.parent.glob("events.out.tfevents.*")):
                found.add(config.parent)
    if not found:
        raise OffrlError(f"no run folder (config.yaml and TensorBoard event files) under {', '.join(map(str, paths))}")
    return sorted(found)


def flatten(config: dict, prefix: str = "") -> dict:
    """{"model": {"init_args": {"lr": 1}}} -> {"model.init_args.lr": 1}."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


# Settings that say which seed (global or the sampler's) or which start a run is, or where it lives (a study's
# trial folder), not what it is.
NOT_THE_CONFIG = ("seed_everything", "data.init_args.seed", "ckpt_path", "trainer.default_root_dir")


@dataclass
class Run:
    """A run folder read for a report: what it is (algorithm, dataset, settings) and its curves."""

    path: Path
    algorithm: str
    dataset: str
    seed: Any
    settings: dict[str, Any]
    scalars: dict[str, Curve]
    tests: dict[str, dict[str, float]]  # an `offrl test`'s folder name -> its scores


    @property
    def config_id(self) -> str:
        return stable_hash(yaml.safe_dump(self.settings, sort_keys=True))


def read_run(run_dir: Path, notes: list[str]) -> Run:
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    if not isinstance(config, dict):
        raise ValueError("it holds no mapping of settings")
    flat = flatten(config)
    seed = flat.get("seed_everything")
    settings = {key: value for key, value in flat.items() if key not in NOT_THE_CONFIG}
    # An online run has no dataset: its env is its data.
    dataset = str(settings.get("data.init_args.dataset_id") or settings.get("data.init_args.env_id") or "?")
    # The CLI names run folders <algorithm>/<dataset>/version_N with the algorithm's short name (iql_awr, td3bc, ...).
    if run_dir.name.startswith("version_") and len(run_dir.parts) >= 3:
        algorithm = run_dir.parent.parent.name
    else:
        algorithm = str(settings.get("model.class_path", "?")).rsplit(".", 1)[-1]
    return Run(run_dir, algorithm, dataset, seed, settings, read_scalars(run_dir, notes), read_tests(run_dir))


def read_tests(run_dir: Path) -> dict[str, dict[str, float]]:
    """The scores of each finished `offrl test` of the run (its test folders' summary.json)."""
    tests = {}
    for summary in sorted(run_dir.glob("*/summary.json")):
        if is_test_folder(summary.parent) and summary.parent.name.startswith("test"):
            scores = json.loads(summary.read_text()).get("test") or {}
            tests[summary.parent.name] = {metric: float(value) for metric, value in scores.items() if metric in SCORE_METRICS}
    return tests


def yaml_problem(err: yaml.MarkedYAMLError) -> str:
    """A YAML syntax error in one line: what was wrong and where (its own text quotes the file over several)."""
    where = f", line {err.problem_mark.line + 1}" if err.problem_mark is not None else ""
    return f"{err.context + ': ' if err.context else ''}{err.problem or 'invalid YAML'}{where}"


def stable_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:6]


def short_dataset(dataset_id: str) -> str:
    """'offrl/mujoco/hopper/medium-v0' -> 'hopper/medium-v0': the column name, without the namespace."""
    parts = dataset_id.split("/")
    return "/".join(parts[2:] if len(parts) > 3 and parts[1] in ("mujoco", "adroit") else parts[1:] if len(parts) > 1 else parts)


@dataclass
class Group:
    """One config's runs on one dataset (its seeds), under the name its row has in the tables."""

    label: str
    dataset: str
    runs: list[Run]
    metric: str | None = None

    def last(self) -> np.ndarray:
        return np.array([run.scalars[self.metric][-1][1] for run in self.runs])

    def best(self) -> np.ndarray:
        return np.array([max(value for _, value in run.scalars[self.metric]) for run in self.runs])

    def last_updates(self) -> list[int]:
        return sorted({run.scalars[self.metric][-1][0] for run in self.runs})


def label_groups(runs: list[Run]) -> list[Group]:
    """Runs of one config (all settings but the seed) on one dataset form a group, named by the algorithm's short name;
    where an algorithm has several configs on a dataset, its names add the settings that tell them apart."""
    by_config: dict[tuple[str, str, str], list[Run]] = defaultdict(list)
    for run in runs:
        by_config[run.algorithm, run.dataset, run.config_id].append(run)
    telling: dict[str, set[str]] = defaultdict(set)  # algorithm -> the settings that differ between its configs
    by_place: dict[tuple[str, str], list[list[Run]]] = defaultdict(list)
    for (algorithm, dataset, _), members in by_config.items():
        by_place[algorithm, dataset].append(members)
    for (algorithm, _), configs in by_place.items():
        keys = set().union(*(config[0].settings for config in configs))
        telling[algorithm] |= {key for key in keys if len({repr(config[0].settings.get(key)) for config in configs}) > 1}
    groups = []
    for (algorithm, dataset, config_id), members in sorted(by_config.items()):
        keys = sorted(telling[algorithm])
        shorts = [key.rsplit(".", 1)[-1] for key in keys]
        names = [short if shorts.count(short) == 1 else key for key, short in zip(keys, shorts)]
        parts = [f"{name}={members[0].settings.get(key)}" for key, name in zip(keys, names)]
        label = f"{algorithm} ({', '.join(parts)})" if parts else algorithm
        if len(label) > 60:
            label = f"{algorithm} #{config_id}"
        groups.append(Group(label, dataset, sorted(members, key=lambda run: str(run.path))))
    return groups


def interval_estimates(scores: dict[str, Any], func, reps: int, seed: int) -> tuple[dict, dict]:
    """rliable's point estimates and 95 % stratified-bootstrap percentile intervals (seeded)."""
    from rliable import library

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch's note that it prefers a Generator to a RandomState
        return library.get_interval_estimates(scores, func, reps=reps, random_state=np.random.RandomState(seed))


def iqm_and_mean(scores: np.ndarray) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])


# The score a normalised metric calls optimal: optimality gap = mean shortfall below it (Agarwal et al. 2021).
OPTIMAL = {"eval/normalized_score": 100.0, "eval/success": 1.0}


def aggregates(scores: np.ndarray, metric: str) -> np.ndarray:
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores), metrics.aggregate_median(scores),
                     metrics.aggregate_optimality_gap(scores, OPTIMAL[metric])])


def number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def estimate(point: float, interval: np.ndarray, n: int) -> str:
    return f"{number(point)} (n=1)" if n == 1 else f"{number(point)} [{number(interval[0])}, {number(interval[1])}]"


def report(paths: list[Path], out_dir: Path, notes: list[str] | None = None, pairs: list[tuple[str, str]] | None = None,
           reps: int = 2000, seed: int = 0, metric: str | None = None) -> str:
    """The study's tables (report.md, with runs.csv and scores.csv beside it) and plots in `out_dir`; returns the
    Markdown. Per algorithm x dataset: IQM and mean of the final score over seeds with 95 % stratified bootstrap
    intervals; across datasets: IQM, mean, median and optimality gap; each run's best evaluation apart, labelled
    as the optimistic figure it is. A run folder whose config cannot be read is left out, and so is the cut-off end
    of an event file: one line each in `notes`."""
    notes = [] if notes is None else notes
    runs = read_runs(paths, notes)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = label_groups(runs)
    if metric is not None and metric not in SCORE_METRICS:
        raise OffrlError(f"--metric {metric} is not a score offrl reports; give one of {', '.join(SCORE_METRICS)}")
    scored = scored_groups(groups, notes, metric)
    labels = sorted({group.label for group in scored})
    unknown = sorted({name for pair in pairs or [] for name in pair} - set(labels))
    if unknown:
        raise OffrlError(f"--compare names {', '.join(map(repr, unknown))}, which no scored group is called; the names are {', '.join(map(repr, labels))}")
    estimates = final_score_estimates(scored, reps, seed)
    lines = [f"# offrl report: {', '.join(map(str, paths))}", ""]
    lines += [f"{len(runs)} runs in {len(groups)} groups (one config on one dataset, over seeds). Final score: each run's last "
              f"evaluation. Intervals: 95 % stratified bootstrap, percentile ({reps} resamples, seed {seed}; rliable, "
              "Agarwal et al. 2021). The IQM of fewer than 4 runs is their mean.", ""]
    lines += final_score_tables(scored, estimates)
    test_rows = tested_scores(scored)
    lines += test_tables(scored, test_rows, reps, seed)
    plots = []
    for score in sorted({group.metric for group in scored}, key=SCORE_METRICS.index):
        lines += aggregate_section(scored, score, out_dir, reps, seed, pairs, notes, plots)
    lines += groups_section(groups, out_dir)
    lines += ["", f"Plots: {', '.join(plots)}; one PNG of curves per group." if plots else "One PNG of curves per group.", ""]
    write_csv(out_dir / "scores.csv", [
        {"algorithm": group.label, "dataset": group.dataset, "metric": group.metric, "n": len(group.runs),
         "iqm": point[0], "iqm_low": interval[0, 0], "iqm_high": interval[1, 0], "mean": point[1],
         "mean_low": interval[0, 1], "mean_high": interval[1, 1], "best_mean": group.best().mean(), "config": group.runs[0].config_id}
        for group in groups if group.metric for point, interval in [estimates[group.label, group.dataset]]])
    write_csv(out_dir / "runs.csv", [
        {"algorithm": group.label, "dataset": group.dataset, "seed": run.seed, "metric": group.metric,
         "last": run.scalars[group.metric][-1][1], "last_update": run.scalars[group.metric][-1][0],
         "best": max(value for _, value in run.scalars[group.metric]),
         "best_update": max(run.scalars[group.metric], key=lambda point: point[1])[0], "run": str(run.path)}
        for group in scored for run in group.runs])
    if test_rows:
        write_csv(out_dir / "tests.csv", test_rows)
    markdown = "\n".join(lines)
    write_text(out_dir / "report.md", markdown)
    return markdown


def read_runs(paths: list[Path], notes: list[str]) -> list[Run]:
    """Every run folder under `paths`, read; one whose config.yaml cannot be read is left out with a note."""
    found = run_dirs(paths)
    runs = []
    for run_dir in found:
        try:
            runs.append(read_run(run_dir, notes))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError, AttributeError) as err:
            why = yaml_problem(err) if isinstance(err, yaml.MarkedYAMLError) else " ".join(str(err).split()) or type(err).__name__
            notes.append(f"skipped {run_dir}: its config.yaml cannot be read ({why}); fix or remove that file to report it")
    if not runs:
        raise OffrlError(f"no run folder under {', '.join(map(str, paths))} has a readable config.yaml ({len(found)} skipped)")
    return runs


def scored_groups(groups: list[Group], notes: list[str], metric: str | None = None) -> list[Group]:
    """The groups every run of which evaluated, each given the score metric its runs share, the first of
    SCORE_METRICS or the one asked for (a note for the rest, and for a group whose runs ended at different updates)."""
    scored = []
    for group in groups:
        group.metric = next((m for m in ([metric] if metric else SCORE_METRICS) if all(run.scalars.get(m) for run in group.runs)), None)
        if group.metric is None:
            has = f"no {metric}" if metric else "no evaluation"
            notes.append(f"{group.label} on {group.dataset} has {has} in every run ({len(group.runs)} runs); left out of the tables")
            continue
        scored.append(group)
        if len(group.last_updates()) > 1:
            notes.append(f"{group.label} on {group.dataset}: its runs' last evaluations are at different updates "
                         f"({', '.join(map(str, group.last_updates()))}); an unfinished run's last score is not its final one")
    return scored


def final_score_estimates(scored: list[Group], reps: int, seed: int) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(label, dataset) -> (IQM and mean, their intervals) of the final scores, bootstrapped per dataset."""
    estimates = {}
    for dataset in sorted({group.dataset for group in scored}):
        here = {group.label: group.last()[:, None] for group in scored if group.dataset == dataset}
        points, intervals = interval_estimates(here, iqm_and_mean, reps, seed)
        estimates |= {(label, dataset): (points[label], intervals[label]) for label in here}
    return estimates


def final_score_tables(scored: list[Group], estimates: dict) -> list[str]:
    """The algorithm x dataset tables: IQM, mean (each with its interval) and the best evaluation, apart."""
    datasets = sorted({group.dataset for group in scored})
    labels = sorted({group.label for group in scored})
    cells: dict[tuple[str, str], Group] = {(group.label, group.dataset): group for group in scored}
    lines = [f"Score: {', '.join(f'{short_dataset(d)}: {metric_of(cells, d)}' for d in datasets)}.", ""]
    for title, column in (("IQM", 0), ("mean", 1)):
        lines += [f"## Final score: {title} [95 % CI]", "", table_head(["algorithm", *map(short_dataset, datasets)])]
        for label in labels:
            row = [label]
            for dataset in datasets:
                group = cells.get((label, dataset))
                if group is None:
                    row.append("")
                    continue
                point, interval = estimates[label, dataset]
                row.append(f"{estimate(point[column], interval[:, column], len(group.runs))} (n={len(group.runs)})"
                           if len(group.runs) > 1 else estimate(point[column], interval[:, column], 1))
            lines.append(table_row(row))
        lines.append("")
    lines += ["## Best evaluation, mean over runs", "",
              "Each run's highest evaluation, averaged: optimistic, since it picks the update after seeing the scores "
              "(the final score above does not).", "", table_head(["algorithm", *map(short_dataset, datasets)])]
    for label in labels:
        lines.append(table_row([label, *(number(cells[label, d].best().mean()) if (label, d) in cells else "" for d in datasets)]))
    lines.append("")
    return lines


def tested_scores(scored: list[Group]) -> list[dict]:
    """One row per run and `offrl test` of it: the test's score in the metric of the run's group."""
    return [{"algorithm": group.label, "dataset": group.dataset, "seed": run.seed, "test": test, "metric": group.metric,
             "score": scores[group.metric], "run": str(run.path)}
            for group in scored for run in group.runs for test, scores in sorted(run.tests.items()) if group.metric in scores]


def test_tables(scored: list[Group], rows: list[dict], reps: int, seed: int) -> list[str]:
    """Per dataset, the `offrl test`s of the final checkpoints (algorithm rows, one column per kind of test: `test`,
    `test-opex`, ...): IQM [95 % CI] over a group's runs, for groups every run of which has that test."""
    lines = []
    for dataset in sorted({row["dataset"] for row in rows}):
        here = [row for row in rows if row["dataset"] == dataset]
        tests = sorted({row["test"] for row in here})
        labels = sorted({row["algorithm"] for row in here})
        runs = {group.label: len(group.runs) for group in scored if group.dataset == dataset}
        scores = {(label, test): np.array([row["score"] for row in here if row["algorithm"] == label and row["test"] == test])
                  for label in labels for test in tests}
        complete = {key: values for key, values in scores.items() if len(values) == runs[key[0]]}
        estimates = {}
        for test in tests:
            column = {label: complete[label, test][:, None] for label in labels if (label, test) in complete}
            if column:
                points, intervals = interval_estimates(column, iqm_and_mean, reps, seed)
                estimates |= {(label, test): (points[label][0], intervals[label][:, 0]) for label in column}
        lines += [f"## offrl test of the final checkpoint on {short_dataset(dataset)}: IQM [95 % CI]", "",
                  f"Each column is one kind of test of every run's last checkpoint ({', '.join(tests)}: the folder it "
                  "logged in, named after the config layered on the run's own); a cell is empty unless every run of "
                  "its row has that test.", "", table_head(["algorithm", *tests])]
        for label in labels:
            lines.append(table_row([label, *(estimate(*estimates[label, test], runs[label]) + (f" (n={runs[label]})" if runs[label] > 1 else "")
                                              if (label, test) in estimates else "" for test in tests)]))
        lines.append("")
    return lines


def groups_section(groups: list[Group], out_dir: Path) -> list[str]:
    """One row per group (its runs, config and curves PNG, which it writes)."""
    lines = ["## Groups", "", table_head(["algorithm", "dataset", "metric", "runs", "update of last", "config", "curves"])]
    for group in groups:
        png = plot_group(group, out_dir / f"{file_name(group.label)}-{file_name(short_dataset(group.dataset))}.png") if group.metric else None
        lines.append(table_row([group.label, group.dataset, group.metric or "(no evaluation)",
                                ", ".join(str(run.path) for run in group.runs),
                                ", ".join(map(str, group.last_updates())) if group.metric else "",
                                f"#{group.runs[0].config_id}", png.name if png else ""]))
    return lines


def metric_of(cells: dict[tuple[str, str], Group], dataset: str) -> str:
    return "/".join(sorted({group.metric for (_, d), group in cells.items() if d == dataset}))


def aggregate_section(scored: list[Group], metric: str, out_dir: Path, reps: int, seed: int, pairs, notes: list[str], plots: list[str]) -> list[str]:
    """Across the datasets scored by `metric`: aggregate estimates, a performance profile and probabilities of
    improvement, for the algorithms that have every one of those datasets with one number of runs on each."""
    if metric not in OPTIMAL:
        notes.append(f"no aggregate over datasets of {metric}: raw returns of different tasks are not on one scale")
        return []
    here = [group for group in scored if group.metric == metric]
    datasets = sorted({group.dataset for group in here})
    matrices = {}
    for label in sorted({group.label for group in here}):
        mine = {group.dataset: group for group in here if group.label == label}
        counts = {len(group.runs) for group in mine.values()}
        if set(mine) != set(datasets) or len(counts) != 1:
            why = "it lacks " + ", ".join(sorted(set(datasets) - set(mine))) if set(mine) != set(datasets) else \
                f"its datasets have different numbers of runs ({', '.join(str(len(mine[d].runs)) for d in datasets)})"
            notes.append(f"{label} is left out of the aggregate over {metric}: {why}")
            continue
        matrices[label] = np.stack([mine[d].last() for d in datasets], axis=1)  # runs x datasets
    if not matrices:
        return []
    points, intervals = interval_estimates(matrices, lambda scores: aggregates(scores, metric), reps, seed)
    suffix = "" if metric == "eval/normalized_score" else f"-{metric.split('/')[1]}"
    lines = [f"## Aggregate over {len(datasets)} dataset(s): {metric}, final score [95 % CI]", "",
             f"Optimality gap: mean shortfall below {OPTIMAL[metric]:g} (lower is better).", "",
             table_head(["algorithm", "runs per dataset", "IQM", "mean", "median", "optimality gap"])]
    for label, matrix in matrices.items():
        lines.append(table_row([label, str(matrix.shape[0]), *(estimate(points[label][i], intervals[label][:, i], matrix.shape[0]) for i in range(4))]))
    lines.append("")
    plots.append(plot_aggregates(points, intervals, metric, out_dir / f"aggregate{suffix}.png"))
    plots.append(plot_profiles(matrices, metric, reps, seed, out_dir / f"performance_profile{suffix}.png"))
    chosen = pairs if pairs is not None else list(itertools.combinations(matrices, 2)) if len(matrices) <= 5 else []
    if pairs is None and len(matrices) > 5:
        notes.append(f"{len(matrices)} algorithms: no probability-of-improvement plot unless pairs are chosen (--compare X Y)")
    for pair in [pair for pair in chosen if not set(pair) <= set(matrices)]:
        notes.append(f"no P({pair[0]} > {pair[1]}) over {metric}: the aggregate over it has only {', '.join(matrices)}")
    chosen = [pair for pair in chosen if set(pair) <= set(matrices)]
    if chosen:
        lines += probability_section(matrices, chosen, metric, reps, seed, out_dir / f"probability_of_improvement{suffix}.png", plots)
    return lines


def probability_section(matrices: dict[str, np.ndarray], pairs: list[tuple[str, str]], metric: str, reps: int, seed: int,
                        path: Path, plots: list[str]) -> list[str]:
    from rliable import metrics, plot_utils

    scores = {f"{x}\t{y}": (matrices[x], matrices[y]) for x, y in pairs}  # a tab: names may hold commas
    points, intervals = interval_estimates(scores, metrics.probability_of_improvement, reps, seed)
    lines = [f"Probability of improvement, P(X > Y) over {metric} [95 % CI]:", "", table_head(["X", "Y", "P(X > Y)"])]
    lines += [table_row([x, y, estimate(float(np.ravel(points[f"{x}\t{y}"])[0]), np.ravel(intervals[f"{x}\t{y}"]), 2)]) for x, y in pairs]
    plt = pyplot()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ax = plot_utils.plot_probability_of_improvement(points, intervals, pair_separator="\t", figsize=(5, 0.6 + 0.5 * len(pairs)),
                                                        xticks=[0.0, 0.25, 0.5, 0.75, 1.0])
    plots.append(save(ax.get_figure(), path).name)
    plt.close("all")
    return lines + [""]


def plot_aggregates(points: dict, intervals: dict, metric: str, path: Path) -> str:
    from rliable import plot_utils

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        figure, _ = plot_utils.plot_interval_estimates(
            points, intervals, metric_names=["IQM", "Mean", "Median", "Optimality Gap"], algorithms=list(points),
            xlabel=metric, subfigure_width=3.4, row_height=0.5, xlabel_y_coordinate=-0.1 - 0.8 / len(points))
    return save(figure, path).name


def plot_profiles(matrices: dict[str, np.ndarray], metric: str, reps: int, seed: int, path: Path) -> str:
    """Fraction of runs scoring above tau, with 95 % bootstrap bands (rliable's performance profile)."""
    from rliable import library, plot_utils

    every = np.concatenate([matrix.ravel() for matrix in matrices.values()])
    taus = np.linspace(min(every.min(), 0.0), max(every.max(), OPTIMAL[metric]), 101)
    np.random.seed(seed)  # rliable's profile bootstrap draws from numpy's global stream
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        profiles, bands = library.create_performance_profile(matrices, taus, reps=min(reps, 2000))
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6, 3.6))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plot_utils.plot_performance_profiles(profiles, taus, performance_profile_cis=bands, ax=ax, xlabel=f"{metric} (τ)",
                                             ylabel="fraction of runs above τ", legend=True)
    ax.legend(fontsize=7)
    figure.tight_layout()
    return save(figure, path).name


def table_head(columns: list[str]) -> str:
    return table_row(columns) + "\n" + table_row(["---"] * len(columns))


def table_row(cells: list[str]) -> str:
    return "| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |"


def file_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", text).strip("_")[:100]


def write_csv(path: Path, rows: list[dict]) -> None:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_text(path: Path, text: str) -> None:
    """Written to a temporary name, then renamed: a kill mid-write leaves the previous file or none."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def plot_group(group: Group, path: Path) -> Path:
    """Each run's curve, and their mean over the updates all runs evaluated."""
    plt = pyplot()
    figure, ax = plt.subplots(figsize=(6, 3.6))
    metric = group.metric
    for run in group.runs:
        steps, values = zip(*run.scalars[metric])
        ax.plot(steps, values, alpha=0.45, linewidth=1, label=f"seed {run.seed}")
    shared = sorted(set.intersection(*(set(step for step, _ in run.scalars[metric]) for run in group.runs)))
    if len(group.runs) > 1 and shared:
        by_step = [dict(run.scalars[metric]) for run in group.runs]
        ax.plot(shared, [statistics.mean(points[step] for points in by_step) for step in shared], color="black", linewidth=2, label="mean")
    ax.set_title(f"{group.label} on {group.dataset}", fontsize=10)
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
    figure.savefig(temporary, dpi=110, format="png", bbox_inches="tight")  # rliable draws labels outside the axes
    pyplot().close(figure)
    temporary.replace(path)
    return path
