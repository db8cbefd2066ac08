"""A 2-process CPU DDP run resumes exactly: every rank goes on with its own sampler and its own global RNG streams.

The algorithm is RSP with sampled evaluation actions: its training noise comes from the global torch RNG on every
rank and its evaluation (rank 0 only) draws from rank 0's, so the ranks' global streams part at the first
evaluation and both the per-rank sampler and the per-rank RNG states decide the parameters after a resume.
One unbroken run to MAX_STEPS copies its run folder right after the periodic checkpoint of update STOP_AT (what a
process killed there leaves on disk); the copy is resumed with `--ckpt_path last` and must end as the unbroken run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from conftest import write_synthetic
from offrl.cli import main
from offrl.data.datamodules import TransitionDataModule
from offrl.errors import OffrlError
import test_resume
from test_resume import final_state, logged, run_dirs

DATASET = "test/ddp_resume/hopper-v0"
STEPS_PER_EPOCH = 10
STOP_AT = 15  # inside the second epoch, after the first evaluation has made the ranks' global streams differ
MAX_STEPS = 30
DDP = ("--trainer.devices", "2", "--trainer.strategy", "ddp")

needs_ddp = pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed, so DDP cannot start")


class RecordBatches(L.Callback):
    """Writes `<prefix>-rank<r>.json`: [update, checksum of the batch's observations] of every update this process
    trained, so that a test can tell which batches each rank drew."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.rows: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.rows.append([trainer.global_step, batch["observation"].double().sum().item()])

    def on_train_end(self, trainer, pl_module) -> None:
        Path(f"{self.prefix}-rank{trainer.global_rank}.json").write_text(json.dumps(self.rows))


class CopyRunAfterCheckpoint(L.Callback):
    """On rank 0, copies the run folder to `destination` before update `step` + 1: after update `step`'s periodic
    checkpoint (every rank has passed save_checkpoint's barrier), what a process killed there leaves on disk."""

    def __init__(self, step: int, destination: str):
        self.step, self.destination = step, destination

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            shutil.copytree("logs", Path(self.destination) / "logs")


class SignalRankZeroAt(L.Callback):
    """Sends rank 0 alone a real SIGTERM right after update `step`: what `kill <pid>` of the launching process does."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.is_global_zero:
            os.kill(os.getpid(), signal.SIGTERM)


def write_config(path: Path, callbacks=(), every_n_train_steps: int = STOP_AT) -> Path:
    """test_resume's joint-training RSP config, MAX_STEPS long, with sampled evaluation actions and eager updates."""
    config = yaml.safe_load(test_resume.write_config(path, "rsp_joint", DATASET, every_n_train_steps, callbacks).read_text())
    config["model"]["init_args"] |= {"steps_per_stage": MAX_STEPS, "sample_actions": True}
    config["data"]["init_args"]["steps_per_epoch"] = STEPS_PER_EPOCH
    config["trainer"]["max_steps"] = MAX_STEPS
    config["performance"] = {"compile": False}
    path.write_text(yaml.safe_dump(config))
    return path


def offrl_fit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`offrl fit` in a process of its own: DDP starts its second rank by running the same command again."""
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    return subprocess.run(
        [sys.executable, "-m", "offrl.cli", "fit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=400
    )


def batches(prefix: Path, rank: int) -> dict[int, float]:
    return dict((int(step), value) for step, value in json.loads(Path(f"{prefix}-rank{rank}.json").read_text()))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(unbroken run folder, its copy at update STOP_AT, the folder both live in)."""
    write_synthetic(DATASET, [50] * 12)
    root = tmp_path_factory.mktemp("ddp")
    callbacks = [
        {"class_path": "test_ddp_resume.RecordBatches", "init_args": {"prefix": str(root / "unbroken")}},
        {"class_path": "test_ddp_resume.CopyRunAfterCheckpoint", "init_args": {"step": STOP_AT, "destination": str(root / "killed")}},
    ]
    result = offrl_fit("--config", str(write_config(root / "full.yaml", callbacks)), *DDP, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    (unbroken,) = run_dirs(root)
    (killed,) = run_dirs(root / "killed")
    return unbroken, killed, root


@needs_ddp
def test_a_ddp_run_killed_after_a_checkpoint_resumes_to_the_same_parameters_logs_and_batches(runs):
    unbroken, killed, root = runs
    assert final_state(killed)["global_step"] == STOP_AT
    recorder = {"class_path": "test_ddp_resume.RecordBatches", "init_args": {"prefix": str(root / "resumed")}}
    resume = write_config(root / "killed" / "resume.yaml", [recorder])
    result = offrl_fit("--config", str(resume), *DDP, "--ckpt_path", "last", cwd=root / "killed")
    assert result.returncode == 0, result.stderr[-3000:]

    expected, resumed = final_state(unbroken), final_state(killed)
    assert resumed["global_step"] == expected["global_step"] == MAX_STEPS
    assert expected["state_dict"].keys() == resumed["state_dict"].keys()
    differ = [name for name, tensor in expected["state_dict"].items() if not torch.equal(tensor, resumed["state_dict"][name])]
    assert not differ, f"{len(differ)} of {len(expected['state_dict'])} parameter tensors differ: {differ}"
    assert logged(killed) == logged(unbroken)
    # Each rank drew after the resume what it drew in the unbroken run, and the two ranks drew different batches.
    for rank in (0, 1):
        after = batches(root / "resumed", rank)
        assert sorted(after) == list(range(STOP_AT, MAX_STEPS))
        assert after == {step: value for step, value in batches(root / "unbroken", rank).items() if step >= STOP_AT}, rank
    assert batches(root / "resumed", 0)[STOP_AT] != batches(root / "resumed", 1)[STOP_AT]


@needs_ddp
def test_a_ddp_checkpoint_is_refused_for_another_number_of_processes_but_tests_on_one(runs, tmp_path, monkeypatch, capsys):
    _, killed, _ = runs
    monkeypatch.chdir(tmp_path)
    checkpoint = killed / "checkpoints" / "last.ckpt"
    config = write_config(tmp_path / "one.yaml")
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", str(config), "--ckpt_path", str(checkpoint)])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    assert "the checkpoint was saved by a run of 2 processes but this run has 1" in err
    assert "resume with --trainer.devices 2" in err and "Traceback" not in err
    # Testing a checkpoint needs no sampler state: one process tests what two trained.
    main(["test", "--config", str(config), "--ckpt_path", str(checkpoint)])
    assert "eval/return" in capsys.readouterr().out


def test_single_process_sampler_states_of_either_layout_load():
    data = TransitionDataModule("unused", batch_size=4)
    state = torch.Generator().manual_seed(5).get_state()
    data.load_state_dict({"generator": state})  # a checkpoint from before the per-rank layout
    assert torch.equal(data._generator_state, state)
    data.load_state_dict({"generators": {"world_size": 1, "ranks": [state]}})
    assert torch.equal(data._generator_state, state) and torch.equal(data.state_dict()["generators"]["ranks"][0], state)
    with pytest.raises(OffrlError, match="saved by a run of 2 processes but this run has 1"):
        data.load_state_dict({"generators": {"world_size": 2, "ranks": [state, state]}})


@needs_ddp
def test_sigterm_to_the_first_process_of_a_ddp_run_stops_every_rank_saves_and_resumes_exactly(runs):
    """Lightning's own handler broadcasts inside the signal handler and hangs; offrl's stops every rank after one
    agreed update and saves last.ckpt there."""
    unbroken, _, root = runs
    folder = root / "sigterm"
    folder.mkdir()
    stop_at = 20
    signalled = write_config(folder / "signalled.yaml", [{"class_path": "test_ddp_resume.SignalRankZeroAt", "init_args": {"step": stop_at}}])
    result = offrl_fit("--config", str(signalled), *DDP, cwd=folder)
    assert result.returncode == 143, result.stderr[-3000:]
    (run_dir,) = run_dirs(folder)
    stopped = final_state(run_dir)["global_step"]
    assert stop_at <= stopped < MAX_STEPS
    assert f"offrl: stopped by SIGTERM after update {stopped}; saved" in result.stderr
    result = offrl_fit("--config", str(write_config(folder / "resume.yaml")), *DDP, "--ckpt_path", "last", cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    expected, resumed = final_state(unbroken), final_state(run_dir)
    differ = [name for name, tensor in expected["state_dict"].items() if not torch.equal(tensor, resumed["state_dict"][name])]
    assert resumed["global_step"] == MAX_STEPS and not differ, differ
