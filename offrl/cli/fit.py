"""`offrl fit | validate | test`: LightningCLI with offrl's callbacks, checkpoint checks and run folders."""

from __future__ import annotations

import argparse
import difflib
import importlib
import inspect
import re
import shutil
import sys
from pathlib import Path

import lightning as L
import yaml
from jsonargparse import DefaultHelpFormatter
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint, RichProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.tensorboard.summary import hparams

# Imported so that a config or --model may name an algorithm by its class name alone: jsonargparse resolves a
# short class_path among the imported subclasses.
from offrl.algos import admpo, bc, dynamics, mopo, rsp, sac, value_policy  # noqa: F401
from offrl.algos.base import OfflineAlgorithm
from offrl.algos.model_based_sac import DYNAMICS_DATA_SETTINGS, ModelBasedSAC
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.callbacks.fault_tolerance import FiniteLosses, StopCheckpoint
from offrl.callbacks.report import RunReport, UpdateProgressBar
from offrl.callbacks.throughput import UpdateLoop, UpdateThroughput
from offrl.checkpoints import AtomicCheckpointIO, newest_readable, read_checkpoint
from offrl.cli.dynamics import fit_dynamics_phase, needs_dynamics_fit, phase_checkpoint_dir
from offrl.data.datamodules import TransitionDataModule
from offrl.errors import OffrlError
from offrl.reports import SCORE_METRICS, flatten, test_folder_name

LOG_ROOT = "logs"


def dataset_short_name(dataset_id: str) -> str:
    """'offrl/pointmaze/umaze-v0' -> 'pointmaze-umaze'; 'offrl/mujoco/hopper/medium-v0' -> 'hopper-medium'."""
    parts = dataset_id.split("/")
    parts = parts[1:] if len(parts) > 1 else parts
    if len(parts) > 2 and parts[0] in ("mujoco", "adroit"):
        parts = parts[1:]
    parts[-1] = re.sub(r"-v\d+$", "", parts[-1])
    return "-".join(parts)


# The settings that make a run what it is; trainer, evaluation, checkpoint and performance may change on a resume.
RUN_IDENTITY = ("seed_everything", "model", "data")


def runs_with_checkpoints(run_dir: Path) -> list[Path]:
    """Every version folder under `run_dir` that saved a checkpoint, newest first."""
    found = []
    for version_dir in run_dir.glob("version_*"):
        number = version_dir.name[len("version_"):]
        saved = any((version_dir / "checkpoints").glob("*.ckpt")) or any(phase_checkpoint_dir(version_dir).glob("*.ckpt"))
        if number.isdigit() and saved:
            found.append((int(number), version_dir))
    return [folder for _, folder in sorted(found, reverse=True)]


def recorded_configs(version_dir: Path) -> list[dict]:
    """The resolved configs a run recorded (config.yaml, config.start-N.yaml); an unreadable one is left out."""
    configs = []
    for path in sorted(version_dir.glob("config*.yaml")):
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(loaded, dict):
            configs.append(loaded)
    return configs


def changed_settings(recorded: dict, given: dict, prefix: str = "") -> list[str]:
    """'<prefix>key recorded -> given' for each setting both hold and give differently (as a config writes them)."""
    return [
        f"{prefix}{key} {plain(recorded[key])!r} -> {plain(value)!r}"
        for key, value in given.items()
        if key in recorded and plain(recorded[key]) != plain(value)
    ]


def identity_differences(recorded: dict, given: dict, sections: tuple[str, ...] = RUN_IDENTITY) -> list[str]:
    """'key recorded -> given' for each setting of `sections` both configs hold and give differently."""
    return changed_settings(flatten({key: recorded.get(key) for key in sections}), flatten({key: given.get(key) for key in sections}))


def run_of_config(log_dir: Path, given: dict, config_files: list[Path]) -> Path:
    """The run folder `--ckpt_path last` means: the one whose own recorded config was given, else the newest under
    `log_dir` recorded with the same model, data and seed; refused in one sentence when there is none or the
    command changes the given run's data or seed (changed model settings are refused against the checkpoint, by
    checkpoint_mismatch)."""
    for file in config_files:
        folder = file.resolve().parent
        if not (file.name.startswith("config") and (folder / "checkpoints").is_dir()):
            continue
        changes = [identity_differences(config, given, ("seed_everything", "data")) for config in recorded_configs(folder)]
        if not any(not change for change in changes):
            changed = changes[0] if changes else ["its recorded config cannot be read"]
            raise OffrlError(
                f"--ckpt_path last names the run {folder} (through {file}), but this command changes what that run is "
                f"({', '.join(changed)}); drop those options to continue it, or start a new run without --ckpt_path"
            )
        return folder
    candidates = runs_with_checkpoints(log_dir)
    if not candidates:
        raise OffrlError(f"--ckpt_path last found no checkpoint under {log_dir}; start a fresh run")
    described = []
    for folder in candidates:
        changes = [identity_differences(config, given) for config in recorded_configs(folder)]
        if any(not change for change in changes):
            return folder
        described.append(f"{folder.name}: {changes[0][0] if changes else 'no readable config.yaml'}")
    raise OffrlError(
        f"--ckpt_path last found no run of this config under {log_dir} (its runs differ: {'; '.join(described)}); "
        "give the run's own config (<run>/config.yaml) or --ckpt_path <run>/checkpoints/last.ckpt"
    )


def plain(value):
    """Hyperparameters compared as the config writes them (tuples as lists)."""
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    return value


def checkpoint_mismatch(checkpoint: dict, path: Path, model, dataset_id: str, resuming: bool) -> str | None:
    """One sentence on why `checkpoint` (read from `path`) does not belong to this config, or None. Any run checks
    the algorithm and the dataset; a resumed fit also every model hyperparameter (it must continue the same run)."""
    made = checkpoint.get("offrl", {})
    saved_hparams = checkpoint.get("hyper_parameters") or {}
    algorithm = made.get("algorithm") or saved_hparams.get("_class_path")
    own = f"{type(model).__module__}.{type(model).__qualname__}"
    fix = "give the config the run was made with (its config.yaml) or a checkpoint made by this config"
    if algorithm is not None and algorithm != own:
        return f"checkpoint {path} was made by {algorithm} but the config builds {own}; {fix}"
    saved_dataset = made.get("dataset_id") or (checkpoint.get("datamodule_hyper_parameters") or {}).get("dataset_id")
    if saved_dataset is not None and saved_dataset != dataset_id:
        return f"checkpoint {path} was trained on {saved_dataset} but the config's data.dataset_id is {dataset_id}; {fix}"
    if resuming:
        changed = changed_settings(saved_hparams, {key: value for key, value in model.hparams.items() if not key.startswith("_")}, "model.")
        if changed:
            return (
                f"checkpoint {path} was trained with other settings than the config gives ({', '.join(changed)}); "
                "resume with the run's own config (its config.yaml) or start a new run without --ckpt_path"
            )
    return None


class ConfigError(OffrlError):
    """jsonargparse's whole message for a bad config or option; OffrlCLI turns it into one sentence."""


class ConfigParser(LightningArgumentParser):
    """Reports a config mistake as an exception instead of the usage block and exit."""

    def error(self, message: str, ex: Exception | None = None):
        if not self.exit_on_error:  # a nested parser (a class's own arguments): the parser above reports
            super().error(message, ex)
        raise ConfigError(message) from ex


DATAMODULES = ("TransitionDataModule", "HindsightDataModule", "SkipStepDataModule", "AnyStepDataModule")


def close_match(word: str, candidates) -> str:
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean {found[0]}?" if found else ""


def class_arguments(class_path: str) -> list[str]:
    try:
        module, name = class_path.rsplit(".", 1)
        cls = getattr(importlib.import_module(module), name)
    except (ValueError, ImportError, AttributeError):
        return []
    return [name for klass in cls.__mro__ if "__init__" in vars(klass) for name in inspect.signature(klass.__init__).parameters]


def config_sentence(message: str, known_keys: list[str]) -> str:
    """jsonargparse's message for a bad config value or option -> what is wrong, where, and a close match."""
    section = re.search(r'Parser key "([\w.]+)"', message)
    section = section.group(1) if section else None
    class_path = re.search(r"Problem with given class_path '([^']+)'", message)
    class_path = class_path.group(1) if class_path else None
    if found := re.search(r"Option '([^']+)' is not accepted", message):
        key = found.group(1)
        return f"{section}.{key} is not a setting of {class_path}{close_match(key, class_arguments(class_path))}"
    if found := re.search(r'Problem with given class_path \'[^\']+\':\s*Parser key "([^"]+)":\s*(.+)', message):
        reason = re.sub(r"<class '(\w+)'>", r"\1", found.group(2).strip())  # "Expected a float", not "<class 'float'>"
        return f"{section}.{found.group(1)}: {reason}"
    if section in ("model", "data") and (
        found := re.search(r"Expected a dot import path string: (\S+)|module '[^']+' has no attribute '[^']+'|No module named", message)
    ):
        given = found.group(1) or class_path
        names = list(ALGORITHMS) + list(ALGORITHMS.values()) if section == "model" else DATAMODULES
        return f"{section}.class_path {given} is not a class offrl knows{close_match(given, names)}"
    if found := re.search(r"does not accept option '([^']+)'|unrecognized arguments: --(\S+)", message):
        key = found.group(1) or found.group(2)
        return f"{key} is not an option of offrl{close_match(key, known_keys)}"
    if found := re.search(r"File does not exist: '([^']+)'", message):
        return f"config file {found.group(1)} does not exist; check the path"
    if "the following arguments are required" in message:
        return "no model or data given; pass --config configs/<algorithm>/<dataset>.yaml (or --model and --data)"
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    reasons = [line[2:] for line in lines if line.startswith("- ") and "NoneType" not in line]
    section_name = lines[0].replace("Parser key ", "").strip(':"')
    return f"{section_name}: {reasons[0]}" if reasons else lines[0]


class OffrlCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(EvaluationCallback, "evaluation")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.add_lightning_class_args(UpdateThroughput, "throughput")
        parser.add_lightning_class_args(UpdateLoop, "performance")
        parser.add_lightning_class_args(FiniteLosses, "finite_losses")
        parser.set_defaults(
            {
                "checkpoint.save_last": True,
                "checkpoint.every_n_train_steps": 5000,
                "trainer.num_sanity_val_steps": 0,
                "trainer.log_every_n_steps": 50,
            }
        )

    def parse_arguments(self, parser, args) -> None:
        try:
            super().parse_arguments(parser, args)
        except ConfigError as err:
            argv = sys.argv[1:] if args is None else list(args)
            files = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg in ("--config", "-c")]
            subparsers = getattr(self, "_subcommand_parsers", {})  # none when built with run=False
            subcommand = next((arg for arg in argv if arg in subparsers), None)
            known = [action.dest for action in (subparsers[subcommand] if subcommand else parser)._actions]
            where = f" (config {', '.join(files)})" if files else ""
            raise OffrlError(f"{config_sentence(str(err), known)}{where}; `offrl {subcommand or 'fit'} --help` lists the options") from None

    def _parse_ckpt_path(self) -> None:
        """Lightning would overwrite the config's model with the checkpoint's hyperparameters (so another
        algorithm's checkpoint was taken silently); offrl keeps the config and checks the checkpoint against it
        in instantiate_classes."""

    def instantiate_classes(self) -> None:
        """Lightning's classes, then what offrl decides before a subcommand runs: the checkpoint it starts from,
        the fitted dynamics model a model-based run takes, and the folder it logs into."""
        try:
            super().instantiate_classes()
        except MisconfigurationException as err:  # Lightning's checks of trainer and callback settings
            reason = str(err).strip().splitlines()[0].rstrip(".")
            raise OffrlError(f"{reason}; fix that setting in the config or on the command line") from None
        # Set here, not as trainer.plugins: the recorded config stays loadable and a user's plugins stay theirs.
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_name = f"{self.model.algorithm_name}/{dataset_short_name(self.datamodule.dataset_id)}"
        # Runs live under trainer.default_root_dir when it is given (a study's trial keeps its runs in its folder).
        log_root = Path(config["trainer"].get("default_root_dir") or LOG_ROOT)
        path, resumed_run = self.start_checkpoint(config, log_root / run_name)
        self.fits_dynamics_first = False
        if self.subcommand == "fit" and path is None and isinstance(self.model, ModelBasedSAC):
            if self.model.hparams.get("dynamics_checkpoint"):
                self.hand_over_fitted_dynamics(Path(self.model.hparams.dynamics_checkpoint))
            else:
                self.fits_dynamics_first = needs_dynamics_fit(self.model)
        self.fresh_run_dir = self.extra_config_file = None
        if config["trainer"].get("logger") in (None, True):
            self.set_run_logger(config, log_root, run_name, path, resumed_run)
        # Lightning's default bar counts trainer steps; offrl's counts updates.
        self.trainer.callbacks[:] = [
            UpdateProgressBar() if type(callback) in (TQDMProgressBar, RichProgressBar) else callback for callback in self.trainer.callbacks
        ]

    def start_checkpoint(self, config, run_root: Path) -> tuple[Path | None, Path | None]:
        """The checkpoint this subcommand starts from (None: a fresh start), checked against the model and data, and
        the run folder a `fit --ckpt_path last` continues. `--ckpt_path last` is this config's own run's newest
        readable checkpoint; a run stopped while fitting its dynamics model continues that fit (self.dynamics_resume)."""
        resumed_run = None
        self.dynamics_resume: Path | None = None
        self.start_step = 0
        ckpt_path = config.get("ckpt_path")
        if ckpt_path is None:
            return None, None
        if ckpt_path == "last":
            given = yaml.safe_load(self.parser.dump(self.config, skip_none=False))[self.subcommand]
            files = [Path(str(file)) for file in config.get("config") or []]
            run_dir = run_of_config(run_root, given, files)
            # A fit stopped while fitting its dynamics model continues that fit; test and validate need SAC's.
            in_dynamics_phase = self.subcommand == "fit" and not any((run_dir / "checkpoints").glob("*.ckpt"))
            path, skipped = newest_readable(phase_checkpoint_dir(run_dir) if in_dynamics_phase else run_dir / "checkpoints")
            for line in skipped:
                print(f"offrl: {line}; resuming from {path} instead", file=sys.stderr)
            resumed_run = run_dir if self.subcommand == "fit" else None
            if in_dynamics_phase:
                # Stopped while fitting its dynamics model: that fit goes on (before_fit), then SAC starts afresh.
                self.dynamics_resume = path
                return None, resumed_run
            self.config_init[self.subcommand]["ckpt_path"] = str(path)
            config["ckpt_path"] = str(path)  # and the start's recorded config names the file it resumed
        else:
            path = Path(ckpt_path)
        checkpoint = read_checkpoint(path, map_location="cpu", mmap=True)  # only its metadata is read here
        mismatch = checkpoint_mismatch(checkpoint, path, self.model, self.datamodule.dataset_id, self.subcommand == "fit")
        if mismatch:
            raise OffrlError(mismatch)
        self.start_step = int(checkpoint.get("global_step", 0))
        del checkpoint
        if self.trainer.is_global_zero:
            doing = {"fit": "resuming from", "test": "testing", "validate": "validating"}.get(self.subcommand, "loading")
            print(f"offrl: {doing} {path} (update {self.start_step})", file=sys.stderr)
        return path, resumed_run

    def set_run_logger(self, config, log_root: Path, run_name: str, path: Path | None, resumed_run: Path | None) -> None:
        """TensorBoard in the run's folder: a new version under <log_root>/<run_name>, the folder a fit resumes, or
        for test/validate of a run's checkpoint a folder beside that run's curves (<version>/test, <version>/test-opex
        with opex.yaml layered on the run's config)."""
        tested_run = self.tested_run_dir(path) if path is not None and self.subcommand != "fit" else None
        if tested_run is not None:
            layers = [str(file) for file in config.get("config") or []][1:]
            self.trainer.logger = TensorBoardLogger(
                tested_run.parent, name="", version=tested_run.name, sub_dir=test_folder_name(self.subcommand, layers),
                default_hp_metric=False,
            )
        elif resumed_run is not None:
            self.trainer.logger = TensorBoardLogger(resumed_run.parent, name="", version=resumed_run.name, default_hp_metric=False)
        else:
            self.trainer.logger = TensorBoardLogger(log_root, name=run_name, default_hp_metric=False)
        run_dir = Path(self.trainer.logger.log_dir)
        if resumed_run is None and tested_run is None:
            self.fresh_run_dir = run_dir
        self.name_config_file(run_dir)

    def hand_over_fitted_dynamics(self, path: Path) -> None:
        """model.dynamics_checkpoint: the fitted dynamics model of an earlier run or fit, checked against this run and
        given to the module. Offline, it must come from this dataset and these dynamics settings, and the run fits
        none; online, from data of this run's env with a model of this shape, and the first refit starts from it.
        (A resumed run has its model in its own checkpoint.)"""
        model, dataset_id = self.model, self.datamodule.dataset_id
        checkpoint = read_checkpoint(path, map_location="cpu")
        made, fit_settings = checkpoint.get("offrl", {}), checkpoint.get("hyper_parameters") or {}
        data_settings = checkpoint.get("datamodule_hyper_parameters") or {}
        recorded = {**fit_settings, **{name: data_settings.get(key) for name, key in DYNAMICS_DATA_SETTINGS.items() if key in data_settings}}
        fit, _ = model.dynamics_fit()
        own = f"{type(fit).__module__}.{type(fit).__qualname__}"
        problems = []
        if made.get("algorithm") != own:
            problems.append(f"it was made by {made.get('algorithm')}, not a fit of {own}")
        if model.schedule.online:
            env_id = self.datamodule.env_id
            if made.get("env_id") != env_id:
                problems.append(f"its model was fitted on data of {made.get('env_id')}, not {env_id}")
            problems += changed_settings(recorded, model.dynamics_architecture(), "model.")
            fix = "a fit on data of this env with this model's shape"
        else:
            if made.get("dataset_id") != dataset_id:
                problems.append(f"its model was fitted on {made.get('dataset_id')}, not {dataset_id}")
            problems += changed_settings(recorded, model.dynamics_settings(), "model.")
            fix = "a run with this algorithm, dataset and dynamics settings"
        saved = checkpoint.get("dynamics_fit") or {}
        if not problems and not (saved.get("finished") and saved.get("fitted_dynamics")):
            problems.append("its fit stopped before early stopping ended it (continue it with --ckpt_path last)")
        if problems:
            raise OffrlError(
                f"model.dynamics_checkpoint {path} cannot serve this run ({'; '.join(problems)}); give the "
                f"dynamics/checkpoints/last.ckpt of {fix}, or remove the setting to fit a model"
            )
        model.use_fitted_dynamics(saved["fitted_dynamics"])
        if self.trainer.is_global_zero:
            use = "its first refit starts from it" if model.schedule.online else "no model fit in this run"
            print(f"offrl: using the dynamics model fitted in {path}; {use}", file=sys.stderr)

    @staticmethod
    def tested_run_dir(checkpoint: Path) -> Path | None:
        """The run folder a checkpoint belongs to (<version>/checkpoints/x.ckpt), or None for a file elsewhere."""
        run_dir = checkpoint.resolve().parent.parent
        return run_dir if checkpoint.resolve().parent.name == "checkpoints" and (run_dir / "config.yaml").exists() else None

    def before_fit(self) -> None:
        if self.fits_dynamics_first:
            self.fit_dynamics_first()
        self.show_config_in_tensorboard()

    def fit_dynamics_first(self) -> None:
        """An offline model-based run without a fitted model fits one first (offrl.cli.dynamics), then starts SAC
        from the config's seed again: the SAC phase draws the same numbers as a run given that model as
        model.dynamics_checkpoint."""
        if self.trainer.world_size > 1:
            raise OffrlError(
                "a run on several devices does not fit its dynamics model itself; fit it first on one "
                "(offrl fit --config <this config> --trainer.devices 1 --trainer.max_steps 0 makes <run>/dynamics/checkpoints/last.ckpt) "
                "and give it as model.dynamics_checkpoint"
            )
        config = self.config[self.subcommand]
        run_dir = Path(self.trainer.logger.log_dir) if self.trainer.logger is not None else Path(self.trainer.default_root_dir)
        for callback in self.trainer.callbacks:
            if isinstance(callback, SaveConfigCallback):  # the run folder names its config from the first phase on
                callback.setup(self.trainer, self.model, "fit")
        loop = next((c for c in self.trainer.callbacks if isinstance(c, UpdateLoop)), None)
        fit_dynamics_phase(
            self.model, self.datamodule, run_dir, self.dynamics_resume, accelerator=config["trainer"].get("accelerator") or "auto",
            threads=loop.threads if loop is not None else "auto", progress_bar=self.trainer.progress_bar_callback is not None,
            log_every_n_steps=self.trainer.log_every_n_steps,
        )
        seed = config.get("seed_everything")
        if seed is not None and seed is not False:
            L.seed_everything(seed, workers=True, verbose=False)  # as LightningCLI seeded the run

    def show_config_in_tensorboard(self) -> None:
        """TensorBoard shows the resolved config beside the curves: as hyperparameters (HPARAMS tab, against the
        evaluation score) and as text."""
        logger = self.trainer.logger
        if not isinstance(logger, TensorBoardLogger) or not self.trainer.is_global_zero:
            return
        config = self.config[self.subcommand]
        flat = {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in flatten(config.as_dict()).items()}
        experiment, start, end = hparams(flat, {name: 0.0 for name in SCORE_METRICS})
        writer = logger.experiment
        for summary in (experiment, start, end):
            writer.file_writer.add_summary(summary)
        writer.add_text("config", "```\n" + self.parser.dump(self.config, skip_none=False)[:200_000] + "\n```")

    def name_config_file(self, run_dir: Path) -> None:
        """Each start of a run keeps its own resolved config: config.yaml for the first, then config.start-N.yaml."""
        callback = next((c for c in self.trainer.callbacks if isinstance(c, SaveConfigCallback)), None)
        if callback is None or not (run_dir / "config.yaml").exists():
            return
        number = 2
        while (run_dir / f"config.start-{number}.yaml").exists():
            number += 1
        callback.config_filename = f"config.start-{number}.yaml"
        self.extra_config_file = run_dir / callback.config_filename

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            self.discard_failed_start()
            raise

    def discard_failed_start(self) -> None:
        """A start that failed before its first update leaves nothing behind: no new version folder, no config."""
        if self.trainer.global_step > self.start_step:
            return
        fresh = self.fresh_run_dir
        if fresh is not None and fresh.is_dir() and not any(fresh.rglob("*.ckpt")):
            shutil.rmtree(fresh, ignore_errors=True)
        if self.extra_config_file is not None:
            self.extra_config_file.unlink(missing_ok=True)


HELP = """offrl: offline RL on Lightning, TorchRL and Minari.

  offrl fit --config configs/<algorithm>/<dataset>.yaml [--section.key value ...]   train (resume: --ckpt_path last)
  offrl test --config <run>/config.yaml --ckpt_path last                           evaluate that run's last checkpoint
  offrl data {list,info,generate,import-d4rl} ...                                   datasets (offrl data --help)
  offrl sweep STUDY.yaml [--address ADDR]                                           a study (configs x grid x seeds) on Ray Tune
  offrl report logs/ [--out DIR]                                                    tables and plots of runs, grouped by config

Algorithms (model.class_path: the short name or offrl.algos.<file>.<name>; one recipe per paper setting under configs/):
  BC                          behaviour cloning                                           offrl.algos.bc
  ValuePolicy                 value (sarsa, iql, crl, td3) x extraction (awr, ddpgbc, sfbc): IQL, TD3+BC   offrl.algos.value_policy
  RSP                         recursive skip-step planning                                offrl.algos.rsp
  MOPO, MBPO                  model-based SAC with an MLP ensemble, offline / online      offrl.algos.mopo
  ADMPOOffline, ADMPOOnline   ADMPO-OFF / ADMPO-ON, the any-step dynamics model           offrl.algos.admpo
  SAC                         online SAC                                                  offrl.algos.sac
  AnyStepDynamics, EnsembleDynamics   a dynamics model alone (configs/dynamics/): its checkpoint serves
                              MOPO / ADMPO-OFF runs as model.dynamics_checkpoint         offrl.algos.dynamics
`offrl fit --model.help MOPO` lists one algorithm's settings; `--model BC` picks one on the command line."""


ALGORITHMS = {
    name: f"offrl.algos.{module}.{name}"
    for module, names in (("bc", ["BC"]), ("value_policy", ["ValuePolicy"]), ("rsp", ["RSP"]), ("mopo", ["MOPO", "MBPO"]),
                          ("admpo", ["ADMPOOffline", "ADMPOOnline"]), ("sac", ["SAC"]),
                          ("dynamics", ["AnyStepDynamics", "EnsembleDynamics"]))
    for name in names
}


def with_full_class_paths(args: list[str]) -> list[str]:
    """`--model.help MOPO` as `--model.help offrl.algos.mopo.MOPO` (jsonargparse takes only import paths there)."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--model.help" and out[i + 1] in ALGORITHMS:
            out[i + 1] = ALGORITHMS[out[i + 1]]
    return out


class HelpFormatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """Keeps HELP's layout; the rest as jsonargparse formats it."""


def run_lightning(args: list[str] | None, run: bool = True, callbacks: list[L.Callback] = ()) -> OffrlCLI:
    """The CLI on `args`; with run=False it only builds the model, datamodule and trainer (for scripts). `callbacks`
    join offrl's own (a study's trial adds the one that reports to Ray Tune)."""
    return OffrlCLI(
        OfflineAlgorithm,
        TransitionDataModule,
        parser_class=ConfigParser,
        parser_kwargs={"prog": "offrl", "description": HELP, "formatter_class": HelpFormatter},
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [StopCheckpoint(), RunReport(), *callbacks]},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


