"""The model-based half inside Lightning: an offline model-based run (MOPO, ADMPO-OFF) fits its dynamics model
first, as a Trainer phase of its own in <run>/dynamics/ (an AnyStepDataModule and a DynamicsFit module), resumable
and interruptible like any fit; a fitted model serves other runs (`model.dynamics_checkpoint`), so a study's seeds
share one fit, and a checkpoint that cannot serve a run is refused in one sentence."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import lightning as L
import pytest
import torch

from conftest import write_synthetic
from test_checkpoint_faults import error_line
from test_ddp_resume import DDP, needs_ddp, offrl_fit
from test_resume import assert_same_training_state, final_state, fit, logged, run_dirs, write_config

DATASET = "test/fitted/hopper-v0"
OTHER_DATASET = "test/fitted/hopper-other-v0"
# Enough model epochs to stop a fit in the middle: 6 epochs of 5 updates (the tiny configs of tests/test_resume.py).
LONGER_FIT = ("--model.init_args.dynamics_max_epochs", "6")


@pytest.fixture(scope="module")
def datasets():
    write_synthetic(DATASET, [50] * 12)
    write_synthetic(OTHER_DATASET, [50] * 12, seed=1)


def fitted_checkpoint(run_dir: Path) -> Path:
    return run_dir / "dynamics" / "checkpoints" / "last.ckpt"


def dynamics_tensors(run_dir: Path) -> dict:
    return {name: tensor for name, tensor in final_state(run_dir)["state_dict"].items() if name.startswith("dynamics.")}


@pytest.mark.parametrize("algorithm", ["admpo_off", "mopo"])
def test_a_run_given_a_fitted_model_fits_none_and_trains_as_the_run_that_fitted_it(algorithm, datasets, in_tmp_dir, monkeypatch, capsys):
    config = str(write_config(in_tmp_dir / "run.yaml", algorithm, DATASET))
    assert fit("--config", config) == 0
    (first,) = run_dirs(in_tmp_dir)
    fitted = fitted_checkpoint(first)
    assert read_fit(fitted)["finished"] and (first / "dynamics" / "checkpoints" / "best.ckpt").is_file()

    def no_fit(*args, **kwargs):
        raise AssertionError("the run fitted a model although it was given one")

    monkeypatch.setattr("offrl.cli.fit.fit_dynamics_phase", no_fit)
    capsys.readouterr()
    given = ("--model.init_args.dynamics_checkpoint", str(fitted))
    assert fit("--config", config, *given) == 0
    assert f"offrl: using the dynamics model fitted in {fitted}; no model fit in this run" in capsys.readouterr().err
    same_seed = next(run for run in run_dirs(in_tmp_dir) if run != first)
    # The SAC phase starts from the config's seed after the fit, so sharing a fit changes no number.
    assert_same_training_state(final_state(first), final_state(same_seed))
    assert fit("--config", config, "--seed_everything", "4", *given) == 0
    other_seed = next(run for run in run_dirs(in_tmp_dir) if run not in (first, same_seed))
    shared, own = dynamics_tensors(first), dynamics_tensors(other_seed)
    assert shared.keys() == own.keys() and all(torch.equal(shared[name], own[name]) for name in shared)
    assert any(not torch.equal(final_state(first)["state_dict"][name], tensor)
               for name, tensor in final_state(other_seed)["state_dict"].items() if name.startswith("agent."))


def read_fit(path: Path) -> dict:
    from offrl.checkpoints import read_checkpoint

    return read_checkpoint(path)["dynamics_fit"]


def test_a_checkpoint_of_other_data_settings_or_model_is_refused_in_one_sentence(datasets, in_tmp_dir, capsys):
    assert fit("--config", str(write_config(in_tmp_dir / "admpo.yaml", "admpo_off", DATASET))) == 0
    (first,) = run_dirs(in_tmp_dir)
    fitted = fitted_checkpoint(first)
    given = ("--model.init_args.dynamics_checkpoint", str(fitted))

    other = str(write_config(in_tmp_dir / "other.yaml", "admpo_off", OTHER_DATASET))
    assert fit("--config", other, *given) == 1
    assert f"its model was fitted on {DATASET}, not {OTHER_DATASET}" in error_line(capsys)

    config = str(write_config(in_tmp_dir / "admpo.yaml", "admpo_off", DATASET))
    assert fit("--config", config, "--model.init_args.dynamics_lr", "0.001", *given) == 1
    line = error_line(capsys)
    assert f"model.dynamics_checkpoint {fitted} cannot serve this run (model.dynamics_lr 0.0003 -> 0.001)" in line
    assert "or remove the setting to fit a model" in line
    assert fit("--config", config, "--model.init_args.dynamics_batch_size", "64", *given) == 1  # a data setting of the fit
    assert "(model.dynamics_batch_size 256 -> 64)" in error_line(capsys)

    mopo = str(write_config(in_tmp_dir / "mopo.yaml", "mopo", DATASET))
    assert fit("--config", mopo, *given) == 1
    assert "it was made by offrl.algos.dynamics.AnyStepDynamics, not a fit of offrl.algos.dynamics.EnsembleDynamics" in error_line(capsys)
    assert len(run_dirs(in_tmp_dir)) == 1  # the refused starts left no run folder


def signal_at_model_update(monkeypatch, step: int, signum: int) -> None:
    """The dynamics fit's module sends this process a real signal right after its update `step`."""
    import os

    from offrl.algos.dynamics import DynamicsFit

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == step:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(DynamicsFit, "on_train_batch_end", on_train_batch_end, raising=False)


def run_in(root: Path, monkeypatch, *args: str) -> int:
    root.mkdir(exist_ok=True)
    monkeypatch.chdir(root)
    return fit(*args)


@pytest.mark.parametrize("algorithm", ["admpo_off", "mopo"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_the_model_fit_saves_it_and_the_resumed_run_ends_as_an_unbroken_one(algorithm, signum, datasets, in_tmp_dir, monkeypatch, capsys):
    unbroken_root, broken_root = in_tmp_dir / "unbroken", in_tmp_dir / "broken"
    config = str(write_config(in_tmp_dir / "c.yaml", algorithm, DATASET))
    assert run_in(unbroken_root, monkeypatch, "--config", config, *LONGER_FIT) == 0
    (unbroken,) = run_dirs(unbroken_root)

    with monkeypatch.context() as patch:
        signal_at_model_update(patch, 12, signum)
        capsys.readouterr()
        assert run_in(broken_root, monkeypatch, "--config", config, *LONGER_FIT) == 128 + signum
    (broken,) = run_dirs(broken_root)
    said = capsys.readouterr().err
    assert f"offrl: stopped by {signal.Signals(signum).name} after update 12; saved {fitted_checkpoint(broken)}" in said, said[-2000:]
    assert read_checkpoint_step(fitted_checkpoint(broken)) == 12 and not (broken / "checkpoints").exists()

    assert fit("--config", config, *LONGER_FIT, "--ckpt_path", "last") == 0
    assert run_dirs(broken_root) == [broken]  # the fit and then SAC went on in the stopped run's folder
    assert_same_training_state(final_state(unbroken), final_state(broken))
    assert logged(broken) == logged(unbroken)
    assert model_curves(broken) == model_curves(unbroken)


def model_curves(run_dir: Path) -> dict:
    from test_cli import scalars

    return scalars(run_dir / "dynamics")


def read_checkpoint_step(path: Path) -> int:
    from offrl.checkpoints import read_checkpoint

    return int(read_checkpoint(path)["global_step"])


def test_a_run_killed_during_the_model_fit_resumes_from_its_last_epoch(datasets, in_tmp_dir, monkeypatch):
    """SIGKILL leaves the fit's last end-of-epoch checkpoint: at most one model epoch is lost, and the resumed run
    ends as an unbroken one."""
    from offrl.algos.dynamics import DynamicsFit

    config = str(write_config(in_tmp_dir / "c.yaml", "admpo_off", DATASET))
    killed = in_tmp_dir / "killed"

    def copy_at_fourth_validation(self) -> None:  # after epoch 4's updates, before its validation and checkpoint
        if self.global_step == 20 and not killed.exists():
            shutil.copytree(Path("logs"), killed / "logs")

    with monkeypatch.context() as patch:
        patch.setattr(DynamicsFit, "on_validation_start", copy_at_fourth_validation, raising=False)
        assert run_in(in_tmp_dir / "unbroken", monkeypatch, "--config", config, *LONGER_FIT) == 0
    (unbroken,) = run_dirs(in_tmp_dir / "unbroken")
    (run,) = run_dirs(killed)
    assert read_checkpoint_step(fitted_checkpoint(run)) == 15  # epoch 3's
    assert run_in(killed, monkeypatch, "--config", config, *LONGER_FIT, "--ckpt_path", "last") == 0
    assert_same_training_state(final_state(unbroken), final_state(run))
    assert logged(run) == logged(unbroken)


def test_a_run_killed_after_its_model_fit_and_before_a_sac_checkpoint_resumes_without_fitting_again(datasets, in_tmp_dir, monkeypatch, capsys):
    from offrl.algos.model_based_sac import ModelBasedSAC

    config = str(write_config(in_tmp_dir / "c.yaml", "mopo", DATASET))
    killed = in_tmp_dir / "killed"

    def copy_at_sac_start(self) -> None:  # the fit has ended and saved; SAC has saved nothing yet
        if not killed.exists():
            shutil.copytree(Path("logs"), killed / "logs")

    with monkeypatch.context() as patch:
        patch.setattr(ModelBasedSAC, "on_train_start", copy_at_sac_start, raising=False)
        assert run_in(in_tmp_dir / "unbroken", monkeypatch, "--config", config) == 0
    (unbroken,) = run_dirs(in_tmp_dir / "unbroken")
    (run,) = run_dirs(killed)
    assert not (run / "checkpoints").exists() and read_fit(fitted_checkpoint(run))["finished"]
    capsys.readouterr()
    assert run_in(killed, monkeypatch, "--config", config, "--ckpt_path", "last") == 0
    assert model_curves(run) == model_curves(unbroken)  # no model epoch past the fit's end
    assert_same_training_state(final_state(unbroken), final_state(run))
    assert "had ended; SAC starts on its model" in capsys.readouterr().err


def test_a_model_fitted_alone_from_its_shipped_config_serves_a_run_and_is_checked(datasets, in_tmp_dir, capsys):
    """`offrl fit --config configs/dynamics/adm-hopper-medium.yaml` (shrunk) fits ADM alone: curves against model
    updates, last.ckpt and best.ckpt, and a checkpoint that the matching ADMPO-OFF run takes as its model."""
    from test_cli import scalars

    shipped = Path(__file__).parents[1] / "configs" / "dynamics" / "adm-hopper-medium.yaml"
    tiny = ("--model.max_window", "2", "--data.max_window", "2", "--model.dynamics_hidden_dim", "8", "--model.dynamics_gru_layers", "1",
            "--model.dynamics_residual_blocks", "1", "--model.dynamics_max_epochs", "2", "--data.steps_per_epoch", "5",
            "--data.dataset_id", DATASET, "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "5")
    assert fit("--config", str(shipped), *tiny) == 0
    run = in_tmp_dir / "logs" / "adm" / "fitted-hopper" / "version_0"
    curves = scalars(run)
    assert len(curves["dynamics/holdout_mse"]) == 2 and len(curves["train/model_nll"]) >= 1
    assert {path.name for path in (run / "checkpoints").glob("*.ckpt")} == {"last.ckpt", "best.ckpt"}
    fitted = run / "checkpoints" / "last.ckpt"
    assert read_fit(fitted)["finished"]

    config = str(write_config(in_tmp_dir / "admpo.yaml", "admpo_off", DATASET))
    capsys.readouterr()
    assert fit("--config", config, "--model.init_args.dynamics_checkpoint", str(fitted)) == 0
    assert f"using the dynamics model fitted in {fitted}" in capsys.readouterr().err
    assert fit("--config", str(shipped), *tiny, "--data.max_window", "3") == 1
    assert error_line(capsys).startswith("offrl: error: data.max_window is 3 but the model needs 2; set data.max_window 2")


def test_an_online_run_starts_its_first_refit_from_a_model_fitted_on_its_envs_data(datasets, in_tmp_dir, monkeypatch, capsys):
    """ADMPO-ON takes a model fitted offline on data of its env (same shape; its own refit settings) and its first
    refit continues from those weights; another shape or env is refused in one sentence."""
    import offrl.algos.model_based_sac as model_based
    from offrl.checkpoints import read_checkpoint

    root = Path(__file__).parents[1] / "configs"
    shape = ("--model.max_window", "2", "--model.dynamics_hidden_dim", "8", "--model.dynamics_gru_layers", "1",
             "--model.dynamics_residual_blocks", "1")
    quiet = ("--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--trainer.log_every_n_steps", "5")
    assert fit("--config", str(root / "dynamics" / "adm-hopper-medium.yaml"), *shape, *quiet, "--data.max_window", "2",
               "--model.dynamics_max_epochs", "2", "--data.steps_per_epoch", "5", "--data.dataset_id", DATASET) == 0
    fitted = in_tmp_dir / "logs" / "adm" / "fitted-hopper" / "version_0" / "checkpoints" / "last.ckpt"
    fitted_state = read_fit(fitted)["fitted_dynamics"]

    at_first_refit = []
    refit = model_based.fit_dynamics

    def recording_refit(dynamics, *args, **kwargs):
        at_first_refit.append({name: tensor.clone() for name, tensor in dynamics.state_dict().items()})
        return refit(dynamics, *args, **kwargs)

    monkeypatch.setattr(model_based, "fit_dynamics", recording_refit)
    online = ("--config", str(root / "admpo_on" / "hopper.yaml"), *shape, *quiet, "--trainer.max_steps", "30",
              "--data.steps_per_epoch", "30", "--trainer.callbacks.warmup_steps", "60", "--model.hidden_dims", "[16]",
              "--model.dynamics_updates_per_epoch", "2", "--model.dynamics_max_epochs", "1", "--model.rollout_batch_size", "8",
              "--model.dynamics_every", "20", "--evaluation.num_episodes", "1", "--evaluation.num_envs", "1",
              "--model.dynamics_lr", "0.001")  # its own refit settings
    capsys.readouterr()
    assert fit(*online, "--model.dynamics_checkpoint", str(fitted)) == 0
    assert f"offrl: using the dynamics model fitted in {fitted}; its first refit starts from it" in capsys.readouterr().err
    first = at_first_refit[0]
    weights = [name for name in fitted_state if "normalizer" not in name]
    assert weights and all(torch.equal(first[name], fitted_state[name]) for name in weights)

    at_first_refit.clear()
    assert fit(*online) == 0  # without it, the first refit starts from fresh weights
    assert not all(torch.equal(at_first_refit[0][name], fitted_state[name]) for name in weights)

    assert fit(*online, "--model.dynamics_hidden_dim", "16", "--model.dynamics_checkpoint", str(fitted)) == 1
    assert f"model.dynamics_checkpoint {fitted} cannot serve this run (model.dynamics_hidden_dim 8 -> 16)" in error_line(capsys)
    walker = in_tmp_dir / "walker.ckpt"
    checkpoint = read_checkpoint(fitted)
    checkpoint["offrl"]["env_id"] = "Walker2d-v5"
    torch.save(checkpoint, walker)
    assert fit(*online, "--model.dynamics_checkpoint", str(walker)) == 1
    assert "(its model was fitted on data of Walker2d-v5, not Hopper-v5)" in error_line(capsys)


@needs_ddp
def test_a_dynamics_fit_on_two_ddp_processes_validates_every_k_on_each_rank_and_serves_a_run(datasets, in_tmp_dir, capsys):
    """Two CPU processes fit ADM alone: each rank draws its own windows, both count every epoch's hold-out score
    (so they stop together), and the fitted checkpoint serves a one-process ADMPO-OFF run."""
    from offrl.checkpoints import read_checkpoint

    shipped = Path(__file__).parents[1] / "configs" / "dynamics" / "adm-hopper-medium.yaml"
    result = offrl_fit(
        "--config", str(shipped), "--model.max_window", "2", "--data.max_window", "2", "--model.dynamics_hidden_dim", "8",
        "--model.dynamics_gru_layers", "1", "--model.dynamics_residual_blocks", "1", "--model.dynamics_max_epochs", "2",
        "--data.steps_per_epoch", "5", "--data.dataset_id", DATASET, "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", *DDP, cwd=in_tmp_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    fitted = in_tmp_dir / "logs" / "adm" / "fitted-hopper" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint = read_checkpoint(fitted)
    assert checkpoint["global_step"] == 10 and checkpoint["dynamics_fit"]["epochs"] == 2 and checkpoint["dynamics_fit"]["finished"]
    for streams in ("generators", "window_generators"):
        ranks = checkpoint["AnyStepDataModule"][streams]["ranks"]
        assert len(ranks) == 2 and not torch.equal(ranks[0], ranks[1])
    config = str(write_config(in_tmp_dir / "admpo.yaml", "admpo_off", DATASET))
    capsys.readouterr()
    assert fit("--config", config, "--model.init_args.dynamics_checkpoint", str(fitted)) == 0
    assert f"using the dynamics model fitted in {fitted}" in capsys.readouterr().err
