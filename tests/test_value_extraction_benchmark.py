"""benchmarks/value_extraction.py --quick: its last stdout line is the JSON of every number, and the markdown holds
the 3x3 table, the OPEX/TTT rows and the coverage table with the same figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# IQL + DDPG+BC on hopper-medium alone: no data-scaling matrix, no coverage table.
ONE_PAIR = ("--datasets", "hopper-medium", "--values", "iql", "--extractions", "ddpgbc", "--fractions", "--coverage-ids",
            "--dataset-steps", "2000")


def run_benchmark(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "value_extraction.py"), "--quick", *args],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1", **env}, capture_output=True, text=True, timeout=600,
    )


def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    output = tmp_path / "value_extraction.md"
    result = run_benchmark(
        tmp_path, "--seeds", "0", *ONE_PAIR, "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["quick"] and summary["updates_per_run"] == 30 and summary["seeds"] == [0]
    assert summary["datasets"]["hopper-medium"]["transitions"] >= 2000
    (run,) = summary["runs"]
    assert (run["value"], run["extraction"], run["metric"]) == ("iql", "ddpgbc", "eval/normalized_score")
    for mode in ("plain", "opex", "ttt"):
        entry = summary["pairs"][f"hopper-medium/iql/ddpgbc/{mode}"]
        assert entry["n"] == 1 and entry["mean"] == run["scores"][mode] and entry["std"] == 0.0
    markdown = output.read_text()
    assert "## hopper-medium: value (rows) x extraction (columns)" in markdown
    assert "| crl | n/a (goal tasks only)" in markdown
    assert f"| iql+ddpgbc | {run['scores']['plain']:.2f} ± 0.00 | {run['scores']['opex']:.2f} ± 0.00 |" in markdown
    assert "30 updates per run" in markdown
    # Each finished run was logged the moment it ended, and --resume reuses it instead of training again.
    (logged,) = [json.loads(line) for line in output.with_suffix(".runs.jsonl").read_text().splitlines()]
    assert logged == run
    resumed = run_benchmark(
        tmp_path, "--seeds", "0",
            "--datasets", "hopper-medium", "--values", "iql", "--extractions", "ddpgbc", "--fractions", "--coverage-ids",
            "--dataset-steps", "2000", "--output", str(output), "--resume",
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["runs"] == [run]
    assert "Seed set to" in result.stderr and "Seed set to" not in resumed.stderr  # nothing was trained again

    # --report-only writes the tables of two seeds from the one logged run, saying n=1, and trains nothing.
    report = run_benchmark(
        tmp_path, "--seeds", "0", "1",
            "--datasets", "hopper-medium", "--values", "iql", "--extractions", "ddpgbc", "--fractions", "--coverage-ids",
            "--dataset-steps", "2000", "--output", str(output), "--report-only",
    )
    assert report.returncode == 0 and "Seed set to" not in report.stderr, report.stderr[-3000:]
    assert json.loads(report.stdout.strip().splitlines()[-1])["runs"] == [run]
    assert f"| iql+ddpgbc | {run['scores']['plain']:.2f} ± 0.00 (n=1) |" in output.read_text()


def test_coverage_table_compares_same_size_datasets_of_different_coverage(tmp_path):
    output = tmp_path / "value_extraction.md"
    result = run_benchmark(
        tmp_path, "--seeds", "0", "--datasets", "--fractions", "--coverage-values", "iql", "--extractions", "ddpgbc",
        "--dataset-steps", "2000", "--output", str(output),
        MINARI_DATASETS_PATH=str(tmp_path / "minari"),  # its own store: all three datasets made here, same size
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    recipe, expert, explore = "offrl/pointmaze/umaze-v0", "offrl/pointmaze/umaze-expert-v0", "offrl/pointmaze/umaze-explore-v0"
    datasets = summary["datasets"]
    made = [datasets["pointmaze-umaze"], datasets[expert], datasets[explore]]
    assert [found["transitions"] for found in made] == [2000, 2000, 2000]  # same size, different coverage
    # Without action noise the controller keeps to its paths; N(0, 2^2) noise spreads the same steps wider.
    assert made[1]["occupied_cells"] < made[0]["occupied_cells"] < made[2]["occupied_cells"]
    runs = {run["dataset_id"]: run for run in summary["runs"]}
    assert sorted(runs) == sorted([recipe, expert, explore])
    assert all((run["dataset"], run["value"], run["extraction"]) == ("pointmaze-umaze", "iql", "ddpgbc") for run in runs.values())
    markdown = output.read_text()
    assert "## Coverage vs optimality on pointmaze-umaze" in markdown
    for dataset_id, found in zip((recipe, expert, explore), made):
        score = runs[dataset_id]["scores"]["plain"]
        assert summary["coverage"][f"{dataset_id}/iql/ddpgbc"] == {"mean": score, "std": 0.0, "n": 1}
        assert (
            f"| {dataset_id} | 2000 | {found['episodes']} | {found['occupied_cells']} | {score:.2f} ± 0.00 |" in markdown
        )
