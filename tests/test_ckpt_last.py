"""`--ckpt_path last` means this config's own run: the run whose config.yaml is given, or the newest run recorded with
the same model, data and seed; never another seed's run, and refused in one sentence listing the runs otherwise.
Every command that loads a checkpoint says which."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_synthetic
from test_checkpoint_faults import error_line
from test_errors import offrl as run
from test_resume import fit, write_config

DATASET = "test/last/hopper-v0"
RUN = Path("logs") / "bc" / "last-hopper"


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [50] * 12)
    return DATASET


@pytest.fixture
def two_seeds(dataset, in_tmp_dir):
    """Seed 0 (version_0), then seed 1 (version_1, the newest) of one recipe: each 60 updates."""
    recipe = write_config(in_tmp_dir / "recipe.yaml", "bc", DATASET, every_n_train_steps=25)
    for seed in (0, 1):
        assert fit("--config", str(recipe), "--seed_everything", str(seed)) == 0
    return in_tmp_dir, recipe


def recorded_seed(config: Path) -> int:
    return yaml.safe_load(config.read_text())["seed_everything"]


def test_test_with_a_runs_own_config_evaluates_that_run_not_the_newest_seed(two_seeds, capsys):
    root, _ = two_seeds
    first = root / RUN / "version_0"
    capsys.readouterr()
    assert run("test", "--config", str(first / "config.yaml"), "--ckpt_path", "last") == 0
    assert f"offrl: testing {first / 'checkpoints' / 'last.ckpt'} (update 60)" in capsys.readouterr().err
    assert (first / "test").is_dir() and not (root / RUN / "version_1" / "test").exists()


def test_fit_last_with_a_recipe_resumes_the_run_of_its_own_seed(two_seeds, capsys):
    root, recipe = two_seeds
    longer = write_config(root / "longer.yaml", "bc", DATASET, every_n_train_steps=25)
    longer.write_text(longer.read_text().replace("max_steps: 60", "max_steps: 80"))
    newest_before = (root / RUN / "version_1" / "checkpoints" / "last.ckpt").read_bytes()
    capsys.readouterr()
    assert fit("--config", str(longer), "--seed_everything", "0", "--ckpt_path", "last") == 0
    first = root / RUN / "version_0"
    assert f"offrl: resuming from {Path('logs') / 'bc' / 'last-hopper' / 'version_0' / 'checkpoints' / 'last.ckpt'} (update 60)" in capsys.readouterr().err
    assert torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 80
    assert recorded_seed(first / "config.start-2.yaml") == 0
    # seed 1's run, the newest, is untouched
    assert (root / RUN / "version_1" / "checkpoints" / "last.ckpt").read_bytes() == newest_before
    assert not (root / RUN / "version_1" / "config.start-2.yaml").exists()
    assert not (root / RUN / "version_2").exists()


def test_a_seed_no_run_was_made_with_is_refused_listing_the_runs(two_seeds, capsys):
    root, recipe = two_seeds
    capsys.readouterr()
    assert fit("--config", str(recipe), "--seed_everything", "5", "--ckpt_path", "last") == 1
    line = error_line(capsys)
    assert f"--ckpt_path last found no run of this config under {Path('logs') / 'bc' / 'last-hopper'}" in line
    assert "version_1: seed_everything 1 -> 5; version_0: seed_everything 0 -> 5" in line
    assert not (root / RUN / "version_2").exists()


def test_a_runs_own_config_with_another_seed_is_refused_and_nothing_is_written(two_seeds, capsys):
    root, _ = two_seeds
    second = root / RUN / "version_1"
    before = sorted(path.name for path in second.iterdir())
    capsys.readouterr()
    assert fit("--config", str(second / "config.yaml"), "--seed_everything", "0", "--ckpt_path", "last") == 1
    line = error_line(capsys)
    assert f"--ckpt_path last names the run {second.resolve()}" in line and "(seed_everything 1 -> 0)" in line
    assert sorted(path.name for path in second.iterdir()) == before
