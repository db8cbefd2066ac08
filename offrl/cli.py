"""The `offrl` command: LightningCLI for fit/validate/test/predict, plus `offrl data ...` for datasets."""

from __future__ import annotations

import argparse
import errno
import logging
import re
import shutil
import sys
import warnings
from pathlib import Path

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger

from offrl.algos.base import OfflineAlgorithm
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.callbacks.fault_tolerance import FiniteLosses, StopCheckpoint
from offrl.callbacks.report import RunReport
from offrl.callbacks.throughput import UpdateLoop, UpdateThroughput
from offrl.checkpoints import AtomicCheckpointIO, newest_readable, read_checkpoint
from offrl.data.datamodules import TransitionDataModule
from offrl.errors import OffrlError

LOG_ROOT = "logs"


def dataset_short_name(dataset_id: str) -> str:
    """'offrl/pointmaze/umaze-v0' -> 'pointmaze-umaze'; 'offrl/mujoco/hopper/medium-v0' -> 'hopper-medium'."""
    parts = dataset_id.split("/")
    parts = parts[1:] if len(parts) > 1 else parts
    if len(parts) > 2 and parts[0] in ("mujoco", "adroit"):
        parts = parts[1:]
    parts[-1] = re.sub(r"-v\d+$", "", parts[-1])
    return "-".join(parts)


def latest_run(run_dir: Path) -> tuple[int, Path] | None:
    """(version, checkpoints folder) of the newest version under `run_dir` that saved a checkpoint."""
    found = []
    for version_dir in run_dir.glob("version_*"):
        number = version_dir.name[len("version_"):]
        if number.isdigit() and any((version_dir / "checkpoints").glob("*.ckpt")):
            found.append((int(number), version_dir / "checkpoints"))
    return max(found) if found else None


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
        changed = [
            f"model.{key} {plain(saved_hparams[key])!r} -> {plain(value)!r}"
            for key, value in model.hparams.items()
            if key in saved_hparams and not key.startswith("_") and plain(saved_hparams[key]) != plain(value)
        ]
        if changed:
            return (
                f"checkpoint {path} was trained with other settings than the config gives ({', '.join(changed)}); "
                "resume with the run's own config (its config.yaml) or start a new run without --ckpt_path"
            )
    return None


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

    def _parse_ckpt_path(self) -> None:
        """Lightning would overwrite the config's model with the checkpoint's hyperparameters (so another
        algorithm's checkpoint was taken silently); offrl keeps the config and checks the checkpoint against it
        in instantiate_classes."""

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        # Set here, not as trainer.plugins: the recorded config stays loadable and a user's plugins stay theirs.
        self.trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_name = f"{self.model.algorithm_name}/{dataset_short_name(self.datamodule.dataset_id)}"
        version = None
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            # Resume in the newest run of this algorithm and dataset, logging into the same version folder.
            found = latest_run(Path(LOG_ROOT) / run_name)
            if found is None:
                raise OffrlError(f"--ckpt_path last found no checkpoint under {LOG_ROOT}/{run_name}; start a fresh run")
            version, checkpoint_dir = found
            path, skipped = newest_readable(checkpoint_dir)
            for line in skipped:
                print(f"offrl: {line}; resuming from {path} instead", file=sys.stderr)
            self.config_init[self.subcommand]["ckpt_path"] = str(path)
            config["ckpt_path"] = str(path)  # and the start's recorded config names the file it resumed
        elif ckpt_path is not None:
            path = Path(ckpt_path)
        self.start_step = 0
        if ckpt_path is not None:
            checkpoint = read_checkpoint(path, map_location="cpu", mmap=True)  # only its metadata is read here
            mismatch = checkpoint_mismatch(checkpoint, path, self.model, self.datamodule.dataset_id, self.subcommand == "fit")
            if mismatch:
                raise OffrlError(mismatch)
            self.start_step = int(checkpoint.get("global_step", 0))
            del checkpoint
        self.fresh_run_dir = self.extra_config_file = None
        if config["trainer"].get("logger") in (None, True):
            self.trainer.logger = TensorBoardLogger(LOG_ROOT, name=run_name, version=version, default_hp_metric=False)
            run_dir = Path(self.trainer.logger.log_dir)
            if version is None:
                self.fresh_run_dir = run_dir
            self.name_config_file(run_dir)

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
  offrl test --config <run>/config.yaml --ckpt_path last                           evaluate a trained run
  offrl data {list,info,generate,import-d4rl} ...                                   datasets (offrl data --help)

Algorithms (model.class_path; one recipe per paper setting under configs/):
  offrl.algos.bc.BC                         behaviour cloning
  offrl.algos.value_policy.ValuePolicy      value (sarsa, iql, crl, td3) x extraction (awr, ddpgbc, sfbc); IQL, TD3+BC
  offrl.algos.rsp.RSP                       recursive skip-step planning
  offrl.algos.mopo.MOPO, .MBPO              model-based SAC with an MLP ensemble, offline / online
  offrl.algos.admpo.ADMPOOffline, .ADMPOOnline   ADMPO-OFF / ADMPO-ON, the any-step dynamics model
  offrl.algos.sac.SAC                       online SAC
`offrl fit --model.help MOPO` (or a full class path) lists one algorithm's settings."""


ALGORITHMS = {
    name: f"offrl.algos.{module}.{name}"
    for module, names in (("bc", ["BC"]), ("value_policy", ["ValuePolicy"]), ("rsp", ["RSP"]), ("mopo", ["MOPO", "MBPO"]),
                          ("admpo", ["ADMPOOffline", "ADMPOOnline"]), ("sac", ["SAC"]))
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


def run_lightning(args: list[str] | None, run: bool = True) -> OffrlCLI:
    """The CLI on `args`; with run=False it only builds the model, datamodule and trainer (for scripts)."""
    return OffrlCLI(
        OfflineAlgorithm,
        TransitionDataModule,
        parser_kwargs={"prog": "offrl", "description": HELP, "formatter_class": HelpFormatter},
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [StopCheckpoint(), RunReport()]},
        args=args,
        run=run,
        auto_configure_optimizers=False,
    )


def data_main(args: list[str]) -> None:
    from offrl.data import d4rl_import, registry

    parser = argparse.ArgumentParser(prog="offrl data", description="List, inspect, generate and import datasets.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="offrl/ ids that can be generated, and the datasets in the local Minari store")
    info = commands.add_parser("info", help="episodes, steps, spaces, env and recipe of a local dataset")
    info.add_argument("dataset_id")
    generate = commands.add_parser("generate", help="make an offrl/ dataset in the local Minari store")
    generate.add_argument("dataset_id")
    size = generate.add_mutually_exclusive_group()
    size.add_argument("--steps", type=int, help="environment steps (default: the recipe's full size)")
    size.add_argument("--episodes", type=int, help="complete episodes instead of steps")
    generate.add_argument("--seed", type=int, default=0)
    importer = commands.add_parser("import-d4rl", help="convert a D4RL-layout HDF5 file into a Minari dataset")
    importer.add_argument("file", type=Path)
    importer.add_argument("--id", required=True, dest="dataset_id", help="Minari id to create, e.g. local/hopper/medium-v0")
    importer.add_argument("--env", required=True, dest="env_id", help="Gymnasium env id the data came from, e.g. Hopper-v5")
    importer.add_argument(
        "--max-episode-steps",
        help="evaluation episode length (default: D4RL's for AdroitHand* envs, pen 100 and the others 200; else the env's registered limit)",
    )
    importer.add_argument("--env-kwargs", help='JSON object of keyword arguments for the env, e.g. \'{"terminate_when_unhealthy": false}\'')
    importer.add_argument(
        "--env-reward",
        action="store_true",
        help="AdroitHand* envs: evaluate with the env's own reward and pen episode end instead of D4RL's",
    )
    parsed = parser.parse_args(args)

    if parsed.command == "list":
        local = set(registry.local_ids())
        print("offrl/ ids (generated on demand; * = in the local store):")
        for dataset_id in registry.RECIPES:
            print(f"  {'*' if dataset_id in local else ' '} {dataset_id}")
        others = sorted(local - set(registry.RECIPES))
        if others:
            print("other datasets in the local Minari store:")
            for dataset_id in others:
                print(f"    {dataset_id}")
    elif parsed.command == "info":
        if parsed.dataset_id in registry.RECIPES and not registry.minari_io.dataset_path(parsed.dataset_id).exists():
            raise OffrlError(f"dataset {parsed.dataset_id} is not in the local store yet; make it with `offrl data generate {parsed.dataset_id}`")
        transitions, dataset_info = registry.load(parsed.dataset_id, generate_steps=None)
        print(f"id:            {dataset_info.dataset_id}")
        print(f"episodes:      {dataset_info.num_episodes}")
        print(f"transitions:   {transitions.batch_size[0]}")
        print(f"observation:   {dataset_info.observation_dim}   action: {dataset_info.action_dim}   goal: {dataset_info.goal_dim}")
        print(f"env:           {dataset_info.env_spec.id if dataset_info.env_spec else None}")
        print(f"eval env:      {dataset_info.eval_env_spec.id if dataset_info.eval_env_spec else None}")
        print(f"ref scores:    {dataset_info.ref_min_score} .. {dataset_info.ref_max_score}")
        for key, value in sorted(dataset_info.metadata.items()):
            print(f"recipe.{key}: {value}")
    elif parsed.command == "generate":
        registry.generate(parsed.dataset_id, steps=parsed.steps, episodes=parsed.episodes, seed=parsed.seed)
        print(f"wrote {parsed.dataset_id}")
    elif parsed.command == "import-d4rl":
        path = d4rl_import.import_d4rl(
            parsed.file, parsed.dataset_id, parsed.env_id, parsed.max_episode_steps, parsed.env_kwargs, d4rl_rules=not parsed.env_reward
        )
        print(f"wrote {parsed.dataset_id} to {path}")


def user_error(err: BaseException) -> OffrlError | None:
    """The OffrlError behind `err`, if any: config parsing and Lightning wrap errors raised inside them."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OffrlError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def path_fault(err: BaseException) -> str | None:
    """One sentence for a fault of the machine on a path offrl reads or writes (read-only or full folder, a file
    where a folder should be, a missing file), or None when `err` is not one."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.filename is not None and err.errno is not None:
            fix = {
                errno.ENOSPC: "free disk space there",
                errno.EACCES: "make it writable or point offrl elsewhere",
                errno.EROFS: "point offrl at a writable folder",
                errno.ENOTDIR: "a file stands where a folder should be: move it",
                errno.EEXIST: "a file stands where a folder should be: move it",
                errno.ENOENT: "check the path",
            }.get(err.errno, "check the path and the disk")
            return f"cannot use {err.filename} ({err.strerror}); {fix}, then run the command again"
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


# Messages every run printed that a user can do nothing about, each with why it does not apply to offrl.
KNOWN_NOISE = (
    (r"`author_email` is set to None", "Minari asks dataset authors for an e-mail; offrl's generated datasets name their recipe"),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", "Lightning 2.6's pytree helper under torch 2.13, not offrl code"),
    (r"Your `IterableDataset` has `__len__` defined", "offrl's step loader runs without workers, so its length is exact"),
    (r"Using ModelCheckpoint with manual optimization", "offrl's update steps the optimisers itself; a checkpoint holds the state after an update, which resumes exactly"),
    (r"The number of training batches \(\d+\) is smaller than the logging interval", "Lightning compares trainer steps with log_every_n_steps, which offrl counts in updates"),
)


class DropLightningTips(logging.Filter):
    """Lightning's advertisement for its cloud logger, printed at every fit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def silence_known_noise() -> None:
    for message, _why in KNOWN_NOISE:
        warnings.filterwarnings("ignore", message=message)
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, DropLightningTips) for f in logger.filters):  # main() may run many times in a process
        logger.addFilter(DropLightningTips())


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    silence_known_noise()
    try:
        if args and args[0] == "data":
            data_main(args[1:])
        elif argv is None:
            sys.argv[1:] = with_full_class_paths(args)  # LightningCLI reads sys.argv when given no args
            run_lightning(None)
        else:
            run_lightning(with_full_class_paths(args))
    except Exception as err:
        found = user_error(err) or path_fault(err)
        if found is None:
            raise
        print(f"offrl: error: {found}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("offrl: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
