"""Disk faults made for real (a small tmpfs that fills up, a read-only bind mount): each ends in one sentence that
names the path and the fix, loses nothing already written and leaves no temporary file behind.

Mounting needs root; where the machine refuses it the test is skipped with the reason.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_synthetic
from test_checkpoint_faults import error_line
from test_d4rl_import import ENDS, d4rl_arrays, write_hdf5
from test_errors import offrl
from test_resume import final_state, fit, run_dirs, write_config
from offrl.data import minari_io, registry

DATASET = "test/disk/hopper-v0"
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [50] * 12)
    return DATASET


REFUSED = ("permission denied", "must be superuser", "operation not permitted", "only root")


@pytest.fixture
def mount():
    """mount(target, *options): a real mount made for this test, unmounted at its end whatever happened (lazily
    when this process still maps a file there)."""
    made: list[Path] = []

    def make(target: Path, *options: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs or a read-only bind needs root here, and these faults are made for real")
        target.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", *options, str(target)], capture_output=True, text=True)
        if result.returncode != 0 and any(word in result.stderr.lower() for word in REFUSED):
            pytest.skip(f"this machine refuses `mount {' '.join(options)}` ({result.stderr.strip()})")
        assert result.returncode == 0, result.stderr
        if "remount" not in ",".join(options):  # a remount changes a mount already listed
            made.append(target)
        return target

    yield make
    for target in reversed(made):
        if subprocess.run(["umount", str(target)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "--lazy", str(target)], check=True)


def tmpfs(mount, target: Path, size: str) -> Path:
    return mount(target, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")


def read_only_view(mount, source: Path, target: Path) -> Path:
    mount(target, "--bind", str(source))
    return mount(target, "-o", "remount,ro,bind")


def fill_disk(folder: Path) -> None:
    """Write zeros into `folder` until its file system refuses one more byte."""
    with open(Path(folder) / "filler", "ab", buffering=0) as file:
        try:
            while True:
                file.write(bytes(1 << 16))
        except OSError as err:
            assert err.errno == errno.ENOSPC, err


class FillDiskAt(L.Callback):
    """Fills the disk of `folder` right after update `step`, before that update's checkpoint is written."""

    def __init__(self, step: int, folder: str):
        self.step, self.folder = step, folder

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            fill_disk(Path(self.folder))


class SignalAtEvaluation(L.Callback):
    """Sends this process SIGTERM as the evaluation after update `step` starts."""

    def __init__(self, step: int):
        self.step = step

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def fill_at(step: int, folder: Path) -> dict:
    return {"class_path": "test_disk_faults.FillDiskAt", "init_args": {"step": step, "folder": str(folder)}}


def checkpoint_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_full_disk_during_a_checkpoint_write_is_one_sentence_and_the_run_resumes_once_freed(dataset, in_tmp_dir, mount, capsys):
    logs = tmpfs(mount, in_tmp_dir / "logs", "4m")
    config = write_config(in_tmp_dir / "bc.yaml", "bc", dataset, every_n_train_steps=25, callbacks=[fill_at(50, logs)])
    assert fit("--config", str(config)) == 1
    (run_dir,) = run_dirs(in_tmp_dir)
    folder = run_dir.relative_to(in_tmp_dir) / "checkpoints"
    assert error_line(capsys) == (
        f"offrl: error: cannot write checkpoint {folder}/epoch=1-step=50.ckpt (No space left on device); the previous "
        f"checkpoint {folder}/last.ckpt (update 25) is kept: free disk space there, then resume with --ckpt_path last"
    )
    assert checkpoint_files(run_dir) == ["epoch=0-step=25.ckpt", "last.ckpt"]  # no temporary left
    assert final_state(run_dir)["global_step"] == 25

    # A write killed earlier left its temporary: the next start removes it, and keeps a live writer's and other files.
    abandoned, live, other = (f".last.ckpt.{dead_pid()}.tmp", f".last.ckpt.{os.getppid()}.tmp", ".notes.tmp")
    (logs / "filler").unlink()
    for name in (abandoned, live, other):
        (run_dir / "checkpoints" / name).write_bytes(b"PK\x03\x04 partial")
    resume = write_config(in_tmp_dir / "resume.yaml", "bc", dataset, every_n_train_steps=25)
    assert fit("--config", str(resume), "--ckpt_path", "last") == 0
    assert final_state(run_dir)["global_step"] == 60
    assert checkpoint_files(run_dir) == [live, other, "epoch=1-step=50.ckpt", "last.ckpt"]


def test_sigterm_on_a_full_disk_still_exits_143_and_says_which_checkpoint_is_kept(dataset, in_tmp_dir, mount, capsys):
    logs = tmpfs(mount, in_tmp_dir / "logs", "4m")
    stop = {"class_path": "test_resume.SignalAt", "init_args": {"step": 35}}
    config = write_config(in_tmp_dir / "bc.yaml", "bc", dataset, every_n_train_steps=25, callbacks=[fill_at(35, logs), stop])
    assert fit("--config", str(config)) == 128 + signal.SIGTERM
    (run_dir,) = run_dirs(in_tmp_dir)
    last = run_dir.relative_to(in_tmp_dir) / "checkpoints" / "last.ckpt"
    err = capsys.readouterr().err
    assert "Traceback" not in err and "offrl: error" not in err, err[-3000:]
    assert (
        f"offrl: stopped by SIGTERM after update 35 as asked, but cannot write checkpoint {last} (No space left on "
        f"device); the previous checkpoint {last} (update 25) is kept: free disk space there, then resume with "
        "--ckpt_path last"
    ) in err.splitlines()
    assert checkpoint_files(run_dir) == ["epoch=0-step=25.ckpt", "last.ckpt"]
    assert final_state(run_dir)["global_step"] == 25


def python(*args: str, store: Path, cwd: Path) -> subprocess.CompletedProcess:
    """Python in a process of its own, on the store `store`: these faults used to crash the process (HDF5 on a full
    disk, a memory map written into one)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MINARI_DATASETS_PATH": str(store),
           "PYTHONPATH": os.pathsep.join([str(TESTS), *sys.path])}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("command", ["generate", "import-d4rl"])
def test_writing_a_dataset_into_a_full_store_is_one_sentence_and_leaves_nothing(command, tmp_path, mount):
    store = tmpfs(mount, tmp_path / "store", "256k")
    if command == "generate":
        args = ("data", "generate", "offrl/pointmaze/umaze-v0", "--steps", "2000")
    else:
        source = write_hdf5(tmp_path / "hopper.hdf5", d4rl_arrays(ENDS, length=4000))
        args = ("data", "import-d4rl", str(source), "--id", "imported/hopper/full-v0", "--env", "Hopper-v5")
    result = python("-m", "offrl.cli", *args, store=store, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip() and "%|" not in line]  # not the progress bar's
    assert lines == [
        f"offrl: error: cannot use {store} (No space left on device); free disk space there, then run the command again"
    ], result.stderr[-3000:]
    assert list(store.iterdir()) == []  # no partial dataset, temporary store or lock


def test_a_dataset_in_a_read_only_store_trains_converted_in_memory(tmp_path, mount, monkeypatch, capsys):
    writable = tmp_path / "store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(writable))
    write_synthetic("test/readonly/hopper-v0", [50] * 6)
    expected, _ = registry.load("test/readonly/hopper-v0")
    shutil.rmtree(writable / "test/readonly/hopper-v0" / minari_io.CACHE_DIR)  # as Minari itself writes a dataset
    store = read_only_view(mount, writable, tmp_path / "read-only")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    capsys.readouterr()
    transitions, info = registry.load("test/readonly/hopper-v0")
    assert capsys.readouterr().err.splitlines() == [
        f"offrl: the store {store} is read-only; converting test/readonly/hopper-v0 in memory each run (no cache written)"
    ]
    assert info.num_episodes == 6 and (transitions == expected).all()
    assert not (writable / "test/readonly/hopper-v0" / minari_io.CACHE_DIR).exists()


def test_a_dataset_in_a_full_store_trains_converted_in_memory(tmp_path, mount, monkeypatch):
    store = tmpfs(mount, tmp_path / "store", "1m")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    write_synthetic("test/full/hopper-v0", [50] * 6)
    shutil.rmtree(store / "test/full/hopper-v0" / minari_io.CACHE_DIR)
    fill_disk(store)
    load = "from offrl.data import registry; transitions, _ = registry.load('test/full/hopper-v0'); print(transitions.batch_size[0])"
    result = python("-c", load, store=store, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["300"]
    assert result.stderr.splitlines() == [
        f"offrl: the store {store} is full; converting test/full/hopper-v0 in memory each run (no cache written)"
    ]
    assert sorted(p.name for p in (store / "test/full/hopper-v0").iterdir()) == ["data"]  # no part of a cache


def test_report_skips_a_broken_config_and_names_a_cut_off_event_file(dataset, in_tmp_dir, capsys):
    assert fit("--config", str(write_config(in_tmp_dir / "bc.yaml", "bc", dataset))) == 0
    (run,) = run_dirs(in_tmp_dir)
    broken, cut = run.parent / "version_1", run.parent / "version_2"
    shutil.copytree(run, broken)
    shutil.copytree(run, cut)
    (broken / "config.yaml").write_text("model:\n  class_path: [unclosed\n")
    (events,) = cut.glob("events.out.tfevents.*")
    events.write_bytes(events.read_bytes()[:-7])  # the last record loses its end
    reader = EventAccumulator(str(events), size_guidance={"scalars": 0})
    reader.Reload()
    points = sum(len(reader.Scalars(tag)) for tag in reader.Tags()["scalars"])  # the whole records before the cut
    capsys.readouterr()
    assert offrl("report", "logs", "--out", "report") == 0
    captured = capsys.readouterr()

    def rel(path: Path) -> Path:
        return path.relative_to(in_tmp_dir)

    assert captured.err.splitlines() == [
        f"offrl: skipped {rel(broken)}: its config.yaml cannot be read (while parsing a flow sequence: expected ',' or ']', "
        "but got '<stream end>', line 3); fix or remove that file to report it",
        f"offrl: {rel(events)} is cut off (its run was killed or its disk was full mid-write); its {points} points before the "
        "cut are reported",
    ]
    (row,) = [line for line in Path("report/report.md").read_text().splitlines() if f"| {rel(run)}" in line]
    assert f"| {rel(run)}, {rel(cut)} |" in row  # the broken config's run is not in its group


def test_a_run_stopped_during_its_final_evaluation_gets_its_end_files_from_the_resume(dataset, in_tmp_dir, capsys):
    stop = {"class_path": "test_disk_faults.SignalAtEvaluation", "init_args": {"step": 50}}
    config = write_config(in_tmp_dir / "bc.yaml", "bc", dataset, every_n_train_steps=25, callbacks=[stop])
    settings = yaml.safe_load(config.read_text())
    settings["trainer"]["max_steps"] = 50  # the final evaluation follows the last update
    config.write_text(yaml.safe_dump(settings))
    assert fit("--config", str(config)) == 128 + signal.SIGTERM
    (run_dir,) = run_dirs(in_tmp_dir)
    assert final_state(run_dir)["global_step"] == 50
    assert not (run_dir / "summary.json").exists() and not (run_dir / "curves.png").exists()

    settings["trainer"]["callbacks"] = []
    config.write_text(yaml.safe_dump(settings))
    capsys.readouterr()
    assert fit("--config", str(config), "--ckpt_path", "last") == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["updates"] == 50 and [row["update"] for row in summary["evaluations"]] == [25, 50]
    assert summary["last"]["update"] == 50
    assert (run_dir / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert "offrl: trained 50 updates\noffrl: eval/normalized_score: last" in capsys.readouterr().out
