"""benchmarks/value_extraction.py --quick on one pair: its last stdout line is the JSON of every number, and the
markdown holds the 3x3 table and the OPEX/TTT rows with the same figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_writes_json_and_markdown(tmp_path):
    output = tmp_path / "value_extraction.md"
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "value_extraction.py"), "--quick", "--seeds", "0",
            "--datasets", "hopper-medium", "--values", "iql", "--extractions", "ddpgbc", "--fractions",
            "--dataset-steps", "2000", "--output", str(output),
        ],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
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
    resumed = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "value_extraction.py"), "--quick", "--seeds", "0",
            "--datasets", "hopper-medium", "--values", "iql", "--extractions", "ddpgbc", "--fractions",
            "--dataset-steps", "2000", "--output", str(output), "--resume",
        ],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["runs"] == [run]
    assert "Seed set to" in result.stderr and "Seed set to" not in resumed.stderr  # nothing was trained again

    # --report-only writes the tables of two seeds from the one logged run, saying n=1, and trains nothing.
    report = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "value_extraction.py"), "--quick", "--seeds", "0", "1",
            "--datasets", "hopper-medium", "--values", "iql", "--extractions", "ddpgbc", "--fractions",
            "--dataset-steps", "2000", "--output", str(output), "--report-only",
        ],
        cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600,
    )
    assert report.returncode == 0 and "Seed set to" not in report.stderr, report.stderr[-3000:]
    assert json.loads(report.stdout.strip().splitlines()[-1])["runs"] == [run]
    assert f"| iql+ddpgbc | {run['scores']['plain']:.2f} ± 0.00 (n=1) |" in output.read_text()
