"""README's first command, as a user runs it: the CPU quickstart generates its dataset and trains RSP to PointMaze
UMaze success >= 0.9 (issue 16's bar) within minutes on one CPU thread."""

from __future__ import annotations

import json
import time
from pathlib import Path

from test_cli import offrl

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "rsp" / "pointmaze-umaze-cpu.yaml"


def test_the_quickstart_learns_pointmaze_umaze_in_minutes(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))  # generation included, as for a new user
    start = time.perf_counter()
    result = offrl("fit", "--config", str(CONFIG), "--trainer.enable_progress_bar", "false", cwd=tmp_path, timeout=900)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr[-3000:]
    (summary_path,) = (tmp_path / "logs").glob("rsp/pointmaze-umaze-100k/version_0/summary.json")
    summary = json.loads(summary_path.read_text())
    success = summary["evaluations"][-1]["eval/success"]
    print(f"quickstart: success {success:.2f} after {summary['updates']} updates, {seconds:.0f} s including generation")
    assert summary["updates"] == 6000 and round(success * 20) >= 18  # at least 18 of the 20 episodes (float32 0.9)
    assert seconds < 300
