"""The `offrl` command as a user runs it: fit writes logs, test reads a checkpoint, bad input gets one sentence."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_synthetic

DATASET = "test/cli/hopper-v0"


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [50] * 20)
    return DATASET


def bc_config(path: Path, dataset_id: str, **trainer) -> Path:
    config = {
        "model": {"class_path": "offrl.algos.bc.BC", "init_args": {"hidden_dims": [32, 32]}},
        "data": {
            "class_path": "offrl.data.datamodules.TransitionDataModule",
            "init_args": {"dataset_id": dataset_id, "batch_size": 64, "steps_per_epoch": 20},
        },
        "trainer": {"max_steps": 40, "accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 10, **trainer},
        "evaluation": {"num_episodes": 2, "num_envs": 2},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def offrl(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "offrl.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def scalars(run_dir: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_fit_writes_events_config_and_checkpoints_then_test_reads_them(dataset, tmp_path):
    result = offrl("fit", "--config", str(bc_config(tmp_path / "bc.yaml", dataset)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "logs" / "bc" / "cli-hopper" / "version_0"
    assert (run_dir / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["data"]["init_args"]["dataset_id"] == dataset
    metrics = scalars(run_dir)
    assert {"train/bc_loss", "eval/return", "eval/normalized_score", "perf/action_latency_ms"} <= set(metrics)
    assert len(metrics["eval/return"]) == 2  # one evaluation per epoch of 20 updates
    # The console tells the run without TensorBoard: each evaluation, then a summary (also in summary.json).
    evaluations = [line for line in result.stdout.splitlines() if line.startswith("offrl: update ")]
    assert [line.split(":")[1] for line in evaluations] == [" update 20", " update 40"]
    assert all("normalized_score" in line and "return" in line for line in evaluations)
    assert "offrl: trained 40 updates in" in result.stdout and "offrl: eval/normalized_score: last" in result.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["updates"] == 40 and [row["update"] for row in summary["evaluations"]] == [20, 40]
    assert summary["last"]["eval/normalized_score"] == pytest.approx(metrics["eval/normalized_score"][-1])

    result = offrl(
        "test", "--config", str(run_dir / "config.yaml"), "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt"), cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "eval/return" in result.stdout and "eval/normalized_score" in result.stdout


def one_clear_sentence(result: subprocess.CompletedProcess, pattern: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert pattern in result.stderr, result.stderr


def test_unknown_dataset_id_exits_with_a_suggestion(tmp_path):
    config = bc_config(tmp_path / "bad.yaml", "offrl/pointmaze/umaz-v0")
    one_clear_sentence(offrl("fit", "--config", str(config), cwd=tmp_path), "did you mean offrl/pointmaze/umaze-v0")
    one_clear_sentence(offrl("data", "info", "offrl/mujoco/hoper/medium-v0", cwd=tmp_path), "offrl/mujoco/hopper/medium-v0")


def test_unknown_config_key_and_bad_value_exit_cleanly(dataset, tmp_path):
    config = bc_config(tmp_path / "bc.yaml", dataset)
    one_clear_sentence(offrl("fit", "--config", str(config), "--model.init_args.learning_rate", "1", cwd=tmp_path), "learning_rate")
    one_clear_sentence(offrl("fit", "--config", str(config), "--model.init_args.lr", "-1", cwd=tmp_path), "model.lr must be positive")


def test_missing_or_corrupt_hdf5_exits_cleanly(tmp_path):
    args = ("data", "import-d4rl", "--id", "imported/x/y-v0", "--env", "Hopper-v5")
    one_clear_sentence(offrl(*args[:2], str(tmp_path / "absent.hdf5"), *args[2:], cwd=tmp_path), "does not exist")
    (tmp_path / "junk.hdf5").write_bytes(b"not an hdf5 file" * 100)
    one_clear_sentence(offrl(*args[:2], str(tmp_path / "junk.hdf5"), *args[2:], cwd=tmp_path), "truncated or corrupt")


def test_ddp_with_two_cpu_processes_runs_a_short_fit(dataset, tmp_path):
    config = bc_config(tmp_path / "ddp.yaml", dataset)
    result = offrl(
        "fit", "--config", str(config), "--trainer.devices", "2", "--trainer.strategy", "ddp", cwd=tmp_path, timeout=400
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "logs" / "bc" / "cli-hopper" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "eval/return" in scalars(run_dir)


def test_a_run_prints_none_of_the_messages_a_user_can_do_nothing_about(dataset, tmp_path):
    """Minari's author_email, Lightning's pytree deprecation, IterableDataset __len__, manual-optimisation
    checkpoint code sample, log-interval warning and cloud-logger tip, gymnasium-robotics' Adroit notice: gone; the
    run's own lines stay."""
    from offrl.cli import KNOWN_NOISE

    env = {key: value for key, value in os.environ.items() if key != "PYTHONWARNINGS"} | {"OMP_NUM_THREADS": "1"}
    config = bc_config(tmp_path / "bc.yaml", dataset, log_every_n_steps=50)
    result = subprocess.run(
        [sys.executable, "-m", "offrl.cli", "fit", "--config", str(config), "--checkpoint.every_n_train_steps", "10"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for message, _ in KNOWN_NOISE:
        assert not re.search(message, result.stderr), message
    for text in ("litlogger", "were updated in v1.2.1", "saved_models"):
        assert text not in result.stderr, text
    assert "offrl: trained" in result.stdout


def test_the_noise_filter_lets_other_warnings_through():
    import warnings

    from offrl.cli import silence_known_noise

    silence_known_noise()
    with pytest.warns(UserWarning, match="a warning offrl does not know"):
        warnings.warn("a warning offrl does not know")


def test_without_a_terminal_progress_comes_as_plain_lines_in_updates(dataset, in_tmp_dir, capsys):
    """stdout is a pipe here, as in a log file: after the one duration estimate, a line per interval with the update,
    max_steps, updates/s and the time left."""
    from conftest import trainer

    from offrl.algos.bc import BC
    from offrl.callbacks.report import RunReport
    from offrl.data.datamodules import TransitionDataModule

    report = RunReport(estimate_after_seconds=0.0, estimate_after_updates=1, progress_every_seconds=0.0)
    trainer(30, [report], evaluate=False).fit(BC(hidden_dims=[8]), TransitionDataModule(dataset, batch_size=8, steps_per_epoch=30))
    out = capsys.readouterr().out
    assert re.search(r"offrl: ≈ .* to trainer.max_steps 30 on cpu at [\d.]+ updates/s \(update 2 now\)", out)
    steps = [int(m) for m in re.findall(r"offrl: update (\d+)/30 \(\d+ %\), [\d.]+ updates/s, ≈ .* left", out)]
    assert steps == list(range(3, 31))


def test_help_names_the_commands_and_algorithms_and_takes_short_algorithm_names(tmp_path):
    top = offrl("--help", cwd=tmp_path)
    assert top.returncode == 0
    for text in ("offrl data {list,info,generate,import-d4rl}", "offrl report", "MOPO, MBPO", "offrl.algos.mopo", "ADMPOOffline, ADMPOOnline", "usage: offrl"):
        assert text in top.stdout, text
    one = offrl("fit", "--model.help", "MOPO", cwd=tmp_path)
    assert one.returncode == 0 and "--model.dynamics_members" in one.stdout and "--model.max_window" not in one.stdout


def test_offrl_test_measures_episodes_the_training_evaluations_never_saw(dataset, in_tmp_dir):
    """`offrl test` evaluates on seed + 1 by default; with test_seed = seed it re-measures the training evaluation."""
    import lightning as L

    from conftest import trainer

    from offrl.algos.bc import BC
    from offrl.callbacks.evaluation import EvaluationCallback
    from offrl.data.datamodules import TransitionDataModule

    L.seed_everything(0)
    model, data = BC(hidden_dims=[8]), TransitionDataModule(dataset, batch_size=8, steps_per_epoch=20)
    fit = trainer(20, [EvaluationCallback(num_episodes=2, num_envs=2, seed=5)])
    fit.fit(model, data)
    trained = fit.callback_metrics["eval/return"].item()
    returns = {}
    for test_seed in (None, 5):
        evaluation = EvaluationCallback(num_episodes=2, num_envs=2, seed=5, test_seed=test_seed)
        (result,) = trainer(20, [evaluation]).test(model, data, verbose=False)
        returns[test_seed] = result["eval/return"]
    assert returns[5] == pytest.approx(trained, rel=1e-6) and returns[None] != pytest.approx(trained, rel=1e-3)
