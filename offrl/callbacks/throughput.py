"""`perf/updates_per_s` (gradient updates per second, over each window of updates) and `UpdateLoop` (how the
training loop runs every algorithm's update)."""

from __future__ import annotations

import time

import lightning as L
import torch

from offrl import lightning_adapter
from offrl.errors import OffrlError


class UpdateThroughput(L.Callback):
    def __init__(self, window: int = 100):
        """
        Args:
            window: updates per measurement (rounded up to whole trainer steps).
        """
        self.window = window
        self.start: float | None = None
        self.start_step = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is None:  # the first step pays for warm-up; time from its end
            self.start, self.start_step = time.perf_counter(), trainer.global_step
            return
        updates = trainer.global_step - self.start_step  # a trainer step may run several updates (UpdateLoop)
        if updates >= self.window:
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize(pl_module.device)
            rate = updates / (time.perf_counter() - self.start)
            pl_module.log_now({"perf/updates_per_s": rate})
            self.start, self.start_step = time.perf_counter(), trainer.global_step


class UpdateLoop(L.Callback):
    """How the training loop runs every algorithm's update (OfflineAlgorithm.update): several updates per trainer
    step, and opt-in `torch.compile` and/or CUDA-graph capture of the whole update (forward, backward, optimiser
    steps). Batches keep one shape, so one graph serves every step of a training stage."""

    def __init__(self, updates_per_step: int = 1, compile: bool = False, cuda_graphs: bool = False):
        """
        Args:
            updates_per_step: updates (each on a fresh batch) per trainer step; more spreads the trainer's
                per-step hooks over several updates. data.steps_per_epoch, checkpoint.every_n_train_steps and
                trainer.log_every_n_steps (all counted in updates) must be multiples of it.
            compile: compile the whole update as one torch.compile graph (one device).
            cuda_graphs: capture the update as one CUDA graph and replay it (cuda devices only).
        """
        if updates_per_step < 1:
            raise OffrlError(f"performance.updates_per_step must be a positive integer, got {updates_per_step}")
        self.updates_per_step = updates_per_step
        self.compile = compile
        self.cuda_graphs = cuda_graphs

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.cuda_graphs and trainer.world_size > 1:
            raise OffrlError("performance.cuda_graphs works on one device (a replayed graph skips DDP's gradient hooks); set it false")
        if self.compile and trainer.world_size > 1:
            raise OffrlError("performance.compile works on one device (its one-graph update computes gradients past DDP's all-reduce hooks); set it false")
        datamodule, per_step = trainer.datamodule, self.updates_per_step
        # Everything that happens every N updates starts on a trainer step, so N must be a multiple of K.
        cadences = [("data.steps_per_epoch", datamodule.steps_per_epoch), ("trainer.log_every_n_steps", trainer.log_every_n_steps)]
        cadences += [("checkpoint.every_n_train_steps", lightning_adapter.checkpoint_interval(c)) for c in trainer.checkpoint_callbacks]
        cadences += list(pl_module.update_cadences().items())
        for name, every in cadences:
            if every % per_step:
                raise OffrlError(f"{name} {every} must be a multiple of performance.updates_per_step {per_step}")
        datamodule.updates_per_step = per_step

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.accelerate_update(self.compile, self.cuda_graphs)
