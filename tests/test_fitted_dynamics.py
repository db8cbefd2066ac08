"""`model.dynamics_checkpoint`: an offline model-based run uses the dynamics model another run fitted on the same data
with the same dynamics settings (a study's seeds share one fit), and refuses a checkpoint that cannot serve it."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_synthetic
from test_checkpoint_faults import error_line
from test_resume import final_state, fit, run_dirs, write_config

DATASET = "test/fitted/hopper-v0"
OTHER_DATASET = "test/fitted/hopper-other-v0"


@pytest.fixture(scope="module")
def datasets():
    write_synthetic(DATASET, [50] * 12)
    write_synthetic(OTHER_DATASET, [50] * 12, seed=1)


def dynamics_tensors(run_dir: Path) -> dict:
    return {name: tensor for name, tensor in final_state(run_dir)["state_dict"].items() if name.startswith("dynamics.")}


@pytest.mark.parametrize("algorithm", ["admpo_off", "mopo"])
def test_a_second_seed_uses_the_first_seeds_fitted_model_without_fitting(algorithm, datasets, in_tmp_dir, monkeypatch, capsys):
    config = str(write_config(in_tmp_dir / "run.yaml", algorithm, DATASET))
    assert fit("--config", config) == 0
    (first,) = run_dirs(in_tmp_dir)
    fitted = first / "checkpoints" / "last.ckpt"

    def no_fit(*args, **kwargs):
        raise AssertionError("the run fitted a model although it was given one")

    monkeypatch.setattr("offrl.algos.model_based_sac.fit_dynamics", no_fit)
    capsys.readouterr()
    assert fit("--config", config, "--seed_everything", "4", "--model.init_args.dynamics_checkpoint", str(fitted)) == 0
    assert f"offrl: using the dynamics model fitted in {fitted}; no model fit in this run" in capsys.readouterr().err
    second = next(run for run in run_dirs(in_tmp_dir) if run != first)
    shared, own = dynamics_tensors(first), dynamics_tensors(second)
    assert shared.keys() == own.keys() and all((shared[name] == own[name]).all() for name in shared)
    assert any((final_state(first)["state_dict"][name] != tensor).any() for name, tensor in final_state(second)["state_dict"].items()
               if name.startswith("agent."))  # the second seed trained its own SAC


def test_a_checkpoint_of_other_data_settings_or_algorithm_is_refused_in_one_sentence(datasets, in_tmp_dir, capsys):
    assert fit("--config", str(write_config(in_tmp_dir / "admpo.yaml", "admpo_off", DATASET))) == 0
    (first,) = run_dirs(in_tmp_dir)
    fitted = first / "checkpoints" / "last.ckpt"
    given = ("--model.init_args.dynamics_checkpoint", str(fitted))

    other = str(write_config(in_tmp_dir / "other.yaml", "admpo_off", OTHER_DATASET))
    assert fit("--config", other, *given) == 1
    assert f"its model was fitted on {DATASET}, not {OTHER_DATASET}" in error_line(capsys)

    config = str(write_config(in_tmp_dir / "admpo.yaml", "admpo_off", DATASET))
    assert fit("--config", config, "--model.init_args.dynamics_lr", "0.001", *given) == 1
    line = error_line(capsys)
    assert f"model.dynamics_checkpoint {fitted} cannot serve this run (model.dynamics_lr 0.0003 -> 0.001)" in line
    assert "or remove the setting to fit a model" in line

    mopo = str(write_config(in_tmp_dir / "mopo.yaml", "mopo", DATASET))
    assert fit("--config", mopo, *given) == 1
    assert "it was made by offrl.algos.admpo.ADMPOOffline, not offrl.algos.mopo.MOPO" in error_line(capsys)
    assert len(run_dirs(in_tmp_dir)) == 1  # the refused starts left no run folder
