"""`offrl sweep STUDY.yaml`: a study (base configs x a grid of settings, or a search over them) run on Ray Tune, each
trial an ordinary `offrl fit` run; `offrl report` then tables it.

A study file (keys as on the `offrl fit` command line):

    name: hopper-baselines              # the study's folder: <storage>/<name> (default: the file's name)
    configs:                            # one axis of the grid: the base config of each trial (globs allowed)
      - configs/bc/hopper-medium.yaml
      - path: configs/iql/hopper-medium.yaml   # a config with settings of its own (its trials only)
        set: {model.init_args.expectile: 0.8}
      - [configs/value_extraction/pointmaze-umaze.yaml, configs/value_extraction/crl.yaml]  # layered, as --config a --config b
    seeds: [0, 1, 2]                    # an axis: each sets seed_everything and data.init_args.seed (the sampler's)
    grid:                               # more axes: every combination of these values
      model.init_args.hidden_dims: [[256, 256], [512, 512]]
    set:                                # the same for every trial
      trainer.max_steps: 3000
    search:                             # optional: sample settings instead of (or beside) a grid
      samples: 8                        # trials drawn per grid point (per config)
      algorithm: random                 # random (Tune's own sampler) or optuna (no grid then)
      metric: eval/normalized_score     # what optuna maximises (mode: max) or minimises (mode: min)
      mode: max
      space:
        model.init_args.actor_lr: {loguniform: [1.0e-4, 1.0e-3]}
    tests:                              # optional: `offrl test`s of each trial's last checkpoint once its fit ends
      - plain                           # the run's own config: logged in <run>/test
      - configs/value_extraction/opex.yaml   # that config layered on it: logged in <run>/test-opex
    trial: {cpus: 1, gpus: 0}           # what each trial holds; the CPUs are its torch threads
    concurrent: 2                       # trials at once (default: as many as the resources allow)

Ray Tune keeps the study in <storage>/<name>/ (its experiment state and one folder per trial, with Tune's
result.json and progress.csv); each trial's offrl run lives in that trial's folder
(<trial>/<algorithm>/<dataset>/version_0), its tests in that run's test folders (`offrl report` tables both). The
same command resumes a stopped study: finished trials are kept, the
others resume their own run from its last checkpoint. Before anything starts, every trial's settings are parsed as
`offrl fit` parses them (`--dry-run` does that too): a typo in a key is refused at once, not as failed trials.
"""

from __future__ import annotations

import argparse
import glob
import itertools
import json
import math
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from offrl.errors import OffrlError
from offrl.reports import SCORE_METRICS, test_folder_name

STUDY_KEYS = ("name", "configs", "seeds", "grid", "set", "search", "tests", "trial", "concurrent")
PLAIN_TEST = "plain"  # a `tests` entry: the run's own config, nothing layered
DISTRIBUTIONS = ("uniform", "loguniform", "randint", "choice")
# What a study's `seeds` sets: the global seed (networks, roll-outs) and the sampler's own stream, which is not
# derived from the global seed (a grid over seed_everything alone gives every seed the same batches).
SEED_KEYS = ("seed_everything", "data.init_args.seed")
STUDY_COPY = "study.yaml"  # the study file as first run, beside Tune's state: a resume must run the same study


@dataclass
class Search:
    samples: int
    algorithm: str
    metric: str | None
    mode: str | None
    space: dict[str, dict[str, list]]


@dataclass
class Study:
    name: str
    configs: list[str | list[str]]  # each trial's config: a resolved path, or the paths layered in order
    config_settings: dict[str, dict[str, Any]]  # a config entry's own settings, by its config_key
    seeds: list[int] | None
    grid: dict[str, list]
    fixed: dict[str, Any]
    search: Search | None
    tests: list[str | None]  # the config layered on a run's own for each `offrl test` (None: nothing)
    cpus: float
    gpus: float
    concurrent: int | None
    text: str = field(repr=False)

    def grid_trials(self) -> list[dict]:
        """Every grid point: {"config": path, "seed": seed, "settings": {key: value}} (a search draws `samples` at each)."""
        keys = list(self.grid)
        return [
            {"config": config, "seed": seed, "settings": dict(zip(keys, values))}
            for config in self.configs
            for seed in (self.seeds or [None])
            for values in itertools.product(*(self.grid[key] for key in keys))
        ]

    def trial_count(self) -> int:
        return len(self.grid_trials()) * (self.search.samples if self.search else 1)


def read_study(path: Path) -> Study:
    """The study file, checked: every mistake is one sentence naming the key and the fix."""
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        raise OffrlError(f"study file {path} does not exist; give the YAML that lists the study's configs") from None
    except yaml.YAMLError as err:
        raise OffrlError(f"study file {path} is not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise OffrlError(f"study file {path} holds no mapping; it needs at least `configs:` (a list of config files)")
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise OffrlError(f"study file {path}: {', '.join(unknown)} is not a study key; the keys are {', '.join(STUDY_KEYS)}")
    name = str(raw.get("name") or path.stem)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise OffrlError(f"study file {path}: name {name!r} must be letters, digits, '_', '.' and '-' (it names a folder)")
    configs, config_settings = study_configs(path, raw.get("configs"))
    seeds = raw.get("seeds")
    if seeds is not None and not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
                                  and len(set(seeds)) == len(seeds)):
        raise OffrlError(f"study file {path}: seeds must list distinct integers (e.g. seeds: [0, 1, 2]), got {seeds!r}")
    grid = raw.get("grid") or {}
    if not isinstance(grid, dict) or not all(isinstance(values, list) and values for values in grid.values()):
        raise OffrlError(f"study file {path}: grid must map each key to a non-empty list of values (e.g. seed_everything: [0, 1, 2])")
    fixed = raw.get("set") or {}
    if not isinstance(fixed, dict):
        raise OffrlError(f"study file {path}: set must map keys to one value each (e.g. trainer.max_steps: 3000)")
    own_keys = {key for settings in config_settings.values() for key in settings}
    for key in [*grid, *fixed, *own_keys]:
        check_setting_key(path, key)
        if seeds is not None and key in SEED_KEYS:
            raise OffrlError(f"study file {path}: seeds sets {key} for each trial; remove it from grid and set")
    search = read_search(path, raw.get("search"), grid, len(configs), seeds)
    tests = read_tests(path, raw.get("tests"))
    places = [set(grid), set(fixed), set(search.space if search else {}), own_keys]
    overlap = sorted({key for a, b in itertools.combinations(places, 2) for key in a & b})
    if overlap:
        raise OffrlError(f"study file {path}: {', '.join(overlap)} is given twice (grid, set, search.space, a config's set); keep it in one place")
    trial = raw.get("trial") or {}
    unknown = sorted(set(trial) - {"cpus", "gpus"}) if isinstance(trial, dict) else ["trial"]
    if unknown:
        raise OffrlError(f"study file {path}: trial takes cpus and gpus (e.g. trial: {{cpus: 1, gpus: 0}}), not {', '.join(unknown)}")
    cpus, gpus = trial.get("cpus", 1), trial.get("gpus", 0)
    if not (isinstance(cpus, (int, float)) and cpus > 0) or not (isinstance(gpus, (int, float)) and gpus >= 0):
        raise OffrlError(f"study file {path}: trial.cpus must be > 0 and trial.gpus >= 0, got cpus {cpus!r}, gpus {gpus!r}")
    concurrent = raw.get("concurrent")
    if concurrent is not None and not (isinstance(concurrent, int) and concurrent > 0):
        raise OffrlError(f"study file {path}: concurrent must be a positive integer (trials at once), got {concurrent!r}")
    varied = set(grid) | set(search.space if search else {})
    if "seed_everything" in varied and "data.init_args.seed" not in varied:
        print(f"offrl: note: study {path} varies seed_everything but not data.init_args.seed, so every trial draws the "
              "same batches; `seeds: [...]` varies both", file=sys.stderr, flush=True)
    return Study(name, configs, config_settings, seeds, grid, fixed, search, tests, float(cpus), float(gpus), concurrent, text)


def study_configs(path: Path, given: Any) -> tuple[list[str | list[str]], dict[str, dict[str, Any]]]:
    """The base configs, globs expanded, relative to the working folder (as on the command line); a list of files is
    one config, layered in order; and the settings of those given as {path: ..., set: {...}}, by config_key."""
    if not isinstance(given, list) or not given:
        raise OffrlError(f"study file {path}: configs must list the base config files (e.g. configs/iql/hopper-medium.yaml)")
    found: list[str | list[str]] = []
    own: dict[str, dict[str, Any]] = {}
    for entry in given:
        settings = {}
        if isinstance(entry, dict):
            if set(entry) - {"path", "set"} or not isinstance(entry.get("path"), (str, list)) or not isinstance(entry.get("set", {}), dict):
                raise OffrlError(f"study file {path}: a configs entry is a path, a list of paths (layered) or {{path: FILE, set: {{key: value}}}}, got {entry!r}")
            entry, settings = entry["path"], entry.get("set") or {}
        if isinstance(entry, list):
            if not entry or not all(isinstance(part, str) for part in entry):
                raise OffrlError(f"study file {path}: a layered configs entry lists config files, got {entry!r}")
            matches = [[existing_file(path, part) for part in entry]]
        else:
            pattern = str(entry)
            # a glob that matches nothing is refused as the pattern itself, like a missing file
            matches = [existing_file(path, match) for match in (sorted(glob.glob(pattern)) if glob.has_magic(pattern) else []) or [pattern]]
        found += matches
        own |= {config_key(match): settings for match in matches if settings}
    keys = [config_key(config) for config in found]
    if len(set(keys)) != len(keys):
        raise OffrlError(f"study file {path}: a config is listed twice in configs; list each once")
    return found, own


def existing_file(path: Path, given: str) -> str:
    if not Path(given).is_file():
        raise OffrlError(f"study file {path}: config {given} matches no file (paths are relative to {Path.cwd()})")
    return str(Path(given).resolve())


def config_files(config: str | list[str]) -> list[str]:
    """A trial's config files, in the order they are layered."""
    return [config] if isinstance(config, str) else list(config)


def config_key(config: str | list[str]) -> str:
    return "\n".join(config_files(config))


def read_tests(path: Path, raw: Any) -> list[str | None]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw or not all(isinstance(entry, str) for entry in raw):
        raise OffrlError(f"study file {path}: tests lists `{PLAIN_TEST}` or config files layered on each run for `offrl test`, got {raw!r}")
    tests = [None if entry == PLAIN_TEST else existing_file(path, entry) for entry in raw]
    names = [test_folder(test) for test in tests]
    if len(set(names)) != len(names):
        raise OffrlError(f"study file {path}: tests {raw!r} would log two tests into one folder ({', '.join(names)}); list each once, with distinct file names")
    return tests


def test_folder(test: str | None) -> str:
    """The folder of a run that one of the study's tests logs into (`test`, `test-opex`, ...)."""
    return test_folder_name("test", [test] if test else [])


def check_setting_key(path: Path, key: Any) -> None:
    if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise OffrlError(f"study file {path}: {key!r} is not a setting name; write it as on the command line without --, e.g. model.init_args.actor_lr")
    if key in ("ckpt_path", "config", "trainer.default_root_dir"):
        raise OffrlError(f"study file {path}: {key} is set by the sweep for each trial; remove it from the study")


def read_search(path: Path, raw: Any, grid: dict, configs_count: int, seeds: list[int] | None) -> Search | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("space"), dict) or not raw["space"]:
        raise OffrlError(f"study file {path}: search needs a space (e.g. space: {{model.init_args.actor_lr: {{loguniform: [1.0e-4, 1.0e-3]}}}})")
    unknown = sorted(set(raw) - {"samples", "algorithm", "metric", "mode", "space"})
    if unknown:
        raise OffrlError(f"study file {path}: search takes samples, algorithm, metric, mode and space, not {', '.join(unknown)}")
    samples, algorithm = raw.get("samples", 1), raw.get("algorithm", "random")
    if not (isinstance(samples, int) and samples > 0):
        raise OffrlError(f"study file {path}: search.samples must be a positive integer, got {samples!r}")
    if algorithm not in ("random", "optuna"):
        raise OffrlError(f"study file {path}: search.algorithm must be random or optuna, got {algorithm!r}")
    metric, mode = raw.get("metric"), raw.get("mode")
    if algorithm == "optuna":
        if configs_count != 1 or seeds is not None:
            raise OffrlError(f"study file {path}: optuna searches one config at one seed (Tune's Optuna searcher takes no grid); "
                             "list one config, drop seeds (set seed_everything under set), and run the seeds of the best settings as a grid study")
        if grid:
            raise OffrlError(f"study file {path}: optuna chooses every setting itself, so it takes no grid; move {', '.join(grid)} to search.space or use algorithm: random")
        if not metric or mode not in ("max", "min"):
            raise OffrlError(f"study file {path}: optuna needs search.metric (e.g. eval/normalized_score) and search.mode (max or min)")
    for key, spec in raw["space"].items():
        check_setting_key(path, key)
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in DISTRIBUTIONS and isinstance(next(iter(spec.values())), list)):
            raise OffrlError(f"study file {path}: search.space.{key} must be one of {', '.join(DISTRIBUTIONS)} with a list, e.g. {{loguniform: [1.0e-4, 1.0e-3]}}")
        kind, values = next(iter(spec.items()))
        if kind != "choice" and len(values) != 2:
            raise OffrlError(f"study file {path}: search.space.{key}: {kind} takes [low, high], got {values!r}")
    return Search(samples, algorithm, metric, mode, raw["space"])


# -- one trial ---------------------------------------------------------------------------------------------------


def trial_label(params: dict) -> str:
    """What a trial is, short, for its folder: the config's folder and name, then its grid and sampled values
    (the study's fixed settings are the same in every trial)."""
    files = [Path(file) for file in config_files(params["config"])]
    parts = [f"{files[0].parent.name}-{'+'.join(file.stem for file in files)}"]
    settings = {**params["settings"], **({"seed_everything": params["seed"]} if params.get("seed") is not None else {})}
    for key, value in sorted(settings.items()):
        short = key.rsplit(".", 1)[-1].replace("seed_everything", "seed")
        text = f"{value:.3g}" if isinstance(value, float) else str(value)
        parts.append(f"{short}{'' if short == 'seed' else '='}{text}")
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", "_".join(parts))[:120]


def trial_folder_name(trial_id: str, params: dict) -> str:
    return f"{trial_id}_{trial_label(params)}"


def command_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def trial_settings(params: dict, config_settings: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every setting a trial gives on the command line: the study's, its config's own, its grid point's, its seed's."""
    seed = params.get("seed")
    return {**params.get("fixed", {}), **config_settings.get(config_key(params["config"]), {}), **params["settings"],
            **({key: seed for key in SEED_KEYS} if seed is not None else {})}


def fit_args(params: dict, run_root: Path, cpus: float, resume: bool, config_settings: dict[str, dict[str, Any]]) -> list[str]:
    """The `offrl fit` command line of a trial: its base config, the study's settings, its own run folder and threads."""
    args = ["fit", *config_args(params["config"]), "--trainer.default_root_dir", str(run_root)]
    settings = trial_settings(params, config_settings)
    if "performance.threads" not in settings:
        args += ["--performance.threads", str(max(1, math.floor(cpus)))]
    for key, value in settings.items():
        args += [f"--{key}", command_value(value)]
    return args + (["--ckpt_path", "last"] if resume else [])


def config_args(config: str | list[str]) -> list[str]:
    return [part for file in config_files(config) for part in ("--config", file)]


def test_args(run_dir: Path, test: str | None) -> list[str]:
    """The `offrl test` command line of one of a study's tests of a finished run: its own config, the test's layer."""
    layer = ["--config", test] if test else []
    return ["test", "--config", str(run_dir / "config.yaml"), *layer, "--ckpt_path", str(run_dir / "checkpoints" / "last.ckpt")]


def check_trials(study: Study) -> None:
    """Every distinct trial command line (seeds aside; a search's space at its first values) parsed as `offrl fit`
    parses it, and each test's layer on each config, without running anything: a setting its config's classes do
    not take, or a value of the wrong type, is refused here in offrl's sentence, before any trial starts."""
    first_values = {key: next(iter(spec.values()))[0] for key, spec in study.search.space.items()} if study.search else {}
    checked, tested = set(), set()
    for params in study.grid_trials():
        params = {**params, "seed": None, "fixed": study.fixed, "settings": {**params["settings"], **first_values}}
        settings = trial_settings(params, study.config_settings)
        args = ["fit", *config_args(params["config"]), *(part for key, value in settings.items() for part in (f"--{key}", command_value(value)))]
        if tuple(args) not in checked:
            checked.add(tuple(args))
            check_command(study, params, args)
        for test in study.tests:
            if test and (config_key(params["config"]), test) not in tested:
                tested.add((config_key(params["config"]), test))
                check_command(study, params, ["test", *args[1:], "--config", test])


def check_command(study: Study, params: dict, args: list[str]) -> None:
    """One trial command line parsed as the CLI parses it; a refusal is the study's one sentence."""
    import contextlib
    import io

    from offrl.cli import main

    errors = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
        try:
            main([*args, "--print_config"])
            code = 0
        except SystemExit as stop:
            code = stop.code
    if code:
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        reason = next((line.removeprefix("offrl: error: ") for line in reversed(lines) if line.startswith("offrl: error:")),
                      lines[-1] if lines else f"exit code {code}")
        shown = " ".join(f"--{key} {shlex.quote(command_value(value))}" for key, value in params["settings"].items())
        trials = f"the trials of {' + '.join(config_files(params['config']))} {shown}".rstrip()
        what = f"the test with {args[-1]} of {trials}" if args[0] == "test" else trials
        raise OffrlError(f"study {study.name}: {what} cannot start: {reason}")


def prepare_run_root(run_root: Path) -> bool:
    """Whether the trial resumes a run of its own (a checkpoint in its folder). A run folder it left without any
    checkpoint (killed before its first) holds nothing to resume and would count twice in a report: removed."""
    if any(run_root.rglob("*.ckpt")):
        return True
    for config in run_root.glob("*/*/version_*/config.yaml"):
        print(f"offrl: removing {config.parent}: this trial's earlier start saved no checkpoint to resume", flush=True)
        shutil.rmtree(config.parent)
    return False


def run_trial(params: dict, experiment_dir: str, cpus: float, config_settings: dict[str, dict[str, Any]],
              tests: list[str | None]) -> None:
    """Tune's trainable: one `offrl fit` in this worker, reporting each evaluation to Tune, then the study's
    `offrl test`s of its last checkpoint. A mistake a user can fix ends the trial with that one sentence (Tune
    records it as the trial's error)."""
    from ray import tune
    from ray.tune.integration.pytorch_lightning import TuneReportCheckpointCallback

    from offrl.cli import silence_known_noise

    silence_known_noise()
    sys.argv[1:] = []  # the worker's own command line is Ray's; the CLI reads only `args`
    run_root = Path(experiment_dir) / trial_folder_name(tune.get_context().get_trial_id(), params)
    ended = list(run_root.glob("*/*/version_*/summary.json"))
    if ended:
        # The run ended before the study was stopped, but Tune had not yet recorded it: nothing is left to train.
        print(f"offrl: {ended[0].parent} had finished; its last evaluation is reported to Tune", flush=True)
        summary = json.loads(ended[0].read_text())
        tune.report({**summary.get("last", {}), "update": summary.get("updates")})
    else:
        args = fit_args(params, run_root, cpus, prepare_run_root(run_root), config_settings)
        print(f"offrl: trial runs offrl {shlex.join(args)}", flush=True)
        run_offrl(args, callbacks=[TuneReportCheckpointCallback(save_checkpoints=False, on="validation_end")])
    if tests:
        (summary,) = run_root.glob("*/*/version_*/summary.json")
        run_tests(summary.parent, tests, json.loads(summary.read_text()).get("last", {}))


def run_tests(run_dir: Path, tests: list[str | None], last: dict) -> None:
    """The study's tests of a finished run, each unless an earlier start of the trial finished it; their scores
    go to Tune beside the run's last evaluation, as `<test folder>/<metric>`."""
    from ray import tune

    scores = {}
    for test in tests:
        folder = run_dir / test_folder(test)
        if not (folder / "summary.json").exists():
            args = test_args(run_dir, test)
            print(f"offrl: trial runs offrl {shlex.join(args)}", flush=True)
            run_offrl(args)
        tested = json.loads((folder / "summary.json").read_text()).get("test", {})
        scores |= {f"{folder.name}/{metric}": value for metric, value in tested.items() if metric in SCORE_METRICS}
    tune.report({**last, **scores})


def run_offrl(args: list[str], callbacks: list | None = None) -> None:
    """One offrl command in this worker; a refusal a user can fix becomes TrialFailed with offrl's sentence."""
    from offrl.cli import out_of_memory, path_fault, user_error
    from offrl.cli.fit import run_lightning

    try:
        run_lightning(args, callbacks=callbacks or ())
    except Exception as err:
        found = user_error(err) or path_fault(err) or out_of_memory(err)
        if found is None:
            raise
        raise TrialFailed(found) from None


class TrialFailed(Exception):
    """A trial's offrl run refused its settings or its machine; the message is offrl's one sentence."""


# -- the study -----------------------------------------------------------------------------------------------------


def param_space(study: Study) -> dict:
    from ray import tune

    settings: dict[str, Any] = {}
    if study.search is None or study.search.algorithm == "random":
        settings |= {key: tune.grid_search(values) for key, values in study.grid.items()}
    if study.search is not None:
        settings |= {key: getattr(tune, kind)(*values) if kind != "choice" else tune.choice(values)
                     for key, spec in study.search.space.items() for kind, values in spec.items()}
    optuna = study.search is not None and study.search.algorithm == "optuna"
    space = {"config": study.configs[0] if optuna else tune.grid_search(study.configs), "settings": settings, "fixed": study.fixed}
    return space | ({"seed": tune.grid_search(study.seeds)} if study.seeds else {})


def tune_config(study: Study):
    from ray import tune

    search_alg = None
    if study.search is not None and study.search.algorithm == "optuna":
        try:
            from ray.tune.search.optuna import OptunaSearch
        except ImportError:
            raise OffrlError("search.algorithm optuna needs the optuna package; pip install optuna, or use algorithm: random") from None
        search_alg = OptunaSearch(metric=study.search.metric, mode=study.search.mode, seed=0)
    return tune.TuneConfig(
        num_samples=study.search.samples if study.search else 1,
        search_alg=search_alg,
        max_concurrent_trials=study.concurrent,
        trial_dirname_creator=lambda trial: trial_folder_name(trial.trial_id, trial.config),
    )


def start_ray(address: str | None, cpus: int | None, study: Study) -> None:
    """Ray on this machine (embedded) or the cluster at `address`; a trial that could never be placed is refused
    here, not left pending for ever."""
    import ray

    if address:
        ray.init(address=address, log_to_driver=True)
    else:
        # Embedded: no server to start. The trials pass nothing through Ray's object store, so it stays small.
        ray.init(num_cpus=cpus, include_dashboard=False, object_store_memory=128 * 2**20, log_to_driver=True)
    held = ray.cluster_resources()
    for name, wanted, have in (("cpus", study.cpus, held.get("CPU", 0)), ("gpus", study.gpus, held.get("GPU", 0))):
        if wanted > have:
            where = f"the Ray cluster at {address}" if address else "this machine"
            message = f"each trial asks for trial.{name} {wanted:g} but {where} has {have:g}; lower trial.{name} in the study file"
            if not address:  # a cluster may add machines as it scales
                ray.shutdown()
                raise OffrlError(message)
            print(f"offrl: warning: {message}, or add machines that have them", file=sys.stderr, flush=True)


def sweep(study: Study, storage: Path, address: str | None = None, cpus: int | None = None,
          retry_failed: bool = False) -> tuple[list[str], int]:
    """Runs (or resumes) the study; returns one line per failed trial and the number of trials left unfinished
    (a Ctrl-C stops the study: Tune saves its state and stops the running trials)."""
    from ray import tune

    experiment_dir = (storage / study.name).resolve()
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, experiment_dir=str(experiment_dir), cpus=study.cpus, config_settings=study.config_settings,
                             tests=study.tests),
        {"cpu": study.cpus, "gpu": study.gpus},
    )
    copy = experiment_dir / STUDY_COPY
    resuming = tune.Tuner.can_restore(str(experiment_dir))
    if copy.exists() and copy.read_text() != study.text:
        raise OffrlError(
            f"{experiment_dir} holds a study run from a different study file; give the study a new name, or restore "
            f"{copy} to resume that one"
        )
    start_ray(address, cpus, study)
    if resuming:
        print(f"offrl: resuming study {experiment_dir} (finished trials are kept)", file=sys.stderr, flush=True)
        tuner = tune.Tuner.restore(str(experiment_dir), trainable=trainable, resume_unfinished=True, resume_errored=retry_failed)
    else:
        experiment_dir.mkdir(parents=True, exist_ok=True)
        copy.write_text(study.text)
        print(f"offrl: study {experiment_dir}: {study.trial_count()} trials, {study.cpus:g} CPUs and {study.gpus:g} GPUs each",
              file=sys.stderr, flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space=param_space(study),
            tune_config=tune_config(study),
            run_config=tune.RunConfig(name=study.name, storage_path=str(experiment_dir.parent), verbose=1),
        )
    results = tuner.fit()
    failed = [f"{result.path}: {one_line(result.error)} (traceback in {Path(result.path) / 'error.txt'})"
              for result in results if result.error is not None]
    # A trial stopped by the Ctrl-C also ends as "terminated", but without Tune's done flag; trials the search had
    # not yet drawn are not in the results at all.
    done = sum(1 for result in results if result.error is None and (result.metrics or {}).get("done"))
    metric = study.search.metric if study.search else None
    if metric and any((result.metrics or {}).get(metric) is not None for result in results):
        best = results.get_best_result(metric, study.search.mode, scope="last", filter_nan_and_inf=True)
        print(f"offrl: best final {metric} {best.metrics[metric]:.4g}: {best.config['settings']} ({best.path})", flush=True)
    return failed, study.trial_count() - done - len(failed)


def one_line(error: BaseException) -> str:
    """The trial's own error in one line: offrl's sentence, or the exception's type and its message's last line."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, TrialFailed) or type(cause).__name__ == "TrialFailed":
        return str(cause)
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[-1] if text else ''}"


def dry_run(study: Study) -> str:
    lines = [f"study {study.name}: {study.trial_count()} trials, {study.cpus:g} CPUs and {study.gpus:g} GPUs each"]
    for params in study.grid_trials():
        samples = f" x {study.search.samples} samples of {', '.join(study.search.space)}" if study.search else ""
        extra = [f"--{key} {shlex.quote(command_value(value))}" for key, value in trial_settings({**params, "fixed": study.fixed}, study.config_settings).items()]
        lines.append(f"  offrl fit {shlex.join(config_args(params['config']))} {' '.join(extra)}{samples}".rstrip())
    lines += [f"  then: offrl {shlex.join(test_args(Path('<run>'), test))}" for test in study.tests]
    return "\n".join(lines)


def sweep_main(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="offrl sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", type=Path, help="the study file (YAML)")
    parser.add_argument("--storage", type=Path, default=Path("logs"), help="folder for the study's folder (default: logs)")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="a running Ray cluster (e.g. ray://head:10001 or auto); default: an embedded Ray on this machine")
    parser.add_argument("--cpus", type=int, default=None, help="CPUs the embedded Ray may use (default: all)")
    parser.add_argument("--retry-failed", action="store_true", help="on a resume, run the failed trials again")
    parser.add_argument("--dry-run", action="store_true", help="list the trials and stop")
    parsed = parser.parse_args(args)
    study = read_study(parsed.study)
    check_trials(study)
    if parsed.dry_run:
        print(dry_run(study))
        return
    failed, unfinished = sweep(study, parsed.storage, parsed.address, parsed.cpus, parsed.retry_failed)
    study_dir = parsed.storage / study.name
    for line in failed:
        print(f"offrl: trial failed: {line}", file=sys.stderr)
    if unfinished:
        print(f"offrl: study {study_dir} stopped with {unfinished} trial(s) unfinished; the same command resumes it "
              "(each unfinished trial from its run's last checkpoint)", file=sys.stderr)
        sys.exit(130)
    print(f"offrl: study {study_dir} done; `offrl report {study_dir}` tables it", flush=True)
    if failed:
        raise OffrlError(f"{len(failed)} trial(s) failed (above); fix them and run the same command with --retry-failed")
