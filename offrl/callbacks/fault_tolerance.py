"""Runs that survive interruptions and stop on bad numbers.

`StopCheckpoint`: SIGTERM (Lightning's own handler) or a first Ctrl-C asks the loop to stop after the current
update; the stop is turned into `last.ckpt`, which `--ckpt_path last` resumes. The global torch (CPU and CUDA),
numpy and Python RNG states of every rank travel in every checkpoint, so a resumed run draws the same numbers as
one that never stopped. A killed process keeps its last periodic checkpoint (its unfinished write is removed when
the run starts again); a stop whose checkpoint the disk refuses still exits as asked, naming the checkpoint kept.

`FiniteLosses`: a non-finite `train/*` loss stops training with the loss's name and step, and no checkpoint
is ever written from a non-finite state, so the last good one stays.
"""

from __future__ import annotations

import random
import signal
import sys
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.distributed as dist
from lightning.pytorch.utilities.exceptions import SIGTERMException

from offrl import lightning_adapter
from offrl.checkpoints import remove_abandoned_temporaries
from offrl.errors import OffrlError
from offrl.processes import gather_ranks, own_rank


def rng_states() -> dict[str, Any]:
    """The global RNG states, as tensors and plain numbers (checkpoints load with torch.load(weights_only=True))."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached_gaussian)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    keys = numpy["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, numpy["position"], numpy["has_gauss"], numpy["cached_gaussian"]))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class StopCheckpoint(L.Callback):
    """SIGTERM or Ctrl-C during fit: finish the update, save `last.ckpt`, exit with 128 + the signal number.

    Lightning already turns SIGTERM into a stop at the end of an update (its SignalConnector raises
    SIGTERMException there); a first Ctrl-C is routed into the same path, a second one stops at once (and
    keeps only the last periodic checkpoint, since the state may be mid-update).

    With several processes, every rank must stop after the same update, because saving the checkpoint is a
    collective. Lightning's own SIGTERM handler broadcasts from inside the handler, which deadlocks when the signal
    reaches the ranks at different points (Lightning issue 20806), and a rank that sets the stop request itself
    leaves the loop one update before the others. So in a multi-process run the handlers only note the signal, and
    every rank agrees after each trainer step (one all-reduce) whether any was signalled; then all stop there.
    """

    def __init__(self) -> None:
        self.stop_signal = signal.SIGTERM
        self._previous_handlers: dict[int, Any] = {}
        self._signalled = 0  # the signal a multi-process run was sent and has not yet agreed on; 0 for none
        self._rng_to_restore: dict[str, Any] | None = None

    # -- stopping ----------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # a process killed mid-write left its temporary checkpoint file
            remove_abandoned_temporaries(self.last_checkpoint_path(trainer).parent)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._rng_to_restore is not None:
            # Applied here, after the data loaders exist, at the same point of the loop as when it was saved.
            saved = self._rng_to_restore
            if "ranks" not in saved:  # a single-process checkpoint holding the states themselves
                saved = {"world_size": 1, "ranks": [saved]}
            set_rng_states(own_rank(saved, trainer))
            self._rng_to_restore = None
        checkpoint, last = trainer.checkpoint_callback, self.last_checkpoint_path(trainer)
        if checkpoint is not None and trainer.ckpt_path is not None and Path(trainer.ckpt_path) == last:
            # Resuming from last.ckpt: keep writing it, even when a changed ModelCheckpoint config dropped its state
            # (which would otherwise make it write last-v1.ckpt beside a stale last.ckpt).
            checkpoint.last_model_path = str(last)
        handlers = {signal.SIGINT: self._on_sigint(trainer)}
        if trainer.world_size > 1:
            handlers[signal.SIGTERM] = self._on_sigterm_of_a_rank
        for signum, handler in handlers.items():
            try:
                self._previous_handlers[signum] = signal.signal(signum, handler)
            except ValueError:  # not the main thread: leave the signals to Lightning
                break

    def _on_sigint(self, trainer: L.Trainer):
        def handler(signum: int, frame: Any) -> None:
            if trainer.received_sigterm or self._signalled:
                raise KeyboardInterrupt
            self.stop_signal = signal.SIGINT
            if trainer.world_size > 1:
                self._signalled = int(signal.SIGINT)
            else:
                lightning_adapter.request_stop(trainer)  # Lightning's own stop request, as SIGTERM sets it
            if trainer.is_global_zero:
                print("offrl: stopping after this update to save a checkpoint (Ctrl-C again stops at once)", file=sys.stderr)

        return handler

    def _on_sigterm_of_a_rank(self, signum: int, frame: Any) -> None:
        self._signalled = self._signalled or int(signum)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return
        # Every rank learns whether any was signalled, at the same update, and all stop after it.
        signalled = torch.tensor([self._signalled], device=pl_module.device)
        dist.all_reduce(signalled, op=dist.ReduceOp.MAX)
        if signalled.item():
            self.stop_signal = signal.Signals(int(signalled.item()))
            lightning_adapter.request_stop(trainer)

    def _restore_signal_handlers(self) -> None:
        for signum, previous in self._previous_handlers.items():
            signal.signal(signum, previous)
        self._previous_handlers = {}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_signal_handlers()
        # ModelCheckpoint leaves last.ckpt at the last periodic save when a run ends between two of them; the
        # finished run's last.ckpt holds its final state.
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.save_last and trainer.global_step != lightning_adapter.last_saved_step(checkpoint):
            path = self.last_checkpoint_path(trainer)
            checkpoint.last_model_path = str(path)
            trainer.save_checkpoint(path)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_signal_handlers()
        if not isinstance(exception, SIGTERMException):
            return
        # Raised by the loop between two updates, so the state is whole: save it where `--ckpt_path last` looks.
        path = self.last_checkpoint_path(trainer)
        if trainer.checkpoint_callback is not None:
            # Saved as ModelCheckpoint's own last.ckpt, so the resumed run overwrites it instead of adding last-v1.ckpt.
            trainer.checkpoint_callback.last_model_path = str(path)
        exception.code = 128 + int(self.stop_signal)
        stopped = f"offrl: stopped by {signal.Signals(self.stop_signal).name} after update {trainer.global_step}"
        try:
            trainer.save_checkpoint(path)
        except OffrlError as err:  # a full or read-only disk: the stop still ends as asked, and says what is kept
            if trainer.is_global_zero:
                print(f"{stopped} as asked, but {err}", file=sys.stderr)
            return
        if trainer.is_global_zero:
            print(f"{stopped}; saved {path} (continue with --ckpt_path last)", file=sys.stderr)

    @staticmethod
    def last_checkpoint_path(trainer: L.Trainer) -> Path:
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and checkpoint.dirpath is not None:
            return Path(checkpoint.dirpath) / f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"

    # -- RNG states in checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # Every rank's: the ranks' streams part (rank 0 alone draws for evaluation), and each goes on with its own.
        return {"rng": gather_ranks(rng_states())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # The logs up to a checkpoint reach the disk with it, so a killed run loses neither.
        for logger in trainer.loggers:
            flush = getattr(logger.experiment, "flush", None)
            if callable(flush):
                flush()


def returned_losses(outputs: Any) -> dict[str, torch.Tensor]:
    """The losses a training step returned, by metric name: OfflineAlgorithm.update's {name: loss} as train/<name>,
    or an automatic-optimisation step's single loss; none for steps that return nothing."""
    if isinstance(outputs, torch.Tensor):
        return {"the training loss": outputs}
    if not isinstance(outputs, dict):
        return {}
    if isinstance(outputs.get("loss"), torch.Tensor):
        return {"the training loss": outputs["loss"]}
    return {f"train/{name}": loss for name, loss in outputs.items() if isinstance(loss, torch.Tensor)}


class FiniteLosses(L.Callback):
    """Stop at a non-finite `train/*` loss, naming it and the update step.

    Each update folds `isfinite` of the step's returned losses into device tensors (no host sync; modules that write
    their own training step may return none). The logged `train/*` values are read at the logging interval, where Lightning syncs
    anyway to write the scalars, and before every checkpoint save, so a checkpoint never holds a state that came
    after a non-finite loss. (`trainer.callback_metrics` is not read every step: it converts progress-bar metrics
    to Python numbers, a host sync.)
    """

    def __init__(self, check_every_n_steps: int | None = None):
        """
        Args:
            check_every_n_steps: read the losses every this many updates (default: trainer.log_every_n_steps).
        """
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise OffrlError(f"finite_losses.check_every_n_steps must be a positive integer, got {check_every_n_steps}")
        self.check_every_n_steps = check_every_n_steps
        self.first_bad_step: torch.Tensor | None = None  # the first update whose returned loss was non-finite, else -1
        self.bad_losses: torch.Tensor | None = None  # flags per returned loss at that update
        self.loss_names: list[str] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # the update just made
        losses = returned_losses(outputs)
        if losses:
            flags = ~torch.isfinite(torch.stack([loss.detach() for loss in losses.values()]))  # scalar losses
            if self.first_bad_step is None or self.loss_names != list(losses):
                self.first_bad_step = torch.tensor(-1, device=flags.device)
                self.bad_losses = torch.zeros_like(flags)
                self.loss_names = list(losses)
            new = flags.any() & (self.first_bad_step < 0)
            self.first_bad_step = torch.where(new, step, self.first_bad_step)
            self.bad_losses = torch.where(new, flags, self.bad_losses)  # which losses, at that first update
        every = self.check_every_n_steps or trainer.log_every_n_steps or 1
        if step % every == 0:
            self.check(trainer)

    def check(self, trainer: L.Trainer) -> None:
        first = -1 if self.first_bad_step is None else int(self.first_bad_step)
        if first >= 0:
            bad = [name for name, flag in zip(self.loss_names, self.bad_losses.tolist()) if flag]
        else:
            bad = [
                name
                for name, value in trainer.callback_metrics.items()
                if name.startswith("train/") and isinstance(value, torch.Tensor) and not torch.isfinite(value).all()
            ]
        if first < 0 and not bad:
            return
        when = f"at update {first}" if first >= 0 else f"by update {trainer.global_step}"
        kept = StopCheckpoint.last_checkpoint_path(trainer)
        kept_note = f"the last good checkpoint {kept} is kept" if kept.is_file() else "no checkpoint was written"
        raise OffrlError(
            f"{', '.join(bad) or 'the training loss'} became non-finite {when}, so training stopped; {kept_note} "
            "(lower model.lr or check the data)"
        )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self.check(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.check(trainer)
