"""The `offrl` command: LightningCLI for fit/validate/test/predict, plus `offrl data ...` for datasets."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger

from offrl.algos.base import OfflineAlgorithm
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.callbacks.fault_tolerance import FiniteLosses, StopCheckpoint
from offrl.callbacks.throughput import UpdateLoop, UpdateThroughput
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


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(version, last.ckpt) of the newest version under `run_dir` that saved one."""
    found = []
    for version_dir in run_dir.glob("version_*"):
        last = version_dir / "checkpoints" / "last.ckpt"
        if last.is_file() and version_dir.name[len("version_"):].isdigit():
            found.append((int(version_dir.name[len("version_"):]), last))
    return max(found) if found else None


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

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_name = f"{self.model.algorithm_name}/{dataset_short_name(self.datamodule.dataset_id)}"
        version = None
        ckpt_path = config.get("ckpt_path")
        if ckpt_path == "last":
            # Resume in the newest run of this algorithm and dataset, logging into the same version folder.
            found = latest_checkpoint(Path(LOG_ROOT) / run_name)
            if found is None:
                raise OffrlError(f"--ckpt_path last found no checkpoint under {LOG_ROOT}/{run_name}; start a fresh run")
            version, path = found
            self.config_init[self.subcommand]["ckpt_path"] = str(path)
        elif ckpt_path is not None and not Path(ckpt_path).is_file():
            raise OffrlError(f"--ckpt_path {ckpt_path} does not exist; give a .ckpt file or 'last'")
        if config["trainer"].get("logger") in (None, True):
            self.trainer.logger = TensorBoardLogger(LOG_ROOT, name=run_name, version=version, default_hp_metric=False)


def run_lightning(args: list[str] | None, run: bool = True) -> OffrlCLI:
    """The CLI on `args`; with run=False it only builds the model, datamodule and trainer (for scripts)."""
    return OffrlCLI(
        OfflineAlgorithm,
        TransitionDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [StopCheckpoint()]},
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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args and args[0] == "data":
            data_main(args[1:])
        else:
            run_lightning(argv)
    except Exception as err:
        found = user_error(err)
        if found is None:
            raise
        print(f"offrl: error: {found}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("offrl: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
