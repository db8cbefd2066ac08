"""benchmarks/peers/d3rlpy_vs_offrl.py hands d3rlpy the offrl dataset as MDPDataset arrays: every episode must end
in exactly one terminal or timeout flag where it really ends (a wrong flag splits the data into one-step episodes
and d3rlpy then trains on almost nothing, which is how its scores of 2026-12-02 came out at -2.4)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from conftest import write_synthetic

ROOT = Path(__file__).resolve().parents[1]


def load_driver():
    spec = importlib.util.spec_from_file_location("d3rlpy_vs_offrl", ROOT / "benchmarks" / "peers" / "d3rlpy_vs_offrl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exported_episodes_end_where_the_dataset_episodes_end(tmp_path):
    lengths = [5, 3, 7, 4]  # odd episodes terminate, even ones are truncated by the time limit
    episodes = write_synthetic("offrl-test/peer/export-v0", lengths)
    summary = load_driver().export("offrl-test/peer/export-v0", 0, tmp_path / "data.npz")
    data = np.load(tmp_path / "data.npz")
    assert summary["transitions"] == sum(lengths) and summary["episodes"] == len(lengths)
    ends = np.cumsum(lengths) - 1
    expected_terminals, expected_timeouts = np.zeros(sum(lengths)), np.zeros(sum(lengths))
    expected_terminals[ends[1::2]] = 1.0
    expected_timeouts[ends[0::2]] = 1.0
    np.testing.assert_array_equal(data["terminals"], expected_terminals)
    np.testing.assert_array_equal(data["timeouts"], expected_timeouts)
    np.testing.assert_array_equal(data["actions"], np.concatenate([episode.actions for episode in episodes]))
    np.testing.assert_array_equal(data["observations"][:, :2], np.concatenate([episode.observations[:-1, :2] for episode in episodes]))
