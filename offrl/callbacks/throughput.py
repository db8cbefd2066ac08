"""`perf/updates_per_s` (gradient updates per second, over each window of updates) and `UpdateLoop` (how the
training loop runs every algorithm's update)."""

from __future__ import annotations

import time
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

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


# performance.compile auto compiles CPU runs of at least this many updates. On a 2-core CPU at the paper sizes the
# one-graph update saves 0.6-2.6 ms per update (IQL+AWR, TD3+BC, BC) and compiles in 9-26 s with inductor's caches
# off, so it has repaid itself well before this (benchmarks/README.md, 2026-12-03 evening).
AUTO_COMPILE_MIN_UPDATES = 100_000


class UpdateLoop(L.Callback):
    """How the training loop runs every algorithm's update (OfflineAlgorithm.update): several updates per trainer
    step, and opt-in `torch.compile` and/or CUDA-graph capture of the whole update (forward, backward, optimiser
    steps). Batches keep one shape, so one graph serves every step of a training stage."""

    def __init__(self, updates_per_step: int = 1, compile: bool | Literal["auto"] = "auto", cuda_graphs: bool = False):
        """
        Args:
            updates_per_step: updates (each on a fresh batch) per trainer step; more spreads the trainer's
                per-step hooks over several updates. data.steps_per_epoch, checkpoint.every_n_train_steps and
                trainer.log_every_n_steps (all counted in updates) must be multiples of it.
            compile: compile the whole update as one torch.compile graph (one device); auto: on for CPU runs
                of at least AUTO_COMPILE_MIN_UPDATES updates on one process where a C++ compiler is installed.
            cuda_graphs: capture the update as one CUDA graph and replay it (cuda devices only).
        """
        if updates_per_step < 1:
            raise OffrlError(f"performance.updates_per_step must be a positive integer, got {updates_per_step}")
        if compile not in (True, False, "auto"):
            raise OffrlError(f"performance.compile must be true, false or auto, got {compile!r}")
        self.updates_per_step = updates_per_step
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.compiles = compile is True  # what `compile` means for this fit (auto decided in setup)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if self.cuda_graphs and trainer.world_size > 1:
            raise OffrlError("performance.cuda_graphs works on one device (a replayed graph skips DDP's gradient hooks); set it false")
        if self.compile is True and trainer.world_size > 1:
            raise OffrlError("performance.compile works on one device (its one-graph update computes gradients past DDP's all-reduce hooks); set it false")
        self.compiles = self.compile is True or (self.compile == "auto" and self.auto_compiles(trainer))
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
        pl_module.accelerate_update(self.compiles, self.cuda_graphs)

    @staticmethod
    def auto_compiles(trainer: L.Trainer) -> bool:
        """performance.compile auto: on for a long CPU run on one process, where inductor finds its C++ compiler
        (not measured on a GPU, where performance.cuda_graphs is the way to a faster update)."""
        reasons = []
        if trainer.strategy.root_device.type != "cpu":
            reasons.append(f"the device is {trainer.strategy.root_device.type}")
        if trainer.world_size > 1:
            reasons.append(f"{trainer.world_size} processes train")
        if not 0 < AUTO_COMPILE_MIN_UPDATES <= trainer.max_steps:
            reasons.append(f"trainer.max_steps {trainer.max_steps} is under {AUTO_COMPILE_MIN_UPDATES}")
        if not reasons and not has_inductor_cpp_compiler():
            reasons.append("inductor finds no C++ compiler (install g++)")
        rank_zero_info(f"performance.compile auto: {'off, since ' + '; '.join(reasons) if reasons else 'on (a long CPU run)'}")
        return not reasons


def has_inductor_cpp_compiler() -> bool:
    """Whether torch.compile's CPU backend finds the C++ compiler it builds its kernels with."""
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception:  # inductor's InvalidCxxCompiler, or a broken toolchain
        return False
    return True
