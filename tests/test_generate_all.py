"""Every `offrl/` dataset id generates at a small size, Minari reads it, and its evaluation env can be made."""

from __future__ import annotations

import gymnasium as gym
import minari
import pytest

from offrl.data import catalog, registry

from test_cli import offrl

AVAILABLE = list(catalog.RECIPES)


@pytest.fixture
def own_store(tmp_path, monkeypatch):
    """A store of its own, so ids other tests generated do not collide."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))


@pytest.mark.parametrize("dataset_id", AVAILABLE)
def test_generate_small_and_read_back(dataset_id, own_store):
    registry.generate(dataset_id, steps=150, seed=1)
    assert minari.load_dataset(dataset_id).total_steps == 150
    transitions, info = registry.load(dataset_id)
    assert transitions.batch_size[0] == 150
    assert info.ref_min_score is not None and info.ref_max_score > info.ref_min_score
    assert info.metadata  # the recipe is recorded
    gym.make(info.eval_env_spec).close()


def test_data_commands_from_the_shell(tmp_path, own_store):
    result = offrl("data", "generate", "offrl/pointmaze/large-v0", "--steps", "300", "--seed", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    listing = offrl("data", "list", cwd=tmp_path)
    assert "* offrl/pointmaze/large-v0" in listing.stdout
    info = offrl("data", "info", "offrl/pointmaze/large-v0", cwd=tmp_path)
    assert "transitions:   300" in info.stdout and "PointMaze_Large-v3" in info.stdout
    again = offrl("data", "generate", "offrl/pointmaze/large-v0", "--steps", "300", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and "Traceback" not in again.stderr
