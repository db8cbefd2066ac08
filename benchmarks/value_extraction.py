"""Value learning x policy extraction (Park et al. 2024, arXiv 2406.09329) on data made here, as JSON + markdown.

    MINARI_DATASETS_PATH=/tmp/ve-minari python benchmarks/value_extraction.py [--quick] [--device cpu|cuda] \
        [--jobs N] [--seeds 0 1 2] [--updates U] [--dataset-steps S] [--datasets pointmaze-umaze hopper-medium ...]

For every dataset (a recipe configs/value_extraction/<dataset>.yaml; CRL layers crl.yaml, goal datasets only) and
seed, trains every value (SARSA, IQL, CRL) x extraction (AWR, DDPG+BC, SfBC) pair for U updates through the offrl
CLI, then evaluates the same trained networks three times: as trained, with OPEX and with TTT (opex.yaml and
ttt.yaml of the same folder). A data-scaling matrix trains IQL with AWR and DDPG+BC on the first {0.1, 1.0} of the
episodes for the value and, independently, for the policy (--fractions). A coverage table trains SARSA and IQL
with AWR and DDPG+BC (--coverage-values, --extractions) on same-size datasets that differ in coverage and optimality
(--coverage-ids: the maze recipe without action noise, `-expert`, and with N(0, 2^2), `-explore`), next to the
recipe's own N(0, 0.5^2) data, and counts how many goals each reached and how many state cells it visits.
Missing datasets are generated first at --dataset-steps steps (seed 0) into MINARI_DATASETS_PATH; an existing
dataset is used as it is and its size reported. Runs go to --jobs processes (one torch thread each on CPU); each finished run is appended to <output>.runs.jsonl
at once, --resume trains only the runs not yet there, and --report-only trains nothing and tabulates the logged
runs (a cell with fewer runs than seeds says its n). Writes benchmarks/results/value_extraction.md; the last
stdout line is one JSON object with every number. Scores: success rate (0-1) on PointMaze, D4RL normalised return
(x100) on MuJoCo.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib
import json
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs" / "value_extraction"
RESULTS = ROOT / "benchmarks" / "results" / "value_extraction.md"
VALUES = ("sarsa", "iql", "crl")
EXTRACTIONS = ("awr", "ddpgbc", "sfbc")
MODES = ("plain", "opex", "ttt")
SCALING_EXTRACTIONS = ("awr", "ddpgbc")
# Cell sizes of the coverage count: PointMaze observations are (x, y, vx, vy).
POSITION_CELL, VELOCITY_CELL = 0.25, 0.5


def dataset_config(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


def is_goal_dataset(name: str) -> bool:
    return dataset_config(name)["data"]["class_path"].endswith("HindsightDataModule")


def test_time_callback(name: str):
    """The callback configured in configs/value_extraction/<name>.yaml (the layer `offrl test` would use)."""
    (entry,) = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())["trainer"]["callbacks"]
    module, _, cls = entry["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), cls)(**entry.get("init_args", {}))


def occupied_cells(observation: torch.Tensor) -> int:
    """How many (position / POSITION_CELL, velocity / VELOCITY_CELL) cells of a PointMaze dataset hold a state."""
    cells = torch.cat([observation[:, :2] / POSITION_CELL, observation[:, 2:4] / VELOCITY_CELL], dim=1).floor()
    return torch.unique(cells, dim=0).shape[0]


def generate(job: tuple[str, int]) -> dict:
    from offrl.data import minari_io, registry

    dataset_id, steps = job
    torch.set_num_threads(1)
    start = time.perf_counter()
    generated = not minari_io.dataset_path(dataset_id).exists()
    if generated:
        registry.generate(dataset_id, steps=steps, seed=0)
    transitions, info = registry.load(dataset_id)
    return {
        "dataset_id": dataset_id,
        "transitions": transitions.batch_size[0],
        "episodes": info.num_episodes,
        "occupied_cells": occupied_cells(transitions["observation"]) if info.is_goal_conditioned else None,
        "generate_s": round(time.perf_counter() - start, 1) if generated else None,
    }


def train_and_evaluate(spec: dict) -> dict:
    """One training run through the CLI, then one evaluation per test-time mode of the same networks."""
    from offrl.callbacks.evaluation import EvaluationCallback
    from offrl.cli.fit import run_lightning
    from offrl.envs.evaluation import evaluate
    from offrl.envs.factory import make_eval_env

    cuda = spec["device"] == "cuda"
    if not cuda:
        torch.set_num_threads(1)
    configs = [CONFIGS / f"{spec['dataset']}.yaml"]
    configs += [CONFIGS / "crl.yaml"] if spec["value"] == "crl" else []
    configs += [CONFIGS / "quick.yaml"] if spec["quick"] else []
    configs += spec["layers"]
    with tempfile.TemporaryDirectory() as run_dir:
        args = [arg for path in configs for arg in ("--config", str(path))] + [
            f"--data.dataset_id={spec['dataset_id']}",
            f"--model.value={spec['value']}",
            f"--model.extraction={spec['extraction']}",
            f"--model.value_data_fraction={spec['value_fraction']}",
            f"--model.policy_data_fraction={spec['policy_fraction']}",
            f"--seed_everything={spec['seed']}",
            f"--data.seed={spec['seed']}",
            f"--data.steps_per_epoch={spec['updates']}",
            f"--trainer.max_steps={spec['updates']}",
            f"--trainer.accelerator={'gpu' if cuda else 'cpu'}",
            "--trainer.devices=1",
            "--trainer.logger=false",
            "--trainer.limit_val_batches=0",  # evaluated below, once per mode
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            f"--trainer.default_root_dir={run_dir}",
            "--checkpoint.save_last=false",
        ]
        cli = run_lightning(args, run=False)
        start = time.perf_counter()
        cli.trainer.fit(cli.model, cli.datamodule)
        train_seconds = time.perf_counter() - start
    model = cli.model.to(torch.device("cuda" if cuda else "cpu")).eval()
    info = cli.datamodule.info
    (evaluation,) = [c for c in cli.trainer.callbacks if isinstance(c, EvaluationCallback)]
    env = make_eval_env(info, evaluation.num_envs, evaluation.seed)
    metric = "eval/success" if info.is_goal_conditioned else "eval/normalized_score"
    scores = {}
    for mode in spec["modes"]:
        env.set_seed(evaluation.seed)  # every mode starts from the same initial states and goals
        improvement = test_time_callback(mode) if mode != "plain" else None
        context = improvement.improving(model, model.act) if improvement else contextlib.nullcontext(model.act)
        with context as act:
            metrics = evaluate(act, env, info, evaluation.num_episodes, model.device, evaluation.success_threshold)
        scores[mode] = metrics[metric]
    env.close()
    return {
        **{k: spec[k] for k in RUN_KEYS},
        "metric": metric,
        "scores": scores,
        "updates_per_s": round(spec["updates"] / train_seconds, 1),
    }


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values) if len(values) > 1 else 0.0


def add(table: dict, key: str, values: list[float]) -> None:
    """table[key] = mean, std and count of `values`, when there are any."""
    if values:
        mean, std = mean_std(values)
        table[key] = {"mean": mean, "std": std, "n": len(values)}


def cell(values: list[float] | None, seeds: int) -> str:
    """mean ± std over the runs; (n=k) when fewer than `seeds` runs made it."""
    if not values:
        return "n/a"
    mean, std = mean_std(values)
    return f"{mean:.2f} ± {std:.2f}" + (f" (n={len(values)})" if len(values) < seeds else "")


def run_parallel(function, items: list, jobs: int) -> list:
    if jobs <= 1:
        return [function(item) for item in items]
    with multiprocessing.get_context("spawn").Pool(jobs) as pool:
        return pool.map(function, items, chunksize=1)


RUN_KEYS = ("dataset", "dataset_id", "value", "extraction", "seed", "value_fraction", "policy_fraction")


def run_key(run: dict) -> tuple:
    return tuple(run[key] for key in RUN_KEYS)


def recipe_dataset_id(name: str) -> str:
    return dataset_config(name)["data"]["init_args"]["dataset_id"]


def logged_runs(runs_log: Path) -> list[dict]:
    runs = [json.loads(line) for line in runs_log.read_text().splitlines()] if runs_log.is_file() else []
    for run in runs:  # runs logged before the coverage table trained on their recipe's dataset
        run.setdefault("dataset_id", recipe_dataset_id(run["dataset"]))
    return runs


def train_all(specs: list[dict], jobs: int, runs_log: Path) -> list[dict]:
    """Every spec's run, appending each finished run to `runs_log` as one JSON line the moment it ends, so a run
    cut short (a time limit) keeps what it finished and `--resume` trains only the rest."""
    done = logged_runs(runs_log)
    finished = {run_key(run) for run in done}
    todo = [spec for spec in specs if run_key(spec) not in finished]
    runs_log.parent.mkdir(parents=True, exist_ok=True)
    with runs_log.open("a") as log:
        pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
        results = pool.imap_unordered(train_and_evaluate, todo) if pool else map(train_and_evaluate, todo)
        for run in results:
            log.write(json.dumps(run) + "\n")
            log.flush()
            done.append(run)
        if pool:
            pool.close()
    wanted = {run_key(spec) for spec in specs}
    return [run for run in done if run_key(run) in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="CI smoke budget: tiny nets (quick.yaml), few updates")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--jobs", type=int, default=1, help="training runs in parallel processes")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--updates", type=int, help="updates per run (default 100000; --quick 30)")
    parser.add_argument("--dataset-steps", type=int, help="size of generated datasets (default 200000; --quick 3000)")
    parser.add_argument(
        "--datasets", nargs="*", default=["pointmaze-umaze", "pointmaze-large", "hopper-medium", "halfcheetah-medium"]
    )
    parser.add_argument("--scaling-dataset", default="pointmaze-umaze", help="dataset of the data-scaling matrix")
    parser.add_argument("--fractions", type=float, nargs="*", default=[0.1, 1.0], help="none: skip the scaling matrix")
    parser.add_argument("--coverage-dataset", default="pointmaze-umaze", help="recipe of the coverage table")
    parser.add_argument(
        "--coverage-ids", nargs="*", default=["offrl/pointmaze/umaze-expert-v0", "offrl/pointmaze/umaze-explore-v0"],
        help="same-size datasets beside the recipe's own in the coverage table (none: skip it)",
    )
    parser.add_argument("--coverage-values", nargs="+", choices=VALUES, default=["sarsa", "iql"])
    parser.add_argument("--values", nargs="+", choices=VALUES, default=list(VALUES))
    parser.add_argument("--extractions", nargs="+", choices=EXTRACTIONS, default=list(EXTRACTIONS))
    parser.add_argument("--layer", type=Path, nargs="*", default=[], help="config files layered on every run (e.g. a smaller budget)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--resume", action="store_true",
        help="keep the runs already in OUTPUT's .runs.jsonl (one JSON line per finished run) and train only the rest",
    )
    parser.add_argument(
        "--report-only", action="store_true",
        help="train nothing: write the tables and JSON from the runs already in OUTPUT's .runs.jsonl (cells with fewer runs than seeds say n)",
    )
    args = parser.parse_args()
    updates = args.updates or (30 if args.quick else 100_000)
    dataset_steps = args.dataset_steps or (3000 if args.quick else 200_000)
    names = list(dict.fromkeys(
        args.datasets + ([args.scaling_dataset] if args.fractions else []) + ([args.coverage_dataset] if args.coverage_ids else [])
    ))
    started = time.perf_counter()

    dataset_ids = {name: recipe_dataset_id(name) for name in names}
    dataset_ids.update({dataset_id: dataset_id for dataset_id in args.coverage_ids})
    runs_log = args.output.with_suffix(".runs.jsonl")
    if args.report_only and not runs_log.is_file():
        parser.error(f"--report-only reads the runs in {runs_log}, which does not exist")
    made = run_parallel(generate, [(dataset_id, dataset_steps) for dataset_id in dataset_ids.values()], args.jobs)
    datasets = dict(zip(dataset_ids, made))

    base = {"quick": args.quick, "device": args.device, "updates": updates, "layers": [str(path) for path in args.layer]}
    specs = [
        {**base, "dataset": name, "dataset_id": dataset_ids[name], "value": value, "extraction": extraction, "seed": seed,
         "value_fraction": 1.0, "policy_fraction": 1.0, "modes": MODES}
        for name in args.datasets
        for value in args.values
        if value != "crl" or is_goal_dataset(name)
        for extraction in args.extractions
        for seed in args.seeds
    ]
    # The (1.0, 1.0) cell is the plain IQL run of the main table when the scaling dataset is in it.
    in_main = args.scaling_dataset in args.datasets and "iql" in args.values and set(SCALING_EXTRACTIONS) <= set(args.extractions)
    scaling_cells = [(v, p) for v in args.fractions for p in args.fractions if not (in_main and v == p == 1.0)]
    specs += [
        {**base, "dataset": args.scaling_dataset, "dataset_id": dataset_ids[args.scaling_dataset], "value": "iql",
         "extraction": extraction, "seed": seed,
         "value_fraction": value_fraction, "policy_fraction": policy_fraction, "modes": ("plain",)}
        for extraction in SCALING_EXTRACTIONS
        for value_fraction, policy_fraction in scaling_cells
        for seed in args.seeds
    ]
    # Coverage: the recipe's own data comes from the main table when the dataset is in it, else it is trained here.
    coverage_ids = [dataset_ids[args.coverage_dataset]] + args.coverage_ids if args.coverage_ids else []
    coverage_extractions = [extraction for extraction in SCALING_EXTRACTIONS if extraction in args.extractions]
    specs += [
        {**base, "dataset": args.coverage_dataset, "dataset_id": dataset_id, "value": value, "extraction": extraction,
         "seed": seed, "value_fraction": 1.0, "policy_fraction": 1.0, "modes": ("plain",)}
        for dataset_id in coverage_ids
        for value in args.coverage_values
        if not (dataset_id == dataset_ids[args.coverage_dataset] and args.coverage_dataset in args.datasets and value in args.values)
        for extraction in coverage_extractions
        for seed in args.seeds
    ]
    if args.report_only:
        wanted = {run_key(spec) for spec in specs}
        runs = [run for run in logged_runs(runs_log) if run_key(run) in wanted]
    else:
        if not args.resume:
            runs_log.unlink(missing_ok=True)
        runs = train_all(specs, args.jobs, runs_log)
    wall_seconds = time.perf_counter() - started

    def scores(dataset, value, extraction, mode="plain", value_fraction=1.0, policy_fraction=1.0, dataset_id=None):
        wanted = (dataset, dataset_id or dataset_ids[dataset], value, extraction, value_fraction, policy_fraction)
        return [
            run["scores"][mode] for run in runs
            if (run["dataset"], run["dataset_id"], run["value"], run["extraction"], run["value_fraction"], run["policy_fraction"])
            == wanted and mode in run["scores"]
        ]

    summary = {"pairs": {}, "scaling": {}, "coverage": {}}
    for name in args.datasets:
        for value in VALUES:
            for extraction in EXTRACTIONS:
                for mode in MODES:
                    add(summary["pairs"], f"{name}/{value}/{extraction}/{mode}", scores(name, value, extraction, mode))
    for extraction in SCALING_EXTRACTIONS:
        for value_fraction in args.fractions:
            for policy_fraction in args.fractions:
                add(summary["scaling"], f"{extraction}/value{value_fraction}/policy{policy_fraction}",
                    scores(args.scaling_dataset, "iql", extraction, "plain", value_fraction, policy_fraction))

    for dataset_id in coverage_ids:
        for value in args.coverage_values:
            for extraction in coverage_extractions:
                add(summary["coverage"], f"{dataset_id}/{value}/{extraction}",
                    scores(args.coverage_dataset, value, extraction, dataset_id=dataset_id))

    header = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({platform.processor() or platform.machine()})",
        "quick": args.quick,
        "updates_per_run": updates,
        "layers": [str(path) for path in args.layer],
        "seeds": args.seeds,
        "jobs": args.jobs,
        "datasets": datasets,
        "wall_s": round(wall_seconds, 1),
    }
    write_markdown(args.output, header, args, summary, scores, coverage_ids, coverage_extractions)
    print(json.dumps({**header, **summary, "runs": runs}))


def write_markdown(
    path: Path, header: dict, args, summary: dict, scores, coverage_ids: list[str], coverage_extractions: list[str]
) -> None:
    seeds = len(header["seeds"])
    lines = [
        "# Value learning x policy extraction (Park et al. 2024) on data generated here",
        "",
        f"- Date: {header['date']}; device: {header['device']}; jobs: {header['jobs']}; "
        + ("tables written by --report-only from the runs log." if args.report_only else f"wall time {header['wall_s']} s."),
        f"- Budget: {header['updates_per_run']} updates per run{' (--quick smoke budget: tiny networks)' if args.quick else ''};"
        f" seeds {header['seeds']}; recipes configs/value_extraction/<dataset>.yaml"
        + (f" with {', '.join(header['layers'])} layered on" if header["layers"] else "") + ".",
        "- Datasets: " + "; ".join(
            (name if name == d["dataset_id"] else f"{name} = {d['dataset_id']}")
            + f" ({d['transitions']} transitions, {d['episodes']} episodes)"
            for name, d in header["datasets"].items()
        ) + ".",
        "- Scores: mean ± std over seeds of the success rate (PointMaze, 0-1) or the D4RL normalised return (MuJoCo, x100).",
        f"- Command: `python benchmarks/value_extraction.py {' '.join(sys.argv[1:])}`",
        "",
    ]
    for name in args.datasets:
        lines += [f"## {name}: value (rows) x extraction (columns)", "", "| value | " + " | ".join(EXTRACTIONS) + " |",
                  "| --- |" + " --- |" * len(EXTRACTIONS)]
        for value in VALUES:
            if value == "crl" and not is_goal_dataset(name):
                lines.append(f"| crl | " + " | ".join("n/a (goal tasks only)" for _ in EXTRACTIONS) + " |")
                continue
            lines.append(f"| {value} | " + " | ".join(cell(scores(name, value, e), seeds) for e in EXTRACTIONS) + " |")
        lines += ["", f"Test-time improvement on {name} (the same trained networks):", "",
                  "| pair | as trained | OPEX | TTT |", "| --- | --- | --- | --- |"]
        for value in VALUES:
            for extraction in EXTRACTIONS:
                if scores(name, value, extraction):
                    lines.append(f"| {value}+{extraction} | " + " | ".join(cell(scores(name, value, extraction, m), seeds) for m in MODES) + " |")
        lines.append("")
    if summary["scaling"]:
        lines += [f"## Data scaling on {args.scaling_dataset} (IQL value): value data fraction (rows) x policy data fraction (columns)", ""]
        for extraction in SCALING_EXTRACTIONS:
            lines += [f"{extraction}:", "", "| value \\ policy | " + " | ".join(map(str, args.fractions)) + " |",
                      "| --- |" + " --- |" * len(args.fractions)]
            for value_fraction in args.fractions:
                lines.append(f"| {value_fraction} | " + " | ".join(
                    cell(scores(args.scaling_dataset, "iql", extraction, "plain", value_fraction, p), seeds) for p in args.fractions) + " |")
            lines.append("")
    if coverage_ids:
        pairs = [(value, extraction) for value in args.coverage_values for extraction in coverage_extractions]
        lines += [
            f"## Coverage vs optimality on {args.coverage_dataset}: same-size datasets (rows) x pairs (columns)", "",
            (f"Goals reached = episodes (each ends at a reached goal); cells = occupied (position / {POSITION_CELL}, "
             f"velocity / {VELOCITY_CELL}) cells."), "",
            "| dataset | transitions | goals reached | cells | " + " | ".join(f"{v}+{e}" for v, e in pairs) + " |",
            "| --- | --- | --- | --- |" + " --- |" * len(pairs),
        ]
        made = {found["dataset_id"]: found for found in header["datasets"].values()}
        for dataset_id in coverage_ids:
            found = made[dataset_id]
            lines.append(
                f"| {dataset_id} | {found['transitions']} | {found['episodes']} | {found['occupied_cells']} | "
                + " | ".join(cell(scores(args.coverage_dataset, v, e, dataset_id=dataset_id), seeds) for v, e in pairs) + " |"
            )
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
