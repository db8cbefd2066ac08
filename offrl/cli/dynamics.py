"""The first phase of an offline model-based run (MOPO, ADMPO-OFF): its dynamics model, fitted by a Trainer of its
own in `<run>/dynamics/` (TensorBoard curves, `checkpoints/last.ckpt` after every epoch and `best.ckpt`), then
handed to the SAC module. A run stopped in this phase resumes it with `--ckpt_path last`; SAC then starts."""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from offrl.algos.model_based_sac import ModelBasedSAC
from offrl.callbacks.fault_tolerance import FiniteLosses, StopCheckpoint
from offrl.callbacks.report import UpdateProgressBar
from offrl.callbacks.throughput import UpdateLoop
from offrl.checkpoints import AtomicCheckpointIO, read_checkpoint
from offrl.data.datamodules import AnyStepDataModule, TransitionDataModule
from offrl.errors import OffrlError

PHASE_FOLDER = "dynamics"


def phase_checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / PHASE_FOLDER / "checkpoints"


def needs_dynamics_fit(model) -> bool:
    """Whether `model` is an offline model-based algorithm that has no fitted dynamics model yet."""
    if not isinstance(model, ModelBasedSAC) or model.schedule.online:
        return False
    return model.fitted_dynamics is None and not bool(getattr(model, "dynamics_trained", False))


def window_data(datamodule: TransitionDataModule, settings: dict) -> AnyStepDataModule:
    """The AnyStepDataModule of a dynamics fit (its `settings`), on the run's dataset with the run's data seed."""
    hp = datamodule.hparams
    return AnyStepDataModule(
        datamodule.dataset_id, seed=datamodule.seed, env_id=datamodule.env_id,
        generate_steps=hp.get("generate_steps"), generate_episodes=hp.get("generate_episodes"), **settings,
    )


def fit_dynamics_phase(
    model: ModelBasedSAC,
    datamodule: TransitionDataModule,
    run_dir: Path,
    ckpt_path: Path | None = None,
    accelerator: str = "auto",
    threads: int | str = "auto",
    progress_bar: bool = True,
    log_every_n_steps: int = 50,
) -> Path:
    """Fit `model`'s dynamics model on `datamodule`'s dataset (resuming `ckpt_path` when given), in run_dir/dynamics/,
    and hand it to `model`; returns the checkpoint that holds the fitted model (`model.dynamics_checkpoint` of later
    runs may name it)."""
    checkpoints = phase_checkpoint_dir(run_dir)
    if ckpt_path is not None:
        saved = read_checkpoint(ckpt_path, map_location="cpu").get("dynamics_fit") or {}
        if saved.get("finished") and saved.get("fitted_dynamics"):  # stopped after the fit ended, before SAC's first checkpoint
            model.use_fitted_dynamics(saved["fitted_dynamics"])
            print(f"offrl: the dynamics fit in {run_dir / PHASE_FOLDER} had ended; SAC starts on its model", file=sys.stderr)
            return Path(ckpt_path)
    fit, settings = model.dynamics_fit()
    checkpoint = ModelCheckpoint(
        dirpath=checkpoints, filename="best", monitor="dynamics/best_holdout_mse", save_top_k=1, save_last=True,
        every_n_epochs=1, enable_version_counter=False,
    )
    callbacks = [checkpoint, StopCheckpoint(), UpdateLoop(compile=False, threads=threads), FiniteLosses()]
    if progress_bar:
        callbacks.append(UpdateProgressBar())
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_epochs=-1, max_steps=-1, num_sanity_val_steps=0,
        logger=TensorBoardLogger(run_dir, name="", version=PHASE_FOLDER, default_hp_metric=False),
        callbacks=callbacks, enable_progress_bar=progress_bar, enable_model_summary=False,
        log_every_n_steps=log_every_n_steps,
    )
    trainer.strategy.checkpoint_io = AtomicCheckpointIO()
    if trainer.is_global_zero:
        doing = f"resuming the dynamics fit from {ckpt_path}" if ckpt_path else f"fitting the dynamics model first, in {run_dir / PHASE_FOLDER}"
        print(f"offrl: {doing}", file=sys.stderr)
    trainer.fit(fit, window_data(datamodule, settings), ckpt_path=ckpt_path)
    if not fit.finished:
        raise OffrlError(f"the dynamics fit in {run_dir / PHASE_FOLDER} stopped before its early stopping ended it; continue it with --ckpt_path last")
    model.use_fitted_dynamics({name: tensor.cpu() for name, tensor in fit.fitted_dynamics.items()})
    if trainer.is_global_zero:
        print(f"offrl: dynamics model fitted in {fit.epochs} epochs ({trainer.global_step} updates), best hold-out "
              f"MSE {float(fit.best_errors.mean()):.4g}; {checkpoints / 'last.ckpt'} holds it", file=sys.stderr)
    return checkpoints / "last.ckpt"
