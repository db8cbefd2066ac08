"""offrl.lightning_adapter's private Lightning state, on a real Trainer of the installed Lightning: if a release
moves one, this fails first (and names it), not a run."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException
from packaging.version import Version

from conftest import write_synthetic
from offrl import lightning_adapter as adapter
from offrl.algos.bc import BC
from offrl.callbacks.throughput import UpdateLoop
from offrl.data.datamodules import TransitionDataModule

DATASET = "test/lightning_adapter/hopper-v0"


@pytest.fixture(scope="module")
def dataset() -> str:
    write_synthetic(DATASET, [50] * 4)
    return DATASET


class Probe(L.Callback):
    """Records the adapter's readings after every trainer step, and asks for a stop after update `stop_at`."""

    def __init__(self, stop_at: int):
        self.stop_at, self.seen = stop_at, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        checkpoint = trainer.checkpoint_callback
        self.seen.append((trainer.global_step, adapter.logging_step(trainer), adapter.last_saved_step(checkpoint)))
        if trainer.global_step == self.stop_at:
            adapter.request_stop(trainer)


def test_installed_lightning_is_a_supported_version():
    low, high = map(Version, adapter.SUPPORTED_LIGHTNING)
    assert low <= Version(L.__version__) < high, f"lightning {L.__version__}: check offrl/lightning_adapter.py, then widen the range"


def test_every_private_reading_and_setting_behaves_as_offrl_relies_on(dataset, in_tmp_dir):
    checkpoint = ModelCheckpoint(dirpath=in_tmp_dir / "ckpt", every_n_train_steps=4, save_last=True)
    probe = Probe(stop_at=10)
    trainer = L.Trainer(
        max_steps=40, accelerator="cpu", logger=CSVLogger(in_tmp_dir), log_every_n_steps=2, enable_progress_bar=False,
        limit_val_batches=0, callbacks=[checkpoint, UpdateLoop(updates_per_step=2), probe], enable_model_summary=False,
    )
    assert adapter.checkpoint_interval(checkpoint) == 4 and adapter.last_saved_step(checkpoint) == 0
    with pytest.raises(SIGTERMException):  # request_stop stops the run after that step, as a SIGTERM would
        trainer.fit(BC(hidden_dims=[8]), TransitionDataModule(dataset, batch_size=8, steps_per_epoch=20))
    # Two updates per trainer step, each counted by count_update; the logging step counts updates too
    # (add_logging_steps: one behind at on_train_batch_end, as Lightning counts its own step once the hooks are
    # done), and the checkpoint's last save follows every 4 updates (ModelCheckpoint runs after the other
    # callbacks, so the probe sees a step's save at the next step).
    assert probe.seen == [(2, 1, 0), (4, 3, 0), (6, 5, 4), (8, 7, 4), (10, 9, 8)]
    assert trainer.global_step == 10


def test_logs_due_follows_log_every_n_steps(dataset, in_tmp_dir):
    due = []

    class Due(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            due.append(adapter.logs_due(trainer))

    trainer = L.Trainer(
        max_steps=6, accelerator="cpu", logger=CSVLogger(in_tmp_dir), log_every_n_steps=3, enable_progress_bar=False,
        limit_val_batches=0, callbacks=[Due()], enable_checkpointing=False, enable_model_summary=False,
    )
    trainer.fit(BC(hidden_dims=[8]), TransitionDataModule(dataset, batch_size=8, steps_per_epoch=6))
    assert due == [False, False, True, False, False, True]
