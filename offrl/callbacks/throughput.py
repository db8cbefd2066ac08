"""`perf/updates_per_s` (gradient updates per second, over each window of updates) and `UpdateLoop` (how the
training loop runs every algorithm's update)."""

from __future__ import annotations

import time
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from offrl import lightning_adapter
from offrl.cpu_threads import OtherWorkMeter, ThreadChoice, auto_threads, choose_threads, usable_cpus
from offrl.data.replay import ReplayDataModule
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


# How often an `auto` run looks again at the work beside it: long enough to average over bursts, short beside the
# minutes a collapse would cost. The first look comes sooner: runs started together each saw the others still
# starting (idle) when they chose.
THREAD_FIRST_CHECK_SECONDS = 5.0
THREAD_CHECK_SECONDS = 30.0

# performance.compile auto compiles CPU runs of at least this many updates: at the paper sizes the one-graph
# update's saving per update repays its compile time well before this (measured in benchmarks/README.md).
AUTO_COMPILE_MIN_UPDATES = 100_000
# Updates per trainer step of an offline run when performance.updates_per_step is auto: Lightning's per-step work
# spread over this many updates (the numbers are those of one update per step).
AUTO_UPDATES_PER_STEP = 10


def updates_per_step(setting: int | Literal["auto"], offline: bool, cadences: list[int]) -> int:
    """performance.updates_per_step as a run uses it: auto is AUTO_UPDATES_PER_STEP for an offline run whose every
    cadence (updates between evaluations, logs, checkpoints, the module's own work) is a multiple of it, else 1."""
    if setting != "auto":
        return setting
    return AUTO_UPDATES_PER_STEP if offline and all(every % AUTO_UPDATES_PER_STEP == 0 for every in cadences) else 1


class UpdateLoop(L.Callback):
    """How the training loop runs every algorithm's update (OfflineAlgorithm.update): several updates per trainer
    step, opt-in `torch.compile` and/or CUDA-graph capture of the whole update (forward, backward, optimiser
    steps), and the process's CPU threads (offrl.cpu_threads). Batches keep one shape, so one graph serves every step
    of a training stage."""

    def __init__(
        self,
        updates_per_step: int | Literal["auto"] = "auto",
        compile: bool | Literal["auto"] = "auto",
        cuda_graphs: bool = False,
        threads: int | Literal["auto"] = "auto",
    ):
        """
        Args:
            updates_per_step: updates (each on a fresh batch) per trainer step; more spreads the trainer's
                per-step hooks over several updates. data.steps_per_epoch, checkpoint.every_n_train_steps and
                trainer.log_every_n_steps (all counted in updates) must be multiples of it. auto:
                AUTO_UPDATES_PER_STEP for an offline run whose cadences are all multiples of it, else 1 (an online
                run takes an env step between updates).
            compile: compile the whole update as one torch.compile graph (one device); auto: on for CPU runs
                of at least AUTO_COMPILE_MIN_UPDATES updates on one process where a C++ compiler is installed.
            cuda_graphs: capture the update as one CUDA graph and replay it (cuda devices only).
            threads: torch's CPU threads in each process; auto: the process's share of the CPUs it may use, no more
                than other work leaves idle. OMP_NUM_THREADS or MKL_NUM_THREADS, when set, win. A run keeps its
                count for life and a resumed run takes it again (the count changes the numbers in the last bits).
        """
        if updates_per_step != "auto" and not (isinstance(updates_per_step, int) and not isinstance(updates_per_step, bool) and updates_per_step >= 1):
            raise OffrlError(f"performance.updates_per_step must be a positive integer or auto, got {updates_per_step!r}")
        if compile not in (True, False, "auto"):
            raise OffrlError(f"performance.compile must be true, false or auto, got {compile!r}")
        if threads != "auto" and not (isinstance(threads, int) and not isinstance(threads, bool) and threads > 0):
            raise OffrlError(f"performance.threads must be a positive integer or auto, got {threads!r}")
        self.threads = threads
        self.thread_choice: ThreadChoice | None = None  # decided at setup
        self.recorded_threads: int | None = None  # the count a resumed run's checkpoint was made with
        self.other_work: OtherWorkMeter | None = None  # watches the machine while an auto run has threads to give
        self.next_thread_check = 0.0
        self.updates_per_step = updates_per_step
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        self.compiles = compile is True  # what `compile` means for this fit (auto decided in setup)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.cuda_graphs and trainer.world_size > 1:
            raise OffrlError("performance.cuda_graphs works on one device (a replayed graph skips DDP's gradient hooks); set it false")
        if stage == "fit" and self.compile is True and trainer.world_size > 1:
            raise OffrlError("performance.compile works on one device (its one-graph update computes gradients past DDP's all-reduce hooks); set it false")
        self.thread_choice = choose_threads(self.threads, processes=trainer.num_devices)
        self.thread_choice.apply()
        rank_zero_info(self.thread_choice.sentence())
        if stage != "fit":
            return
        self.compiles = self.compile is True or (self.compile == "auto" and self.auto_compiles(trainer))
        datamodule = trainer.datamodule
        # Everything that happens every N updates starts on a trainer step, so N must be a multiple of K.
        cadences = [("data.steps_per_epoch", datamodule.steps_per_epoch), ("trainer.log_every_n_steps", trainer.log_every_n_steps)]
        cadences += [("checkpoint.every_n_train_steps", lightning_adapter.checkpoint_interval(c)) for c in trainer.checkpoint_callbacks]
        cadences += list(pl_module.update_cadences().items())
        per_step = updates_per_step(self.updates_per_step, not isinstance(datamodule, ReplayDataModule), [every for _, every in cadences])
        for name, every in cadences:
            if every % per_step:
                raise OffrlError(f"{name} {every} must be a multiple of performance.updates_per_step {per_step}")
        datamodule.updates_per_step = per_step

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.resume_thread_count()
        pl_module.accelerate_update(self.compiles, self.cuda_graphs)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        choice = self.thread_choice
        if choice is not None and choice.automatic and choice.threads > 1:
            self.other_work = OtherWorkMeter()
            self.next_thread_check = time.monotonic() + THREAD_FIRST_CHECK_SECONDS

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.other_work is not None and time.monotonic() >= self.next_thread_check:
            self.give_back_threads(trainer.global_step, trainer.num_devices)

    def give_back_threads(self, step: int, processes: int) -> None:
        """Fewer threads when other work started beside this auto run leaves it fewer idle CPUs than it has
        threads (a parallel op waits for its slowest thread, so more threads than idle CPUs run slower)."""
        self.next_thread_check = time.monotonic() + THREAD_CHECK_SECONDS
        busy = self.other_work.read()
        threads = auto_threads(usable_cpus(), processes, busy)
        if busy is None or threads >= self.thread_choice.threads:
            return
        before = self.thread_choice.threads
        self.thread_choice = ThreadChoice(threads, f"other work now keeps {busy:.1f} CPUs busy", automatic=True)
        self.thread_choice.apply()
        rank_zero_info(
            f"{self.thread_choice.sentence()} from update {step}, down from {before}; the numbers from here differ in "
            f"the last bits from a run that kept {before} (set performance.threads to keep one count)"
        )
        if threads == 1:
            self.other_work = None  # nothing left to give back

    def resume_thread_count(self) -> None:
        """A resumed auto run computes with the thread count its checkpoint was made with, so it repeats the numbers
        of a run that never stopped; only when other work now leaves fewer CPUs idle does it take fewer, and says so."""
        choice, recorded = self.thread_choice, self.recorded_threads
        if choice is None or recorded is None or recorded == choice.threads or not choice.automatic:
            return
        if recorded < choice.threads:
            self.thread_choice = ThreadChoice(recorded, "the count this run's checkpoint was made with")
            rank_zero_info(self.thread_choice.sentence())
        else:
            rank_zero_info(
                f"offrl: the checkpoint was made with {recorded} CPU threads but other work leaves this process "
                f"{choice.threads}; the numbers will differ in the last bits from a run that never stopped "
                f"(set --performance.threads {recorded} to keep them)"
            )
        self.thread_choice.apply()

    def state_dict(self) -> dict[str, int]:
        return {"threads": self.thread_choice.threads} if self.thread_choice is not None else {}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.recorded_threads = state_dict.get("threads")

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
