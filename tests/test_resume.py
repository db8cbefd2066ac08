"""Interrupted runs resume exactly: same parameters, optimiser and scheduler states, and the same logged numbers,
from a stop in the middle of an epoch and from a kill right after the periodic checkpoint on an epoch's last update
(the shipped configs' cadence: their checkpoint interval is a multiple of data.steps_per_epoch).

Every algorithm family is one entry of ALGORITHMS (model and data sections of a tiny config); a new one is one
more entry. Online runs (SAC, ADMPO-ON) resume their buffer and schedule: tests/test_online.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import shutil

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_synthetic
from offrl.algos.bc import BC
from offrl.checkpoints import read_checkpoint
from offrl.cli import main

DATASET = "test/resume/hopper-v0"
GOAL_DATASET = "test/resume/pointmaze-v0"
RUN = Path("logs")
STEPS_PER_EPOCH = 25
STOP_AT = 37  # inside the second epoch, and (for RSP) inside the second stage
KILL_AT = 50  # the second epoch's last update, where the uninterrupted run writes a periodic checkpoint

ALGORITHMS = {
    "bc": (
        {"class_path": "offrl.algos.bc.BC", "init_args": {"hidden_dims": [16, 16]}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "iql_ddpgbc": (
        {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"value": "iql", "extraction": "ddpgbc", "hidden_dims": [16, 16], "repr_dim": 8}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "iql_awr": (
        {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"value": "iql", "extraction": "awr", "hidden_dims": [16, 16], "repr_dim": 8}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "sarsa_sfbc": (
        {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"value": "sarsa", "extraction": "sfbc", "hidden_dims": [16, 16], "repr_dim": 8}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "td3_ddpgbc": (
        {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"value": "td3", "extraction": "ddpgbc", "hidden_dims": [16, 16], "repr_dim": 8, "actor": "deterministic"}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "crl_ddpgbc": (
        {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"value": "crl", "extraction": "ddpgbc", "hidden_dims": [16, 16], "repr_dim": 8}},
        {"class_path": "offrl.data.datamodules.HindsightDataModule"},
        60,
    ),
    "rsp": (
        {"class_path": "offrl.algos.rsp.RSP", "init_args": {"hidden_dims": [16, 16], "steps_per_stage": 20, "target_return": 50}},
        {"class_path": "offrl.data.datamodules.SkipStepDataModule", "init_args": {"scales": [2, 4]}},
        60,  # (depth 2 + 1) stages x 20: the stop lands in the second stage, the cosine schedule restarts at 40
    ),
    "rsp_joint": (
        {"class_path": "offrl.algos.rsp.RSP", "init_args": {"hidden_dims": [16, 16], "steps_per_stage": 60, "training": "joint", "target_return": 50}},
        {"class_path": "offrl.data.datamodules.SkipStepDataModule", "init_args": {"scales": [2, 4]}},
        60,
    ),
    "admpo_off": (
        {
            "class_path": "offrl.algos.admpo.ADMPOOffline",
            "init_args": {
                "max_window": 2, "rollout_horizon": 2, "dynamics_hidden_dim": 8, "dynamics_gru_layers": 1, "dynamics_residual_blocks": 1,
                "dynamics_max_epochs": 2, "dynamics_updates_per_epoch": 5, "hidden_dims": [16, 16], "model_rows": 16,
                "rollout_every": 20, "rollout_batch_size": 32, "retain_rounds": 2,
            },
        },
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,  # roll-outs at 0, 20 and 40: the stop at 37 lands between two, with a model buffer to restore
    ),
    "mopo": (
        {
            "class_path": "offrl.algos.mopo.MOPO",
            "init_args": {
                "rollout_horizon": 2, "dynamics_hidden_dims": [8, 8], "dynamics_members": 3,
                "dynamics_elites": 2, "dynamics_max_epochs": 2, "dynamics_updates_per_epoch": 5, "hidden_dims": [16, 16], "model_rows": 16,
                "rollout_every": 20, "rollout_batch_size": 32, "retain_rounds": 2,
            },
        },
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
}


class SignalAt(L.Callback):
    """Sends this process a real signal right after update `step`."""

    def __init__(self, step: int, signum: int = int(signal.SIGTERM)):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [50] * 12)
    write_synthetic(GOAL_DATASET, [50] * 12, goal=True)
    return DATASET


class CopyRunAt(L.Callback):
    """Copies the run folder to `destination` at update `step`'s validation: after that update's periodic checkpoint
    and before its evaluation, what a process SIGKILLed there leaves on disk."""

    def __init__(self, step: int, destination: str):
        self.step, self.destination = step, destination

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            shutil.copytree(RUN, Path(self.destination) / RUN)


def write_config(path: Path, algorithm: str, dataset_id: str, every_n_train_steps: int = 1000, callbacks=(), model_class: str | None = None) -> Path:
    model, data, max_steps = ALGORITHMS[algorithm]
    model = {**model, "class_path": model_class or model["class_path"]}
    if data["class_path"].endswith("HindsightDataModule"):
        dataset_id = GOAL_DATASET
    data_args = {"dataset_id": dataset_id, "batch_size": 32, "steps_per_epoch": STEPS_PER_EPOCH, **data.get("init_args", {})}
    config = {
        "seed_everything": 3,
        "model": model,
        "data": {"class_path": data["class_path"], "init_args": data_args},
        "trainer": {
            "max_steps": max_steps,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "log_every_n_steps": 5,
            "callbacks": list(callbacks),
        },
        "evaluation": {"num_episodes": 1, "num_envs": 1},
        "checkpoint": {"every_n_train_steps": every_n_train_steps},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_dirs(root: Path) -> list[Path]:
    return sorted((root / RUN).glob("*/*/version_*"))


def final_state(run_dir: Path) -> dict:
    return read_checkpoint(run_dir / "checkpoints" / "last.ckpt")


def assert_same_training_state(expected: dict, actual: dict) -> None:
    assert actual["global_step"] == expected["global_step"]
    assert expected["state_dict"].keys() == actual["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(tensor, actual["state_dict"][name]), name
    for want, got in zip(expected["optimizer_states"], actual["optimizer_states"], strict=True):
        for param_id, moments in want["state"].items():
            for key, value in moments.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(got["state"][param_id][key])), (param_id, key)
    assert [s["last_epoch"] for s in expected["lr_schedulers"]] == [s["last_epoch"] for s in actual["lr_schedulers"]]


def logged(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every train/ and eval/ scalar as (step, value), over all event files of the run (a resume appends one;
    a killed run may have flushed a few points past its checkpoint, which the resume then logs again)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: sorted({(e.step, e.value) for e in events.Scalars(tag)})
        for tag in events.Tags()["scalars"]
        if tag.startswith(("train/", "eval/"))
    }


def fit(*args: str) -> int:
    try:
        main(["fit", *args])
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.fixture(scope="module")
def uninterrupted(dataset, tmp_path_factory):
    """algorithm -> the run folder of its uninterrupted run (made once per module)."""
    runs: dict[str, Path] = {}

    def run(algorithm: str) -> Path:
        if algorithm not in runs:
            root = tmp_path_factory.mktemp(f"uninterrupted-{algorithm}")
            cwd = os.getcwd()
            os.chdir(root)
            copy = {"class_path": "test_resume.CopyRunAt", "init_args": {"step": KILL_AT, "destination": str(root / "killed")}}
            try:
                config = write_config(root / "full.yaml", algorithm, dataset, every_n_train_steps=STEPS_PER_EPOCH, callbacks=[copy])
                assert fit("--config", str(config)) == 0
            finally:
                os.chdir(cwd)
            (runs[algorithm],) = run_dirs(root)
        return runs[algorithm]

    return run


def stop_and_resume(algorithm: str, dataset: str, root: Path, signum: int) -> Path:
    stop = {"class_path": "test_resume.SignalAt", "init_args": {"step": STOP_AT, "signum": int(signum)}}
    assert fit("--config", str(write_config(root / "stopped.yaml", algorithm, dataset, callbacks=[stop]))) == 128 + signum
    (interrupted,) = run_dirs(root)
    assert final_state(interrupted)["global_step"] == STOP_AT
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert fit("--config", str(write_config(root / "resume.yaml", algorithm, dataset)), "--ckpt_path", "last") == 0
    # The data pipeline is resumable: Lightning has no "dataloader is not resumable" warning to give.
    assert not [w for w in caught if "not resumable" in str(w.message)]
    assert run_dirs(root) == [interrupted]  # the resume logs into the interrupted run
    return interrupted


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_interrupted_run_resumes_to_the_same_parameters_and_logs(algorithm, dataset, uninterrupted, in_tmp_dir):
    interrupted = stop_and_resume(algorithm, dataset, in_tmp_dir, signal.SIGTERM)
    assert_same_training_state(final_state(uninterrupted(algorithm)), final_state(interrupted))
    # The same numbers at the same steps, evaluations included: the epoch position and schedule carried over.
    expected, resumed = logged(uninterrupted(algorithm)), logged(interrupted)
    assert len(expected["eval/return"]) == 2
    assert resumed == expected


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_a_run_killed_after_an_end_of_epoch_checkpoint_resumes_exactly(algorithm, dataset, uninterrupted, monkeypatch):
    """The checkpoint precedes that epoch's evaluation; the resumed run evaluates first, then goes on as if unbroken
    (its data loader's iterator no longer draws from the global RNG, which shifted every later draw)."""
    full = uninterrupted(algorithm)
    killed = full.parents[3] / "killed"
    monkeypatch.chdir(killed)
    (interrupted,) = run_dirs(killed)
    assert final_state(interrupted)["global_step"] == KILL_AT
    config = write_config(killed / "resume.yaml", algorithm, DATASET, every_n_train_steps=STEPS_PER_EPOCH)
    assert fit("--config", str(config), "--ckpt_path", "last") == 0
    assert_same_training_state(final_state(full), final_state(interrupted))
    assert logged(interrupted) == logged(full)


def test_ctrl_c_also_stops_with_a_checkpoint(dataset, uninterrupted, in_tmp_dir, capsys):
    # Python's default_int_handler, or SIG_IGN where the test run itself was started in the background.
    before = signal.getsignal(signal.SIGINT)
    interrupted = stop_and_resume("bc", dataset, in_tmp_dir, signal.SIGINT)
    assert f"stopped by SIGINT after update {STOP_AT}" in capsys.readouterr().err
    assert_same_training_state(final_state(uninterrupted("bc")), final_state(interrupted))
    assert signal.getsignal(signal.SIGINT) is before  # the handler is given back


class Pace(L.Callback):
    """Slows a subprocess's updates down so that a signal sent from outside lands mid-run."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        time.sleep(0.05)


def start_fit(config: Path, cwd: Path) -> subprocess.Popen:
    tests = str(Path(__file__).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    return subprocess.Popen(
        [sys.executable, "-m", "offrl.cli", "fit", "--config", str(config)],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_checkpoint(cwd: Path, min_step: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.stem.split("step=")[1]) for p in cwd.glob("logs/*/*/version_*/checkpoints/*step=*.ckpt")]
        if steps and max(steps) >= min_step:
            return
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint of step {min_step} within {timeout} s")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signalled_subprocess_resumes_exactly(signum, dataset, uninterrupted, in_tmp_dir):
    """SIGTERM: exit 143 with one line and a fresh last.ckpt. SIGKILL: the last periodic checkpoint survives."""
    pace = {"class_path": "test_resume.Pace"}
    process = start_fit(write_config(in_tmp_dir / "paced.yaml", "bc", dataset, every_n_train_steps=10, callbacks=[pace]), in_tmp_dir)
    wait_for_checkpoint(in_tmp_dir, 10 if signum == signal.SIGTERM else 30, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    (interrupted,) = run_dirs(in_tmp_dir)
    stopped_at = final_state(interrupted)["global_step"]
    assert 10 <= stopped_at < 60
    if signum == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM
        assert "Traceback" not in stderr and f"stopped by SIGTERM after update {stopped_at}" in stderr, stderr[-3000:]
    else:
        assert process.returncode == -signal.SIGKILL and stopped_at % 10 == 0

    assert fit("--config", str(write_config(in_tmp_dir / "resume.yaml", "bc", dataset)), "--ckpt_path", "last") == 0
    assert_same_training_state(final_state(uninterrupted("bc")), final_state(interrupted))
    assert logged(interrupted) == logged(uninterrupted("bc"))


class BCKilledAfterCheckpoint(BC):
    """BC whose process is SIGKILLed at the worst moment: in the module's on_train_batch_end of update 30, after
    ModelCheckpoint has written the step-30 checkpoint and before Lightning finishes the update."""

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.global_step == 30:
            os.kill(os.getpid(), signal.SIGKILL)


def test_a_run_killed_right_after_a_checkpoint_keeps_every_logged_point(dataset, uninterrupted, in_tmp_dir):
    """Every point logged up to a checkpoint is on disk before the checkpoint is: none is lost between the two."""
    config = write_config(in_tmp_dir / "killed.yaml", "bc", dataset, every_n_train_steps=10, model_class="test_resume.BCKilledAfterCheckpoint")
    process = start_fit(config, in_tmp_dir)
    process.communicate(timeout=240)
    assert process.returncode == -signal.SIGKILL
    (interrupted,) = run_dirs(in_tmp_dir)
    assert final_state(interrupted)["global_step"] == 30
    # Resumed with the same class (it kills only at update 30, which the resumed run starts after).
    assert fit("--config", str(config), "--ckpt_path", "last") == 0
    assert logged(interrupted) == logged(uninterrupted("bc"))


def test_same_config_and_seed_give_the_same_metrics(dataset, uninterrupted, in_tmp_dir):
    # RSP draws noise from the global RNG and samples batches with the datamodule's generator: both are seeded.
    assert fit("--config", str(write_config(in_tmp_dir / "again.yaml", "rsp", dataset))) == 0
    (again,) = run_dirs(in_tmp_dir)
    first, second = logged(uninterrupted("rsp")), logged(again)
    assert {"train/subgoal_nll_k4", "train/policy_nll", "eval/return"} <= set(first)
    assert second == first


class PoisonAt(L.Callback):
    """Makes the policy's parameters NaN before update `step`, so that update's loss is NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step - 1:
            with torch.no_grad():
                pl_module.policy.log_std.fill_(float("nan"))


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(dataset, in_tmp_dir, capsys):
    # Checkpoints every 4 updates, losses read every 5: the NaN at update 22 must still never reach the save at 24.
    poison = {"class_path": "test_resume.PoisonAt", "init_args": {"step": 22}}
    config = write_config(in_tmp_dir / "nan.yaml", "bc", dataset, every_n_train_steps=4, callbacks=[poison])
    assert fit("--config", str(config)) == 1
    (run_dir,) = run_dirs(in_tmp_dir)
    last = run_dir.relative_to(in_tmp_dir) / "checkpoints" / "last.ckpt"
    err = capsys.readouterr().err
    assert f"train/bc_loss became non-finite at update 22, so training stopped; the last good checkpoint {last} is kept" in err
    assert "Traceback" not in err
    saved = final_state(run_dir)
    assert saved["global_step"] == 20
    assert all(torch.isfinite(tensor).all() for tensor in saved["state_dict"].values())
