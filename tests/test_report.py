"""What a newcomer sees: curves.png and summary.json in each run folder, `offrl report`'s table checked against the
event files of real tiny runs, `offrl test` beside the run it tests, the config in TensorBoard, a progress bar in
updates, config mistakes in one line with a close match, and `offrl data list` without the training imports."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from conftest import write_synthetic
from test_cli import bc_config
from test_errors import offrl, refused

DATASET = "test/report/hopper-v0"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real 40-update BC runs: seeds 0 and 1 of one config, and seed 0 of a wider network."""
    write_synthetic(DATASET, [50] * 12)
    root = tmp_path_factory.mktemp("report")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for seed, width in ((0, 16), (1, 16), (0, 32)):
            config = str(bc_config(root / f"bc-{seed}-{width}.yaml", DATASET))
            assert offrl("fit", "--config", config, "--seed_everything", str(seed), "--model.init_args.hidden_dims", f"[{width}, {width}]") == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.fixture(autouse=True)
def in_root(runs, monkeypatch):
    monkeypatch.chdir(runs)


def run_dir(version: int) -> Path:
    return Path("logs/bc/report-hopper") / f"version_{version}"


def scores(path: Path) -> list[float]:
    events = EventAccumulator(str(path), size_guidance={"scalars": 0})
    events.Reload()
    return [event.value for event in events.Scalars("eval/normalized_score")]


def cell(table: str, title: str, row: str) -> str:
    """The one data cell of `row` in the Markdown table under `## title` (a report of one dataset)."""
    section = table.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    (line,) = [line for line in section.splitlines() if line.startswith(f"| {row} |")]
    return line.split(" | ")[1].rstrip(" |")


def test_offrl_report_tables_iqm_and_intervals_computed_from_the_event_files(runs, capsys):
    assert offrl("report", "logs", "--out", "report", "--reps", "300", "--seed", "3") == 0
    table = Path("report/report.md").read_text()
    assert table in capsys.readouterr().out
    # Seeds 0 and 1 of the 16-wide config (versions 0 and 1) are one group, named by the setting that tells it
    # from the 32-wide run (version 2), which is its own.
    narrow, wide = "bc (hidden_dims=[16, 16])", "bc (hidden_dims=[32, 32])"
    last = {v: scores(run_dir(v))[-1] for v in range(3)}
    best = {v: max(scores(run_dir(v))) for v in range(3)}
    # Direct computation: rliable's estimates on the last evaluations read with tensorboard's own reader.
    from rliable import library, metrics

    direct = np.array([[last[0]], [last[1]]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # arch prefers a Generator; rliable passes a RandomState
        points, intervals = library.get_interval_estimates(
            {"g": direct}, lambda x: np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x)]), reps=300,
            random_state=np.random.RandomState(3))
    assert points["g"][0] == pytest.approx(scipy.stats.trim_mean(direct.ravel(), 0.25)) and points["g"][1] == pytest.approx(direct.mean())
    for title, column in (("Final score: IQM", 0), ("Final score: mean", 1)):
        shown = [float(x) for x in re.findall(r"[-\d.e+]+", cell(table, title, narrow).split(" (n=")[0])]
        assert shown == pytest.approx([points["g"][column], *intervals["g"][:, column]], rel=2e-3)
        assert cell(table, title, narrow).endswith("(n=2)")
        assert float(cell(table, title, wide).split(" (n=1)")[0]) == pytest.approx(last[2], rel=2e-3)
    assert float(cell(table, "Best evaluation", narrow)) == pytest.approx((best[0] + best[1]) / 2, rel=2e-3)
    # Every run in runs.csv with its last and best score; the plots exist.
    with open("report/runs.csv") as file:
        rows = {Path(row["run"]).name: row for row in csv.DictReader(file)}
    assert sorted(rows) == ["version_0", "version_1", "version_2"]
    for v in range(3):
        row = rows[f"version_{v}"]
        assert float(row["last"]) == pytest.approx(last[v]) and float(row["best"]) == pytest.approx(best[v])
        assert row["algorithm"] == (wide if v == 2 else narrow) and int(row["last_update"]) == 40
    for png in ("aggregate.png", "performance_profile.png", "probability_of_improvement.png"):
        assert (Path("report") / png).read_bytes().startswith(PNG)
    assert "| bc (hidden_dims=[16, 16]) | bc (hidden_dims=[32, 32]) |" in table  # the pair of P(X > Y)


def test_report_tables_the_score_asked_for(runs, capsys):
    """--metric picks the score (success on goal tasks, say, where a run also logs a normalised return)."""
    assert offrl("report", "logs", "--out", "report-return", "--reps", "100", "--metric", "eval/return") == 0
    table = Path("report-return/report.md").read_text()
    events = EventAccumulator(str(run_dir(2)), size_guidance={"scalars": 0})
    events.Reload()
    assert "Score: report/hopper-v0: eval/return." in table
    last_return = events.Scalars("eval/return")[-1].value
    assert float(cell(table, "Final score: IQM", "bc (hidden_dims=[32, 32])").split(" (n=1)")[0]) == pytest.approx(last_return, rel=2e-3)


def test_each_run_folder_has_its_summary_and_curves(runs):
    for version in range(3):
        assert (run_dir(version) / "curves.png").read_bytes().startswith(PNG)
        summary = yaml.safe_load((run_dir(version) / "summary.json").read_text())
        assert summary["last"]["eval/normalized_score"] == pytest.approx(scores(run_dir(version))[-1])


def test_offrl_test_writes_beside_the_run_it_tests(runs, capsys):
    before = sorted(p.name for p in run_dir(0).parent.iterdir())
    assert offrl("test", "--config", str(run_dir(0) / "config.yaml"), "--ckpt_path", str(run_dir(0) / "checkpoints" / "last.ckpt")) == 0
    assert sorted(p.name for p in run_dir(0).parent.iterdir()) == before  # no new version folder
    summary = yaml.safe_load((run_dir(0) / "test" / "summary.json").read_text())
    assert summary["update"] == 40 and "eval/normalized_score" in summary["test"]
    assert f"offrl: test of update 40: normalized_score" in capsys.readouterr().out
    assert len(scores(run_dir(0))) == 2  # the training curve is untouched


def test_tensorboard_holds_the_resolved_config_as_hyperparameters_and_text(runs):
    (events_file,) = run_dir(0).glob("events.out.tfevents.*")
    tags = {value.tag: value for event in EventFileLoader(str(events_file)).Load() for value in event.summary.value}
    assert {"_hparams_/experiment", "_hparams_/session_start_info", "config/text_summary"} <= set(tags)
    start = tags["_hparams_/session_start_info"].metadata.plugin_data.content
    assert b"model.init_args.hidden_dims" in start and b"data.init_args.dataset_id" in start


def test_config_mistakes_are_one_line_naming_the_key_the_file_and_a_close_match(runs, capsys):
    config = str(bc_config(Path("mistakes.yaml"), DATASET))
    cases = {
        ("--model.init_args.hiden_dims", "[8]"): "model.hiden_dims is not a setting of offrl.algos.bc.BC; did you mean hidden_dims? (config mistakes.yaml)",
        ("--data.init_args.batch_sise", "8"): "data.batch_sise is not a setting of offrl.data.datamodules.TransitionDataModule; did you mean batch_size?",
        ("--trainr.max_steps", "8"): "trainr.max_steps is not an option of offrl; did you mean trainer.max_steps?",
        ("--model", "BCC"): "model.class_path BCC is not a class offrl knows; did you mean BC?",
        ("--model.init_args.lr", "abc"): "model.lr: Expected a float. Got value: abc",
    }
    for args, sentence in cases.items():
        line = refused(capsys, "fit", "--config", config, *args)
        assert sentence in line, line
    assert "does not exist; check the path" in refused(capsys, "fit", "--config", "absent.yaml")
    assert offrl("fit", "--config", config, "--model", "BC", "--trainer.max_steps", "2") == 0  # short names are taken


def test_the_progress_bar_counts_updates_to_max_steps(runs, monkeypatch, capsys):
    """On a terminal: one bar in updates, with performance.updates_per_step 4 (10 trainer steps)."""
    from offrl.callbacks.report import UpdateProgressBar
    from offrl.cli.fit import run_lightning

    config = str(bc_config(Path("bar.yaml"), DATASET, enable_progress_bar=True, log_every_n_steps=20))
    cli = run_lightning(["--config", config, "--performance.updates_per_step", "4", "--trainer.logger", "false"], run=False)
    assert isinstance(cli.trainer.progress_bar_callback, UpdateProgressBar)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    cli.trainer.fit(cli.model, cli.datamodule)
    err = capsys.readouterr().err
    assert re.search(r"training: 100%.*\| 40/40 \[", err), err[-2000:]
    assert "Epoch" not in err


def test_data_list_answers_without_the_training_imports(tmp_path):
    code = "import sys; from offrl.cli import main; main(['data', 'list']); print(sorted(m for m in ('lightning', 'tensordict', 'torchrl') if m in sys.modules))"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "offrl/pointmaze/umaze-100k-v0" in result.stdout and result.stdout.strip().endswith("[]")
    print(f"offrl data list: {seconds:.2f} s")
    assert seconds < 2.0


def test_an_online_run_is_reported_under_its_env(tmp_path):
    """An online run has no dataset id: its column is its env (data.init_args.env_id of a ReplayDataModule)."""
    from offrl.reports import read_run

    run = tmp_path / "sac" / "Hopper" / "version_0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({
        "seed_everything": 1, "model": {"class_path": "offrl.algos.sac.SAC"},
        "data": {"class_path": "offrl.data.replay.ReplayDataModule", "init_args": {"env_id": "Hopper-v5", "seed": 1}},
    }))
    read = read_run(run, [])
    assert (read.algorithm, read.dataset, read.seed) == ("sac", "Hopper-v5", 1)
