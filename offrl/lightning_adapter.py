"""The Lightning trainer state offrl reads or sets that Lightning does not make public, in one place.

Each function names what offrl needs; its body is the private attribute it takes, as of the Lightning versions in
SUPPORTED_LIGHTNING (pyproject pins the same range). tests/test_lightning_adapter.py checks every one of them on a
real Trainer, so that a Lightning release that moves one fails there, not in the middle of a run.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.core.optimizer import LightningOptimizer

SUPPORTED_LIGHTNING = ("2.6", "2.7")  # [from, to): the versions this module was checked against


def logging_step(trainer: L.Trainer) -> int:
    """The step loggers write at: trainer steps that stepped an optimiser (offrl counts every update in it)."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def add_logging_steps(trainer: L.Trainer, updates: int) -> None:
    """Advance the logging step by `updates` more updates than the one trainer step Lightning counts."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += updates


def logs_due(trainer: L.Trainer) -> bool:
    """Whether Lightning writes logs at this step (trainer.log_every_n_steps); values logged on other steps are dropped."""
    return trainer._logger_connector.should_update_logs


def count_update(optimizer: LightningOptimizer) -> None:
    """Count one global step for an update that stepped the torch optimisers directly (manual optimisation counts
    a step per LightningOptimizer.step, which a compiled or graphed update cannot call)."""
    optimizer._on_before_step()
    optimizer._on_after_step()


def request_stop(trainer: L.Trainer) -> None:
    """Ask the trainer to stop after this step, as a SIGTERM does (it then raises SIGTERMException)."""
    trainer._signal_connector.received_sigterm = True


def last_saved_step(checkpoint: ModelCheckpoint) -> int:
    """The global step of the checkpoint callback's most recent save (0 before any)."""
    return checkpoint._last_global_step_saved


def checkpoint_interval(checkpoint: ModelCheckpoint) -> int:
    """The callback's every_n_train_steps (0: not step-based)."""
    return checkpoint._every_n_train_steps or 0
