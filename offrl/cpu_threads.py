"""How many CPU threads a process's torch work gets, on a machine other runs share.

torch's default (one thread per core) collapses when other processes keep those cores busy: its parallel regions
wait for their slowest thread, and a thread that lost its core holds every op up (benchmarks/README.md, "Threads on a
shared machine"). So `auto` gives a process the CPUs it may use (its affinity, capped by a cgroup quota), divided
among the processes one command starts on the machine (DDP ranks), and no more than those left idle by other work,
measured from /proc/stat. The usual environment variables win over everything, as torch itself reads them.

The count changes the numbers: parallel reductions split their sums by thread, so a run at 2 threads does not end
bitwise equal to one at 1. So an `auto` run changes its count only to avoid the collapse: when other work started
after it leaves it fewer idle CPUs than it has threads (looked at 5 s into training, then every half minute), it takes
fewer, never more, and says so. The count is recorded in its checkpoints and taken again when it resumes; set it
explicitly for runs that must reproduce bitwise on another day or machine.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# What torch and its BLAS read at start; a user who sets one has chosen the count.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")

# How long `auto` watches the machine before deciding: long enough to see a busy process, short beside any fit.
SAMPLE_SECONDS = 0.5


def own_cpus() -> set[int]:
    """The CPUs this process's affinity allows (every CPU where the platform has no affinity)."""
    return os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity, capped by its cgroup's CPU quota where one is set."""
    count = len(own_cpus())
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here
    return count


def _busy_and_total_ticks(cpus: set[int]) -> tuple[int, int] | None:
    """Summed busy and total clock ticks of `cpus` since boot, from /proc/stat; None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus):
            continue
        # user nice system idle iowait irq softirq steal: idle and iowait are the free time; steal is time the
        # hypervisor gave the CPU to someone else, so busy for us.
        ticks = [int(value) for value in fields[:8]]
        total += sum(ticks)
        busy += sum(ticks) - ticks[3] - ticks[4]
    return (busy, total) if total else None


class OtherWorkMeter:
    """How many of this process's CPUs other processes kept busy between two readings: all busy time on those CPUs
    (/proc/stat) less this process's own CPU time."""

    def __init__(self) -> None:
        self.cpus = own_cpus()
        self.last = self._now()

    def _now(self) -> tuple[tuple[int, int] | None, float, float]:
        return _busy_and_total_ticks(self.cpus), time.process_time(), time.monotonic()

    def read(self) -> float | None:
        """CPUs busy with other work since the last reading (or since made); None where /proc/stat cannot tell."""
        (before, own_before, wall_before), now = self.last, self._now()
        self.last = now
        after, own_after, wall_after = now
        if before is None or after is None or after[1] <= before[1]:
            return None
        busy_cpus = len(self.cpus) * (after[0] - before[0]) / (after[1] - before[1])
        own_cpus = (own_after - own_before) / max(wall_after - wall_before, 1e-9)
        return max(0.0, busy_cpus - own_cpus)


def cpus_busy_with_other_work(seconds: float = SAMPLE_SECONDS) -> float | None:
    """How many of this process's CPUs other processes keep busy over the next `seconds` (None where /proc/stat
    cannot tell)."""
    meter = OtherWorkMeter()
    time.sleep(seconds)
    return meter.read()


def auto_threads(usable: int, processes: int, busy_elsewhere: float | None) -> int:
    """The threads one of `processes` processes gets from `usable` CPUs when `busy_elsewhere` of them run other
    work: an equal share, no more than the idle CPUs, at least one."""
    share = max(1, usable // max(1, processes))
    if busy_elsewhere is None:
        return share
    return max(1, min(share, round(usable - busy_elsewhere)))


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str
    automatic: bool = False  # chosen by `auto`, not by the user

    def apply(self) -> None:
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)

    def sentence(self) -> str:
        return f"offrl: {self.threads} CPU thread{'s' if self.threads != 1 else ''} ({self.reason})"


def choose_threads(setting: int | str, processes: int = 1) -> ThreadChoice:
    """The thread count for `performance.threads` = `setting` (a positive count or "auto") in one of
    `processes` processes this command started on the machine; the environment variables win."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit() and int(value) > 0:
            return ThreadChoice(int(value), f"{name}={value}")
    if setting != "auto":
        return ThreadChoice(int(setting), "performance.threads")
    usable = usable_cpus()
    busy = cpus_busy_with_other_work()
    threads = auto_threads(usable, processes, busy)
    seen = "other work unmeasured" if busy is None else f"{busy:.1f} busy with other work"
    ranks = f", {processes} processes of this run" if processes > 1 else ""
    return ThreadChoice(threads, f"performance.threads auto: {usable} usable CPUs{ranks}, {seen}", automatic=True)
