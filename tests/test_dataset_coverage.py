"""benchmarks/dataset_coverage.py: the coverage study's datasets, generated where missing, are the same size and
differ in coverage as their recipes say; the Markdown holds the JSON's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_same_size_datasets_of_narrower_and_wider_coverage(tmp_path):
    out = tmp_path / "coverage.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "dataset_coverage.py"), "--steps", "2000", "--out", str(out)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MINARI_DATASETS_PATH": str(tmp_path / "minari")},  # all made here
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recipe, expert, explore = json.loads(result.stdout.strip().splitlines()[-1])["datasets"]
    assert [d["dataset_id"] for d in (recipe, expert, explore)] == [
        "offrl/pointmaze/umaze-v0", "offrl/pointmaze/umaze-expert-v0", "offrl/pointmaze/umaze-explore-v0"]
    assert [d["transitions"] for d in (recipe, expert, explore)] == [2000, 2000, 2000]
    assert all(d["generate_s"] is not None for d in (recipe, expert, explore))
    # Without action noise the controller keeps to its paths; N(0, 2^2) noise spreads the same steps wider.
    assert expert["occupied_cells"] < recipe["occupied_cells"] < explore["occupied_cells"]
    for d in (recipe, expert, explore):
        assert f"| {d['dataset_id']} | 2000 | {d['episodes']} | {d['occupied_cells']} |" in out.read_text()
