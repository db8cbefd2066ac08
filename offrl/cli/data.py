"""`offrl data {list,info,generate,import-d4rl}`: the local Minari store and offrl's dataset recipes."""

from __future__ import annotations

import argparse
from pathlib import Path

from offrl.data import catalog
from offrl.errors import OffrlError


def data_main(args: list[str]) -> None:
    parsed = data_parser().parse_args(args)
    {"list": list_datasets, "info": show_info, "generate": generate, "import-d4rl": import_d4rl}[parsed.command](parsed)


def data_parser() -> argparse.ArgumentParser:
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
    return parser


def list_datasets(parsed: argparse.Namespace) -> None:
    local = set(catalog.local_ids())
    print("offrl/ ids (generated on demand; * = in the local store):")
    for dataset_id in catalog.RECIPES:
        print(f"  {'*' if dataset_id in local else ' '} {dataset_id}")
    others = sorted(local - set(catalog.RECIPES))
    if others:
        print("other datasets in the local Minari store:")
        for dataset_id in others:
            print(f"    {dataset_id}")


def show_info(parsed: argparse.Namespace) -> None:
    from offrl.data import minari_io, registry

    if parsed.dataset_id in catalog.RECIPES and not minari_io.dataset_path(parsed.dataset_id).exists():
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


def generate(parsed: argparse.Namespace) -> None:
    from offrl.data import registry

    registry.generate(parsed.dataset_id, steps=parsed.steps, episodes=parsed.episodes, seed=parsed.seed)
    print(f"wrote {parsed.dataset_id}")


def import_d4rl(parsed: argparse.Namespace) -> None:
    from offrl.data import d4rl_import

    path = d4rl_import.import_d4rl(
        parsed.file, parsed.dataset_id, parsed.env_id, parsed.max_episode_steps, parsed.env_kwargs, d4rl_rules=not parsed.env_reward
    )
    print(f"wrote {parsed.dataset_id} to {path}")
