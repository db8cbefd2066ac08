"""Interrupted runs resume exactly: same parameters, optimiser and scheduler states, and the same logged numbers.

Every algorithm is one entry of ALGORITHMS (model and data sections of a tiny config); a new one is one more entry.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_synthetic
from offrl.cli import main

DATASET = "test/resume/hopper-v0"
RUN = Path("logs")
STEPS_PER_EPOCH = 25
STOP_AT = 37  # inside the second epoch, and (for RSP) inside the second stage

ALGORITHMS = {
    "bc": (
        {"class_path": "offrl.algos.bc.BC", "init_args": {"hidden_dims": [16, 16]}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "iql_ddpgbc": (
        {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"value": "iql", "extraction": "ddpgbc", "hidden_dims": [16, 16]}},
        {"class_path": "offrl.data.datamodules.TransitionDataModule"},
        60,
    ),
    "rsp": (
        {"class_path": "offrl.algos.rsp.RSP", "init_args": {"hidden_dims": [16, 16], "steps_per_stage": 20, "target_return": 50}},
        {"class_path": "offrl.data.datamodules.SkipStepDataModule", "init_args": {"scales": [2, 4]}},
        60,  # (depth 2 + 1) stages x 20: the stop lands in the second stage, the cosine schedule restarts at 40
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
    return DATASET


def write_config(path: Path, algorithm: str, dataset_id: str, every_n_train_steps: int = 1000, callbacks=()) -> Path:
    model, data, max_steps = ALGORITHMS[algorithm]
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
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


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
    """Every train/ and eval/ scalar as (step, value), over all event files of the run (a resume appends one)."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    return {
        tag: sorted((e.step, e.value) for e in events.Scalars(tag))
        for tag in events.Tags()["scalars"]
        if tag.startswith(("train/", "eval/"))
    }


def fit(*args: str) -> int:
    try:
        main(["fit", *args])
    except SystemExit as stop:
        return stop.code
    return 0


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_interrupted_run_resumes_to_the_same_parameters_and_logs(algorithm, dataset, in_tmp_dir):
    assert fit("--config", str(write_config(in_tmp_dir / "full.yaml", algorithm, dataset))) == 0
    stop = {"class_path": "test_resume.SignalAt", "init_args": {"step": STOP_AT}}
    config = write_config(in_tmp_dir / "stopped.yaml", algorithm, dataset, callbacks=[stop])
    assert fit("--config", str(config)) == 128 + signal.SIGTERM
    uninterrupted, interrupted = run_dirs(in_tmp_dir)
    assert final_state(interrupted)["global_step"] == STOP_AT

    assert fit("--config", str(write_config(in_tmp_dir / "resume.yaml", algorithm, dataset)), "--ckpt_path", "last") == 0
    assert run_dirs(in_tmp_dir) == [uninterrupted, interrupted]  # the resume logs into the interrupted run
    assert_same_training_state(final_state(uninterrupted), final_state(interrupted))
    # The same numbers at the same steps, evaluations included: the epoch position and schedule carried over.
    expected, resumed = logged(uninterrupted), logged(interrupted)
    assert len(expected["eval/return"]) == 2
    assert resumed == expected
