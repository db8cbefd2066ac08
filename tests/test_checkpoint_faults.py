"""Checkpoints under faults: a write interrupted by a full disk keeps the previous checkpoint and resumes exactly;
a damaged checkpoint is refused in one sentence naming it (`--ckpt_path last` falls back to the newest readable one
and says so); a checkpoint of another algorithm, dataset or settings is refused; a resume keeps the run's recorded
config; a start that fails before its first update leaves no version folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_synthetic
from test_resume import assert_same_training_state, final_state, fit, run_dirs, write_config
from test_errors import offrl as run
from offrl import checkpoints

DATASET = "test/faults/hopper-v0"
OTHER_DATASET = "test/faults/hopper-other-v0"


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [50] * 12)
    write_synthetic(OTHER_DATASET, [50] * 12, seed=1)
    return DATASET


def assert_resumed_equals_unbroken(config: Path, resumed_run: Path, root: Path) -> None:
    """An unbroken run of `config` in a folder of its own ends with the resumed run's training state."""
    unbroken_root = root / "unbroken"
    unbroken_root.mkdir()
    os.chdir(unbroken_root)
    assert fit("--config", str(config)) == 0
    assert_same_training_state(final_state(run_dirs(unbroken_root)[0]), final_state(resumed_run))


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "weights_only" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("offrl: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.fixture
def trained(dataset, in_tmp_dir):
    """A finished BC run (60 updates, periodic checkpoints every 25): its run folder."""
    assert fit("--config", str(write_config(in_tmp_dir / "bc.yaml", "bc", dataset, every_n_train_steps=25))) == 0
    (run_dir,) = run_dirs(in_tmp_dir)
    return run_dir


def test_a_finished_runs_last_checkpoint_is_its_final_state(trained):
    assert final_state(trained)["global_step"] == 60  # not the step-50 periodic one
    saved = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["offrl"] == {"algorithm": "offrl.algos.bc.BC", "dataset_id": DATASET, "env_id": "Hopper-v5"}


DAMAGE = {
    "truncated": lambda data: data[: len(data) // 2],
    "zeroed": lambda data: bytes(len(data)),
    "empty": lambda data: b"",
    "text": lambda data: b"model: not a checkpoint\n",
    "flipped byte": lambda data: data[:200] + bytes([data[200] ^ 0xFF]) + data[201:],
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_in_one_sentence_naming_it(damage, trained, capsys):
    path = trained / "checkpoints" / "epoch=1-step=50.ckpt"
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    config = str(trained / "config.yaml")
    for command in ("test", "validate", "fit"):
        assert run(command, "--config", config, "--ckpt_path", str(path)) == 1
        line = error_line(capsys)
        assert f"offrl: error: checkpoint {path} is damaged: " in line and "use another checkpoint of the run" in line


def test_ckpt_path_last_falls_back_to_the_newest_readable_checkpoint(dataset, in_tmp_dir, capsys):
    stop = {"class_path": "test_resume.SignalAt", "init_args": {"step": 55}}
    config = write_config(in_tmp_dir / "bc.yaml", "bc", dataset, every_n_train_steps=25, callbacks=[stop])
    assert fit("--config", str(config)) == 143
    (run_dir,) = run_dirs(in_tmp_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # a full disk cut it short
    capsys.readouterr()
    resume = write_config(in_tmp_dir / "resume.yaml", "bc", dataset, every_n_train_steps=25)
    assert fit("--config", str(resume), "--ckpt_path", "last") == 0
    err = capsys.readouterr().err
    periodic = run_dir / "checkpoints" / "epoch=1-step=50.ckpt"
    assert f"offrl: {last.relative_to(in_tmp_dir)} is damaged (it is not a torch checkpoint archive" in err.replace(str(in_tmp_dir) + "/", "")
    assert f"resuming from {periodic.relative_to(in_tmp_dir)} instead" in err
    assert_resumed_equals_unbroken(resume, run_dir, in_tmp_dir)


def test_an_interrupted_checkpoint_write_keeps_the_last_one_and_the_run_resumes_exactly(dataset, in_tmp_dir, monkeypatch, capsys):
    saves = {"count": 0}
    real_save = torch.save

    def disk_full_on_third_save(obj, file, *args, **kwargs):
        saves["count"] += 1
        if saves["count"] == 3:  # step 50's periodic checkpoint: half of it reaches the disk
            file.write(b"PK\x03\x04 partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, file, *args, **kwargs)

    monkeypatch.setattr(checkpoints.torch, "save", disk_full_on_third_save)
    config = write_config(in_tmp_dir / "bc.yaml", "bc", dataset, every_n_train_steps=25)
    assert fit("--config", str(config)) == 1
    line = error_line(capsys)
    (run_dir,) = run_dirs(in_tmp_dir)
    folder = run_dir / "checkpoints"
    assert "No space left on device" in line and "free disk space" in line and str(folder.relative_to(in_tmp_dir)) in line
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=0-step=25.ckpt", "last.ckpt"]  # no temporary file left
    assert checkpoints.read_checkpoint(folder / "last.ckpt")["global_step"] == 25

    monkeypatch.setattr(checkpoints.torch, "save", real_save)
    assert fit("--config", str(config), "--ckpt_path", "last") == 0
    assert_resumed_equals_unbroken(config, run_dir, in_tmp_dir)


def test_a_checkpoint_of_another_algorithm_dataset_or_settings_is_refused(trained, dataset, in_tmp_dir, capsys):
    checkpoint = trained / "checkpoints" / "last.ckpt"
    iql = write_config(in_tmp_dir / "iql.yaml", "iql_awr", dataset)
    for command in ("test", "validate", "fit"):
        assert run(command, "--config", str(iql), "--ckpt_path", str(checkpoint)) == 1
        assert (
            f"checkpoint {checkpoint} was made by offrl.algos.bc.BC but the config builds offrl.algos.value_policy.ValuePolicy; "
            "give the config the run was made with (its config.yaml) or a checkpoint made by this config"
        ) in error_line(capsys)
    other = write_config(in_tmp_dir / "other.yaml", "bc", OTHER_DATASET)
    assert run("test", "--config", str(other), "--ckpt_path", str(checkpoint)) == 1
    assert f"was trained on {DATASET} but the config's data.dataset_id is {OTHER_DATASET}" in error_line(capsys)

    recorded = (trained / "config.yaml").read_text()
    assert fit("--config", str(trained / "config.yaml"), "--model.init_args.hidden_dims", "[32, 32]", "--ckpt_path", "last") == 1
    assert "was trained with other settings than the config gives (model.hidden_dims [16, 16] -> [32, 32])" in error_line(capsys)
    assert (trained / "config.yaml").read_text() == recorded  # the failed resume rewrote nothing
    assert sorted(p.name for p in trained.glob("config*.yaml")) == ["config.yaml"]


def test_a_checkpoint_with_other_tensor_names_is_refused_in_one_sentence(trained, capsys):
    """What an older offrl's checkpoint looks like (SAC kept `action_scale`/`action_center` before the shared
    action-bounds buffers): same algorithm, dataset and settings, other tensor names."""
    path = trained / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(path, weights_only=True)
    state = checkpoint["state_dict"]
    state["action_scale"], state["action_center"] = state.pop("action_low"), state.pop("action_high")
    torch.save(checkpoint, path)
    assert run("test", "--config", str(trained / "config.yaml"), "--ckpt_path", str(path)) == 1
    assert (
        "checkpoint tensors do not match this model (missing ['action_high', 'action_low'], unexpected "
        "['action_center', 'action_scale']): it was made by another version of offrl or with other settings"
    ) in error_line(capsys)


def test_each_start_of_a_run_keeps_its_own_config(dataset, in_tmp_dir):
    stop = {"class_path": "test_resume.SignalAt", "init_args": {"step": 30}}
    assert fit("--config", str(write_config(in_tmp_dir / "bc.yaml", "bc", dataset, callbacks=[stop]))) == 143
    (run_dir,) = run_dirs(in_tmp_dir)
    first = (run_dir / "config.yaml").read_text()
    assert fit("--config", str(write_config(in_tmp_dir / "resume.yaml", "bc", dataset)), "--ckpt_path", "last") == 0
    assert (run_dir / "config.yaml").read_text() == first
    second = yaml.safe_load((run_dir / "config.start-2.yaml").read_text())
    assert second["ckpt_path"].endswith("last.ckpt") and second["trainer"]["callbacks"] in (None, [])


def test_a_start_that_fails_before_its_first_update_leaves_no_version_folder(dataset, in_tmp_dir, capsys):
    crl = write_config(in_tmp_dir / "crl.yaml", "crl_ddpgbc", dataset)
    data = yaml.safe_load(crl.read_text())
    data["data"] = {"class_path": "offrl.data.datamodules.TransitionDataModule", "init_args": {**data["data"]["init_args"], "dataset_id": DATASET}}
    crl.write_text(yaml.safe_dump(data))
    assert fit("--config", str(crl)) == 1
    assert "goal-conditioned only" in error_line(capsys)
    assert not list(Path("logs").glob("*/*/version_*"))
