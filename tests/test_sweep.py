"""`offrl sweep`: a study file (configs x datasets x seeds) run on Ray Tune with 2 trials at a time, stopped with
Ctrl-C and resumed by the same command without running a finished trial again, failed trials named with offrl's
one sentence, and `offrl report` on the study checked against the event files. Study files' mistakes in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import write_synthetic
from test_cli import bc_config
from test_errors import refused

DATASETS = ("test/sweep-a/hopper-v0", "test/sweep-b/hopper-v0")


def write_study(root: Path) -> Path:
    """2 configs (16-wide BC, and 32-wide as a layer over it) x 2 datasets x 2 seeds, and a third config with a batch
    size of 0; each run tested when its fit ends with one.yaml layered on its config (1 episode instead of 2; the plain
    `offrl test` folder is test_report's)."""
    (root / "configs").mkdir()
    config = bc_config(root / "configs" / "bc16.yaml", DATASETS[0])
    settings = yaml.safe_load(config.read_text())
    settings["model"]["init_args"]["hidden_dims"] = [16, 16]
    config.write_text(yaml.safe_dump(settings))
    (root / "configs" / "wide.yaml").write_text("model:\n  init_args:\n    hidden_dims: [32, 32]\n")
    (root / "configs" / "one.yaml").write_text("evaluation:\n  num_episodes: 1\n")
    broken = yaml.safe_load((root / "configs" / "bc16.yaml").read_text())
    broken["data"]["init_args"]["batch_size"] = 0  # parses (so the study starts) but fails when the run builds its data
    (root / "configs" / "broken.yaml").write_text(yaml.safe_dump(broken))
    study = {
        "name": "tiny",
        "configs": ["configs/bc16.yaml", ["configs/bc16.yaml", "configs/wide.yaml"], "configs/broken.yaml"],
        "seeds": [0, 1],
        "grid": {"data.init_args.dataset_id": list(DATASETS)},
        "set": {"trainer.max_steps": 200, "data.init_args.steps_per_epoch": 50, "checkpoint.every_n_train_steps": 25},
        "tests": ["configs/one.yaml"],
        "trial": {"cpus": 1},
        "concurrent": 2,
    }
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def sweep(root: Path, stop_when=None, study: str = "study.yaml") -> subprocess.CompletedProcess:
    """`offrl sweep study.yaml` as a user runs it; with `stop_when`, a Ctrl-C (SIGINT) once it holds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "RAY_DEDUP_LOGS": "0"}
    process = subprocess.Popen([sys.executable, "-m", "offrl.cli", "sweep", study, "--cpus", "2"], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if stop_when is not None:
        deadline = time.monotonic() + 400
        while process.poll() is None and not stop_when() and time.monotonic() < deadline:
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=600)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def run_folders(root: Path) -> list[Path]:
    return sorted(config.parent for config in (root / "logs" / "tiny").glob("*/bc/*/version_*/config.yaml"))


def finished(root: Path) -> list[Path]:
    """The runs whose fit and test ended."""
    return [run for run in run_folders(root) if all((run / folder / "summary.json").exists() for folder in (".", "test-one"))]


def resumable(root: Path) -> list[Path]:
    return [run for run in run_folders(root) if not (run / "summary.json").exists() and (run / "checkpoints" / "last.ckpt").exists()]


def last_score(run: Path) -> float:
    events = EventAccumulator(str(run), size_guidance={"scalars": 0})
    events.Reload()
    return events.Scalars("eval/normalized_score")[-1].value


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """The study stopped by a Ctrl-C while one trial has finished and another is mid-run, then resumed."""
    for seed, dataset in enumerate(DATASETS):
        write_synthetic(dataset, [50] * 12, seed=seed)
    root = tmp_path_factory.mktemp("sweep")
    write_study(root)
    stopped = sweep(root, stop_when=lambda: finished(root) and resumable(root))
    before = {run: (sorted(p.name for p in run.iterdir()), run in finished(root), (run / "summary.json").exists()) for run in run_folders(root)}
    resumed = sweep(root)
    return root, stopped, before, resumed


def test_a_stopped_study_resumes_without_running_a_finished_trial_again(study):
    root, stopped, before, resumed = study
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "the same command resumes it" in stopped.stderr
    assert "offrl: resuming study" in resumed.stderr
    runs = run_folders(root)
    assert len(runs) == 8 and all(run.name == "version_0" for run in runs)  # one run per good trial, never a second
    assert finished(root) == runs
    done_before = [run for run, (_, done, _) in before.items() if done]
    cut_before = [run for run, (files, _, fitted) in before.items() if not fitted and "checkpoints" in files]
    assert done_before and cut_before
    for run in done_before:  # untouched: no second start, no new event file
        assert sorted(p.name for p in run.iterdir()) == before[run][0]
    for run in cut_before:  # went on from its own checkpoint
        assert (run / "config.start-2.yaml").exists()
        assert yaml.safe_load((run / "config.start-2.yaml").read_text())["ckpt_path"].endswith("last.ckpt")
    for run in runs:  # each trial its own threads and settings
        config = yaml.safe_load((run / "config.yaml").read_text())
        assert config["performance"]["threads"] == 1 and config["trainer"]["max_steps"] == 200
        assert config["data"]["init_args"]["seed"] == config["seed_everything"]  # a seed is the sampler's too
    assert sorted(yaml.safe_load((run / "config.yaml").read_text())["seed_everything"] for run in runs) == [0] * 4 + [1] * 4


def test_failed_trials_are_named_with_their_one_sentence(study):
    _, _, _, resumed = study
    assert resumed.returncode == 1
    failed = [line for line in resumed.stderr.splitlines() if line.startswith("offrl: trial failed:")]
    assert len(failed) == 4 and all("broken" in line and "data.batch_size must be a positive integer, got 0" in line for line in failed)
    assert "4 trial(s) failed" in resumed.stderr.splitlines()[-1]


def test_report_of_the_study_tables_configs_by_datasets_with_the_iqm_of_the_event_files(study, monkeypatch):
    from test_errors import offrl

    root = study[0]
    monkeypatch.chdir(root)
    assert offrl("report", "logs/tiny", "--out", "report", "--reps", "200") == 0
    table = (root / "report" / "report.md").read_text()
    iqm = table.split("## Final score: IQM", 1)[1].split("\n## ", 1)[0]
    assert "| algorithm | sweep-a/hopper-v0 | sweep-b/hopper-v0 |" in iqm
    for width in (16, 32):
        (row,) = [line for line in iqm.splitlines() if line.startswith(f"| bc (hidden_dims=[{width}, {width}]) |")]
        for dataset, shown in zip(DATASETS, row.rstrip(" |").split(" | ")[1:]):
            runs = [run for run in run_folders(root)
                    if yaml.safe_load((run / "config.yaml").read_text())["data"]["init_args"]["dataset_id"] == dataset
                    and yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["hidden_dims"] == [width, width]]
            assert len(runs) == 2 and shown.endswith("(n=2)")
            expected = scipy.stats.trim_mean(np.array([last_score(run) for run in runs]), 0.25)
            assert float(shown.split(" [")[0]) == pytest.approx(expected, rel=2e-3)
    # the study's test of every run: logged beside it with its own settings, tabled from its summary
    tested = {}
    for run in run_folders(root):
        config = yaml.safe_load((run / "config.yaml").read_text())
        for folder, episodes in (("test-one", 1),):
            assert yaml.safe_load((run / folder / "config.yaml").read_text())["evaluation"]["num_episodes"] == episodes
            summary = json.loads((run / folder / "summary.json").read_text())
            assert summary["update"] == 200
            key = (config["data"]["init_args"]["dataset_id"], config["model"]["init_args"]["hidden_dims"][0], folder)
            tested.setdefault(key, []).append(summary["test"]["eval/normalized_score"])
    for dataset in DATASETS:
        section = table.split(f"## offrl test of the final checkpoint on {dataset.split('/', 1)[1]}", 1)[1].split("\n## ", 1)[0]
        assert "| algorithm | test-one |" in section
        for width in (16, 32):
            (row,) = [line for line in section.splitlines() if line.startswith(f"| bc (hidden_dims=[{width}, {width}]) |")]
            for folder, shown in zip(("test-one",), row.rstrip(" |").split(" | ")[1:], strict=True):
                assert shown.endswith("(n=2)")
                expected = scipy.stats.trim_mean(np.array(tested[dataset, width, folder]), 0.25)
                assert float(shown.split(" [")[0]) == pytest.approx(expected, rel=2e-3)
    assert len((root / "report" / "tests.csv").read_text().splitlines()) == 1 + 8


def test_study_file_mistakes_are_one_sentence(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text("model: {}\n")
    cases = {
        "configs: [missing.yaml]\n": "config missing.yaml matches no file",
        "configs: [a.yaml]\ngrids: {seed_everything: [0]}\n": "grids is not a study key",
        "configs: [a.yaml]\ngrid: {seed_everything: 0}\n": "grid must map each key to a non-empty list",
        "configs: [a.yaml]\ngrid: {seed_everything: [0]}\nset: {seed_everything: 1}\n": "seed_everything is given twice",
        "configs: [a.yaml]\ngrid: {seed_everything: [0]}\nsearch: {algorithm: optuna, metric: eval/return, mode: max, space: {model.init_args.lr: {loguniform: [1.0e-4, 1.0e-3]}}}\n":
            "optuna chooses every setting itself, so it takes no grid",
        "configs: [a.yaml]\nsearch: {space: {model.init_args.lr: {normal: [0, 1]}}}\n": "search.space.model.init_args.lr must be one of",
        "configs: [a.yaml]\nset: {ckpt_path: last}\n": "ckpt_path is set by the sweep for each trial",
        "configs: [a.yaml]\ntrial: {cpus: 0}\n": "trial.cpus must be > 0",
        "configs: [{path: a.yaml, set: {trainer.max_steps: 5}}]\nset: {trainer.max_steps: 10}\n": "trainer.max_steps is given twice",
        "configs: [{file: a.yaml}]\n": "a configs entry is a path, a list of paths (layered) or {path: FILE, set: {key: value}}",
        "configs: [[a.yaml, missing.yaml]]\n": "config missing.yaml matches no file",
        "configs: ['nothing*.yaml']\n": "config nothing*.yaml matches no file",
        "configs: [a.yaml]\ntests: [plain, missing.yaml]\n": "config missing.yaml matches no file",
        "configs: [a.yaml]\ntests: [plain, plain]\n": "would log two tests into one folder (test, test)",
        "configs: [a.yaml]\nseeds: [0, 0]\n": "seeds must list distinct integers",
        "configs: [a.yaml]\nseeds: [0]\ngrid: {data.init_args.seed: [1]}\n": "seeds sets data.init_args.seed for each trial",
    }
    for text, expected in cases.items():
        Path("study.yaml").write_text(text)
        line = refused(capsys, "sweep", "study.yaml", "--dry-run")
        assert expected in line, line
    Path("a.yaml").write_text(bc_config(tmp_path / "bc.yaml", "test/sweep/hopper-v0").read_text())  # a config that parses
    Path("study.yaml").write_text("configs: [a.yaml]\nseeds: [0, 1]\ngrid: {model.init_args.hiden_dims: [[8], [16]]}\n")
    line = refused(capsys, "sweep", "study.yaml")  # every trial's settings are parsed before anything starts
    assert line.startswith("offrl: error: study study: the trials of ") and "a.yaml --model.init_args.hiden_dims '[8]' cannot start: " \
           "model.hiden_dims is not a setting of offrl.algos.bc.BC; did you mean hidden_dims?" in line
    Path("typo.yaml").write_text("evaluation:\n  num_episode: 3\n")  # a test's layer is parsed too
    Path("study.yaml").write_text("configs: [a.yaml]\ntests: [plain, typo.yaml]\n")
    line = refused(capsys, "sweep", "study.yaml", "--dry-run")
    assert line.startswith("offrl: error: study study: the test with ") and "typo.yaml of the trials of " in line and "num_episode" in line, line
    Path("study.yaml").write_text("configs: [a.yaml]\ntrial: {gpus: 1}\n")  # this machine has none: refused, not pending
    assert "each trial asks for trial.gpus 1 but this machine has 0" in refused(capsys, "sweep", "study.yaml", "--cpus", "1")
    assert not Path("logs").exists()
    Path("study.yaml").write_text("configs: [a.yaml]\ngrid: {seed_everything: [0, 1]}\n")
    from test_errors import offrl

    assert offrl("sweep", "study.yaml", "--dry-run") == 0  # allowed, with a note on the sampler's seed
    assert "varies seed_everything but not data.init_args.seed, so every trial draws the same batches" in capsys.readouterr().err
    Path("b.yaml").write_text(Path("a.yaml").read_text())
    Path("study.yaml").write_text("configs: [a.yaml, {path: b.yaml, set: {model.init_args.lr: 0.001}}]\nseeds: [0, 1]\n"
                                  "grid: {model.init_args.hidden_dims: [[8], [16]]}\nset: {trainer.max_steps: 10}\n")
    assert offrl("sweep", "study.yaml", "--dry-run") == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[0] == "study study: 8 trials, 1 CPUs and 0 GPUs each"
    assert listed[1].endswith("a.yaml --trainer.max_steps 10 --model.init_args.hidden_dims '[8]' --seed_everything 0 --data.init_args.seed 0")
    # the config's own setting goes to its trials only, after the study's and before the grid point's
    assert all(("--model.init_args.lr 0.001" in line) == ("b.yaml" in line) for line in listed[1:])
    assert listed[8].endswith("b.yaml --trainer.max_steps 10 --model.init_args.lr 0.001 --model.init_args.hidden_dims '[16]' "
                              "--seed_everything 1 --data.init_args.seed 1")


def test_an_optuna_search_draws_settings_within_its_space_and_names_the_best(study):
    root = study[0]
    search = {
        "name": "search", "configs": ["configs/bc16.yaml"],
        "set": {"seed_everything": 0, "data.init_args.dataset_id": DATASETS[0], "trainer.max_steps": 40},
        "search": {"samples": 2, "algorithm": "optuna", "metric": "eval/normalized_score", "mode": "max",
                   "space": {"model.init_args.lr": {"loguniform": [1.0e-4, 1.0e-2]}}},
        "concurrent": 2,
    }
    (root / "search.yaml").write_text(yaml.safe_dump(search))
    result = sweep(root, study="search.yaml")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = {yaml.safe_load((run / "config.yaml").read_text())["model"]["init_args"]["lr"]: run
            for run in (root / "logs" / "search").glob("*/bc/*/version_0")}
    assert len(runs) == 2 and all(1e-4 <= rate <= 1e-2 for rate in runs)
    finals = runs
    (best,) = [line for line in result.stdout.splitlines() if line.startswith("offrl: best final eval/normalized_score")]
    top = max(finals, key=lambda rate: last_score(finals[rate]))
    assert f"'model.init_args.lr': {top}" in best


def test_every_shipped_study_reads_and_each_of_its_trials_parses_as_an_offrl_fit_command(monkeypatch):
    """The study files a user runs (studies/*.yaml): each is read, and every distinct trial command line is parsed as
    `offrl fit` parses it (sweep's own check before a study starts), so a setting its config does not take fails here."""
    from offrl.cli.sweep import check_trials, read_study

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)
    studies = sorted((root / "studies").glob("*.yaml"))
    assert len(studies) >= 6
    for path in studies:
        study = read_study(path.relative_to(root))
        assert study.name == path.stem and study.trial_count() > 0
        check_trials(study)
