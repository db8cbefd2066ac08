"""A process picks its CPU threads for the machine it shares: its share of the CPUs it may use, no more than other
work leaves idle, the environment variables first, and a resumed run computes with the count it was made with.
(How much this matters under load is a benchmark, not a timed test: benchmarks/threads.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_synthetic
from offrl import cpu_threads
from offrl.callbacks.throughput import UpdateLoop
from offrl.checkpoints import read_checkpoint
from offrl.cli import main
from offrl.errors import OffrlError

DATASET = "test/threads/hopper-v0"


@pytest.fixture
def no_thread_variables(monkeypatch):
    for name in cpu_threads.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(1)  # the suite's count (conftest)


@pytest.mark.parametrize(
    ("usable", "processes", "busy_elsewhere", "threads"),
    [
        (2, 1, 0.1, 2),  # a quiet machine: every CPU
        (2, 1, 1.9, 1),  # the other core busy: one thread, not two fighting over one core
        (2, 1, 4.0, 1),  # more busy processes than cores: still one, never zero
        (2, 2, 0.0, 1),  # two DDP ranks share two CPUs
        (8, 2, 1.0, 4),  # an equal share while enough CPUs are idle
        (8, 1, 5.2, 3),  # no more than the idle CPUs
        (4, 1, None, 4),  # /proc/stat unreadable: the process's share
    ],
)
def test_auto_takes_a_share_of_the_usable_cpus_and_no_more_than_other_work_leaves_idle(usable, processes, busy_elsewhere, threads):
    assert cpu_threads.auto_threads(usable, processes, busy_elsewhere) == threads


def test_auto_measures_other_processes_keeping_the_cpus_busy_and_takes_one_thread(no_thread_variables):
    usable = cpu_threads.usable_cpus()
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(usable)]
    try:
        busy = cpu_threads.cpus_busy_with_other_work(seconds=1.0)
        choice = cpu_threads.choose_threads("auto")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert busy is not None and busy >= usable - 0.6, busy
    assert choice.threads == 1 and choice.automatic
    assert f"{usable} usable CPUs" in choice.reason and "busy with other work" in choice.reason


def test_the_environment_variables_win_over_the_setting(no_thread_variables, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    choice = cpu_threads.choose_threads(2)
    assert (choice.threads, choice.reason, choice.automatic) == (3, "OMP_NUM_THREADS=3", False)
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_threads.choose_threads(2).threads == 2


@pytest.mark.parametrize("bad", [0, -2, "two", True])
def test_a_thread_count_that_is_not_a_positive_integer_or_auto_is_refused(bad):
    with pytest.raises(OffrlError, match=r"performance.threads must be a positive integer or auto, got"):
        UpdateLoop(threads=bad)


class FixedMeter:
    def __init__(self, busy: float | None):
        self.busy = busy

    def read(self) -> float | None:
        return self.busy


def test_an_auto_run_gives_threads_back_when_other_work_starts_beside_it_and_never_takes_more(no_thread_variables, monkeypatch, caplog):
    monkeypatch.setattr("offrl.callbacks.throughput.usable_cpus", lambda: 2)
    loop = UpdateLoop()
    loop.thread_choice = cpu_threads.ThreadChoice(2, "performance.threads auto", automatic=True)
    loop.thread_choice.apply()
    loop.other_work = FixedMeter(0.2)  # a quiet machine: keep both
    loop.give_back_threads(step=500, processes=1)
    assert loop.thread_choice.threads == 2 and torch.get_num_threads() == 2
    caplog.set_level("INFO")
    loop.other_work = FixedMeter(1.8)  # another run started on the other core
    loop.give_back_threads(step=1000, processes=1)
    assert loop.thread_choice.threads == 1 and torch.get_num_threads() == 1
    assert loop.state_dict() == {"threads": 1}  # what a checkpoint from here records
    assert "offrl: 1 CPU thread (other work now keeps 1.8 CPUs busy) from update 1000, down from 2" in caplog.text
    assert loop.other_work is None  # one thread: nothing more to give, and it never takes more back


def write_config(path: Path, max_steps: int) -> Path:
    config = {
        "model": {"class_path": "offrl.algos.bc.BC", "init_args": {"hidden_dims": [16, 16]}},
        "data": {
            "class_path": "offrl.data.datamodules.TransitionDataModule",
            "init_args": {"dataset_id": DATASET, "batch_size": 32, "steps_per_epoch": 20},
        },
        "trainer": {"max_steps": max_steps, "accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 10},
        "evaluation": {"num_episodes": 1, "num_envs": 1},
        "checkpoint": {"every_n_train_steps": 20},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def recorded_threads(run_dir: Path) -> int:
    checkpoint = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    (state,) = [value for key, value in checkpoint["callbacks"].items() if key.startswith("UpdateLoop")]
    return state["threads"]


def test_a_resumed_auto_run_computes_with_the_count_its_checkpoint_was_made_with(no_thread_variables, in_tmp_dir, monkeypatch, caplog):
    write_synthetic(DATASET, [40] * 6)
    usable = cpu_threads.usable_cpus()
    if usable < 2:
        pytest.skip("needs 2 usable CPUs to see a recorded count differ from a fresh choice")
    monkeypatch.setattr(cpu_threads, "cpus_busy_with_other_work", lambda seconds=0.5: float(usable - 1))  # a busy machine
    assert main(["fit", "--config", str(write_config(in_tmp_dir / "short.yaml", 20))]) is None
    run_dir = in_tmp_dir / "logs" / "bc" / "threads-hopper" / "version_0"
    assert recorded_threads(run_dir) == 1

    monkeypatch.setattr(cpu_threads, "cpus_busy_with_other_work", lambda seconds=0.5: 0.0)  # now a quiet one
    caplog.set_level("INFO")
    main(["fit", "--config", str(write_config(in_tmp_dir / "long.yaml", 40)), "--ckpt_path", "last"])
    assert torch.get_num_threads() == 1, "the resume took the fresh choice, not the run's own count"
    assert recorded_threads(run_dir) == 1
    assert "offrl: 1 CPU thread (the count this run's checkpoint was made with)" in caplog.text

    # A fresh run on the quiet machine takes every usable CPU, and says why.
    caplog.clear()
    main(["fit", "--config", str(write_config(in_tmp_dir / "short.yaml", 20))])
    assert recorded_threads(run_dir.with_name("version_1")) == usable
    assert f"offrl: {usable} CPU threads (performance.threads auto: {usable} usable CPUs, 0.0 busy with other work)" in caplog.text
