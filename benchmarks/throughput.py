"""Gradient updates per second of an offrl algorithm inside a real `Trainer.fit`, and of a plain-PyTorch loop
doing the same math, in one process, after warm-up. The last stdout line is JSON with both figures and the ratio.

    python benchmarks/throughput.py --algo bc --device cpu [--compile] [--cudagraphs] [--steps 500]

The model and data come from the algorithm's config in configs/ (paper-size networks and batch), on a small
locally generated dataset (timing does not depend on the dataset's size). The offrl run is the module as the
`offrl fit` command runs it: the DataModule samples each batch on the device, losses are logged (TensorBoard,
every `--log-every` steps), `perf/updates_per_s` is measured, non-finite losses are watched, no progress bar, no
evaluation or checkpoints. The plain loop calls the same networks, loss functions, optimisers and on-device
sampler without Lightning. `--repeats` offrl/plain pairs run back to back and the median pair is reported; with
`--compile`/`--cudagraphs` each repeat also times the eager plain loop, for the speed-up and the compile time.

The yardstick is the machine: the update's FLOPs are counted by torch.utils.flop_counter.FlopCounterMode on one
eager update, and this process measures its own matmul peak (a 2048 x 2048 float32 matmul at the same thread
count, before and after the timings, the higher kept); `fraction_of_matmul_peak` is the offrl loop's achieved
FLOP rate over that peak. On a CPU, `matmul_share_of_eager_update` is the eager plain update's time in matmul
kernels (torch.profiler) over its wall time, and `speedup_bound_with_matmuls_unchanged` its inverse: the most
compiling everything else can give;
`matmul_kernels_fraction_of_peak` is the update's FLOPs over its time in those kernels alone, over the peak: the
most of the peak any compiler that keeps the same matmul kernels can reach.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import yaml

from offrl.algos.base import OfflineAlgorithm
from offrl.algos.compiled import accelerated, prepare_optimizers_for_capture
from offrl.callbacks.fault_tolerance import FiniteLosses, StopCheckpoint
from offrl.cli.dynamics import fit_dynamics_phase, needs_dynamics_fit
from offrl.callbacks.throughput import UpdateLoop, UpdateThroughput, updates_per_step

ROOT = Path(__file__).resolve().parent.parent
HOPPER = "offrl/mujoco/hopper/random-v0"  # uniform actions: generated in seconds, Hopper's 11/3 dims
MAZE = "offrl/pointmaze/umaze-v0"  # goal task with the maze recipe's dims, for the goal-conditioned planner
DATASET_STEPS = 20_000

# algorithm -> (config giving its networks, batch size and optimisers; small dataset it is timed on).
ALGORITHMS = {
    "bc": ("configs/bc/hopper-medium.yaml", HOPPER),
    "iql_awr": ("configs/iql/hopper-medium.yaml", HOPPER),  # IQL = IQL value + AWR
    "iql_ddpgbc": ("configs/iql_ddpgbc/hopper-medium.yaml", HOPPER),
    "td3bc": ("configs/td3bc/hopper-medium.yaml", HOPPER),
    "sarsa_ddpgbc": ("configs/sarsa_ddpgbc/hopper-medium.yaml", HOPPER),
    "crl_ddpgbc": ("configs/crl_ddpgbc/pointmaze-umaze.yaml", MAZE),
    "rsp": ("configs/rsp/pointmaze-large.yaml", MAZE),
    "admpo_off": ("configs/admpo_off/hopper-medium.yaml", HOPPER),
    "mopo": ("configs/mopo/hopper-medium.yaml", HOPPER),
}


def instantiate(spec: dict, **overrides):
    module_name, class_name = spec["class_path"].rsplit(".", 1)
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(**{**spec.get("init_args", {}), **overrides})


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall time and this process's CPU time (all its threads): on a shared CPU machine the CPU time is what the
    loop itself costs, unaffected by other processes' load."""

    def __init__(self, device: torch.device):
        self.device = device
        self.wall = self.cpu = 0.0
        self.warmup_wall = 0.0  # time_plain's warm-up (with compile: every phase's compilation)

    def start(self) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def stop(self) -> None:
        synchronize(self.device)
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class StepTimer(L.Callback):
    """Times `steps` whole training steps (fetch, on-device sampling, update, logging) after `warmup`, then stops."""

    def __init__(self, warmup: int, steps: int):
        self.warmup, self.steps = warmup, steps
        self.clock: Clock | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self.clock = Clock(pl_module.device)
            self.clock.start()
        elif trainer.global_step == self.warmup + self.steps:
            self.clock.stop()
            trainer.should_stop = True


def time_offrl(model: OfflineAlgorithm, datamodule, args, log_dir: str, max_steps: int) -> Clock:
    forget_compiled_graphs()
    timer = StepTimer(args.warmup, args.steps)
    trainer = L.Trainer(
        accelerator="gpu" if args.device == "cuda" else "cpu",
        devices=1,
        max_steps=max_steps,
        default_root_dir=log_dir,  # where StopCheckpoint saves if the timing is interrupted
        logger=L.pytorch.loggers.TensorBoardLogger(log_dir, name="throughput", default_hp_metric=False),
        log_every_n_steps=args.log_every,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        # The per-step callbacks `offrl fit` runs by default (no evaluation or checkpoints inside the timing).
        callbacks=[UpdateThroughput(), FiniteLosses(), StopCheckpoint(), UpdateLoop(args.updates_per_step, args.compile, args.cudagraphs), timer],
    )
    if needs_dynamics_fit(model):
        # Its (capped) dynamics fit comes first, untimed, as `offrl fit` runs it.
        fit_dynamics_phase(model, datamodule, Path(log_dir), accelerator="gpu" if args.device == "cuda" else "cpu", progress_bar=False)
    trainer.fit(model, datamodule)
    return timer.clock


def forget_compiled_graphs() -> None:
    """Each timing compiles afresh, as a new process would (inductor's on-disk cache makes that seconds): the graphs
    of earlier timings, built for their own optimisers, would otherwise stay in dynamo's cache ahead of the new ones."""
    torch._dynamo.reset()


def median(items: list, key=None):
    """The middle item (the upper of the two middle ones for an even count): one disturbed repeat does not move it."""
    return sorted(items, key=key)[len(items) // 2]


def fresh_optimizers(model: OfflineAlgorithm) -> tuple[list, list]:
    """New optimisers and schedulers from the module's configure_optimizers, in any of the forms Lightning accepts."""
    configured = model.configure_optimizers()
    if isinstance(configured, dict):
        return [configured["optimizer"]], [configured["lr_scheduler"]["scheduler"]]
    if isinstance(configured, tuple):  # Lightning's ([optimizers], [schedulers])
        return configured
    return (configured if isinstance(configured, list) else [configured]), []


def time_plain(model: OfflineAlgorithm, datamodule, args, compile: bool, cuda_graphs: bool) -> Clock:
    """The reference: the module's plain-PyTorch `update` (its networks, losses, one backward, optimiser steps)
    with fresh optimisers from its own configure_optimizers, batches from the same on-device sampler, in a bare
    loop (no trainer, no hooks, no logging)."""
    forget_compiled_graphs()
    optimizers, schedulers = fresh_optimizers(model)
    if compile or cuda_graphs:
        prepare_optimizers_for_capture(optimizers, model.device)

    # One update function per phase, as the module's update_fn keeps (TD3's delayed actor steps alternate).
    phases = [model.phase_at(update) for update in range(args.warmup + args.steps)]
    updates = {
        phase: accelerated(model, optimizers, phase, compile, cuda_graphs)
        for phase in set(phases)
    }
    batch_size = datamodule.batch_size

    def step(update: int) -> None:
        updates[phases[update]](datamodule.sample(batch_size))
        for scheduler in schedulers:
            scheduler.step()

    warmup = Clock(model.device)
    warmup.start()
    for update in range(args.warmup):
        step(update)
    warmup.stop()
    clock = Clock(model.device)
    clock.start()
    for update in range(args.warmup, args.warmup + args.steps):
        step(update)
    clock.stop()
    clock.warmup_wall = warmup.wall
    return clock


def update_flops(model: OfflineAlgorithm, datamodule, updates: int = 4) -> int:
    """FLOPs of one eager update (forward, backward, optimiser steps) as FlopCounterMode counts them: matmuls and
    convolutions, which is what the matmul peak measures too. The mean over `updates` consecutive updates, so that
    phases count at their share of the timed loop (TD3's actor steps on every second update)."""
    from torch.utils.flop_counter import FlopCounterMode

    optimizers, _ = fresh_optimizers(model)
    batches = [datamodule.sample(datamodule.batch_size) for _ in range(updates)]
    with FlopCounterMode(display=False) as counter:
        for update, batch in enumerate(batches):
            model.update(batch, optimizers, phase=model.phase_at(update))
    return counter.get_total_flops() // updates


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def matmul_seconds_per_update(model: OfflineAlgorithm, datamodule, updates: int = 20) -> float:
    """CPU seconds one eager update spends inside matmul kernels (their self time under torch.profiler, without
    record_shapes, which would inflate the small ops): the part a compiler that keeps the matmuls cannot shrink."""
    from torch.profiler import ProfilerActivity, profile

    optimizers, _ = fresh_optimizers(model)
    batches = [datamodule.sample(datamodule.batch_size) for _ in range(updates + 5)]
    for update, batch in enumerate(batches[:5]):
        model.update(batch, optimizers, phase=model.phase_at(update))
    with profile(activities=[ProfilerActivity.CPU]) as profiler:
        for update, batch in enumerate(batches[5:]):
            model.update(batch, optimizers, phase=model.phase_at(update))
    micros = sum(event.self_cpu_time_total for event in profiler.key_averages() if event.key in MATMUL_OPS)
    return micros / 1e6 / updates


def matmul_peak(device: torch.device, size: int = 2048, repeats: int = 20) -> float:
    """FLOP/s of a size x size float32 matmul on `device` at the current thread count (best of `repeats`)."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGORITHMS), required=True)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the whole update (both loops)")
    parser.add_argument("--cudagraphs", action="store_true", help="capture the whole update as a CUDA graph (both loops)")
    parser.add_argument("--steps", type=int, default=500, help="timed updates")
    parser.add_argument("--warmup", type=int, default=50, help="untimed updates first (compilation, graph capture)")
    parser.add_argument("--batch-size", type=int, help="default: the config's (RSP on cpu: 1024, see --help)")
    parser.add_argument("--hidden-dims", type=int, nargs="+", help="override the config's widths (tiny ones isolate the loop's overhead)")
    parser.add_argument("--log-every", type=int, default=50, help="trainer.log_every_n_steps (the CLI's default)")
    parser.add_argument("--updates-per-step", type=int, help="performance.updates_per_step of the offrl run (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3, help="offrl/plain pairs timed back to back; the median pair is reported")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config_path, dataset_id = ALGORITHMS[args.algo]
    result = {"algo": args.algo, "device": args.device, "compile": args.compile, "cudagraphs": args.cudagraphs}
    if not (ROOT / config_path).is_file():
        print(json.dumps({**result, "status": f"not present ({config_path} does not exist on this branch)"}))
        return

    config = yaml.safe_load((ROOT / config_path).read_text())
    if args.updates_per_step is None:
        setting = UpdateLoop(**(config.get("performance") or {})).updates_per_step
        args.updates_per_step = updates_per_step(setting, offline=True, cadences=[])  # this script sets the cadences
    if args.warmup % args.updates_per_step or args.steps % args.updates_per_step:
        parser.error(f"--warmup and --steps must be multiples of updates_per_step {args.updates_per_step}")
    result["updates_per_step"] = args.updates_per_step
    model_args, data_args = config["model"].get("init_args", {}), config["data"].get("init_args", {})
    batch_size = args.batch_size or data_args.get("batch_size", 256)
    if args.batch_size is None and args.algo == "rsp" and args.device == "cpu":
        batch_size = 1024  # the paper's 16384 x 1024x1024 MLPs take seconds per update on one CPU thread
    timed = args.warmup + args.steps
    overrides, max_steps = {}, timed
    if args.hidden_dims:
        overrides["hidden_dims"] = args.hidden_dims
    if "dynamics_patience" in model_args:
        # Model-based SAC: time the SAC updates on model + real rows. The model's pretraining is capped and the one
        # roll-out round is smaller (neither changes what an update costs) and falls in the warm-up, untimed.
        overrides.update(dynamics_max_epochs=1, dynamics_updates_per_epoch=20, rollout_batch_size=2000)
        overrides["rollout_every"] = (timed // args.updates_per_step + 1) * args.updates_per_step
    if "steps_per_stage" in model_args:  # stage-wise training: time the first stage only
        stage = timed + args.updates_per_step
        overrides["steps_per_stage"] = stage
        max_steps = config["trainer"]["max_steps"] // model_args["steps_per_stage"] * stage

    def make():
        torch.manual_seed(0)
        model = instantiate(config["model"], **overrides)
        datamodule = instantiate(
            config["data"], dataset_id=dataset_id, batch_size=batch_size, steps_per_epoch=max_steps,
            generate_steps=DATASET_STEPS, seed=0,
        )
        return model, datamodule

    os.environ.setdefault("MINARI_DATASETS_PATH", str(Path(tempfile.gettempdir()) / "offrl-benchmark-minari"))
    accelerated_run = args.compile or args.cudagraphs
    # The peak before and after the timings, the higher kept: a neighbour's burst on a shared machine can slow
    # all of one measurement's repeats (62.8 against 87-94 GFLOP/s in one run here).
    peak_before = matmul_peak(torch.device(args.device))
    pairs, eagers = [], []  # (offrl, plain) [and the eager plain loop] timed back to back: the same machine load
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as log_dir:
            model, datamodule = make()
            offrl = time_offrl(model, datamodule, args, log_dir, max_steps)
        # The plain loop runs on the module the trainer built (same networks, same stage); its optimisers are new.
        pairs.append((offrl, time_plain(model, datamodule, args, args.compile, args.cudagraphs)))
        if accelerated_run:
            eagers.append(time_plain(model, datamodule, args, False, False))
    offrl, plain = median(pairs, key=lambda pair: pair[1].wall / pair[0].wall)  # the pair with the median ratio
    result.update(
        {
            "hidden_dims": list(model.hparams.hidden_dims),
            "batch_size": batch_size,
            "dataset": f"{dataset_id} ({DATASET_STEPS} steps)",
            "warmup": args.warmup,
            "steps": args.steps,
            "threads": torch.get_num_threads(),
            "machine": f"{platform.processor() or platform.machine()} / {torch.cuda.get_device_name() if args.device == 'cuda' else 'cpu'}",
            "torch": torch.__version__,
            "load_average": round(os.getloadavg()[0], 2),
            "offrl_updates_per_s": round(args.steps / offrl.wall, 1),
            "plain_updates_per_s": round(args.steps / plain.wall, 1),
            "ratio": round(plain.wall / offrl.wall, 3),
            "offrl_updates_per_cpu_s": round(args.steps / offrl.cpu, 1),
            "plain_updates_per_cpu_s": round(args.steps / plain.cpu, 1),
            "ratio_cpu_time": round(plain.cpu / offrl.cpu, 3),
            "repeats": args.repeats,
            "ratios_of_repeats": [round(p.wall / o.wall, 3) for o, p in pairs],
        }
    )
    if accelerated_run:
        speedups = [eager.wall / offrl_run.wall for (offrl_run, _), eager in zip(pairs, eagers)]
        eager = median(eagers, key=lambda clock: clock.wall)
        result["plain_eager_updates_per_s"] = round(args.steps / eager.wall, 1)
        # The compiled plain loop's warm-up less the eager one's (same updates): compile time with whatever
        # inductor's on-disk cache holds (TORCHINDUCTOR_FORCE_DISABLE_CACHES=1 for a cold figure).
        result["compile_seconds"] = round(plain.warmup_wall - eager.warmup_wall, 1)
        # Median over repeats of (eager plain, same repeat) / offrl: each ratio from one stretch of machine load.
        result["speedup_vs_plain_eager"] = round(median(speedups), 2)
        result["speedups_of_repeats"] = [round(speedup, 2) for speedup in speedups]
    flops, peak_after = update_flops(model, datamodule), matmul_peak(model.device)
    peak = max(peak_before, peak_after)
    result.update(
        {
            "update_mflop": round(flops / 1e6, 1),
            "matmul_peak_gflop_s": round(peak / 1e9, 1),
            "matmul_peaks_before_after_gflop_s": [round(peak_before / 1e9, 1), round(peak_after / 1e9, 1)],
            "achieved_gflop_s": round(flops * args.steps / offrl.wall / 1e9, 1),
            "fraction_of_matmul_peak": round(flops * args.steps / offrl.wall / peak, 3),
        }
    )
    if args.device == "cpu":
        # Amdahl: the eager plain update's share of matmul time bounds what compiling the rest could gain.
        eager_seconds = (eager if accelerated_run else plain).wall / args.steps
        matmul_seconds = matmul_seconds_per_update(model, datamodule)
        share = min(matmul_seconds / eager_seconds, 1.0)
        result["matmul_share_of_eager_update"] = round(share, 3)
        result["speedup_bound_with_matmuls_unchanged"] = round(1 / share, 2)
        # The update's own matmul kernels, at its shapes, against the 2048^2 peak: the fraction of the peak an
        # update whose every other op took no time would reach.
        result["matmul_kernels_fraction_of_peak"] = round(flops / matmul_seconds / peak, 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
