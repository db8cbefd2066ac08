"""The dataset ids offrl knows without loading anything: the `offrl/` recipes it can generate, the ids in the
local Minari store, and well-known public ids for spelling suggestions. Light on purpose (no torch, no
tensordict), so that `offrl data list` answers in about a second."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import minari

from offrl.data.generators import GeneratedDataset
from offrl.errors import OffrlError

MUJOCO_ENVS = ("hopper", "halfcheetah", "walker2d")
MUJOCO_LEVELS = ("random", "medium", "expert", "medium-expert")
ADROIT_TASKS = ("pen", "door", "hammer", "relocate")
MAZES = ("umaze", "medium", "large")

# Well-known public ids, only used to suggest a spelling when an id is not found.
PUBLIC_IDS = (
    [f"D4RL/pointmaze/{maze}-v2" for maze in ("umaze", "umaze-dense", "medium", "medium-dense", "large", "large-dense")]
    + [f"D4RL/antmaze/{maze}-v1" for maze in ("umaze", "umaze-diverse", "medium-play", "medium-diverse", "large-play", "large-diverse")]
    + [f"D4RL/{task}/{level}-v2" for task in ADROIT_TASKS for level in ("human", "cloned", "expert")]
    + [f"D4RL/kitchen/{level}-v2" for level in ("complete", "partial", "mixed")]
    + [f"mujoco/{env}/{level}-v0" for env in ("hopper", "halfcheetah", "walker2d", "ant") for level in ("simple", "medium", "expert")]
)


@dataclass(frozen=True)
class Recipe:
    """How to make one `offrl/` dataset: a generator call and its full-size budget."""

    generate: Callable[..., GeneratedDataset]  # (steps=, episodes=, seed=, progress=) -> GeneratedDataset
    default_steps: int | None = None
    default_episodes: int | None = None


def _pointmaze(maze: str, variant: str = "", **kwargs) -> GeneratedDataset:
    from offrl.data.generators import pointmaze

    noise = {"": pointmaze.ACTION_NOISE_STD, "expert": pointmaze.EXPERT_ACTION_NOISE_STD, "explore": pointmaze.EXPLORE_ACTION_NOISE_STD}
    return pointmaze.generate(maze, action_noise_std=noise[variant], **kwargs)


def _mujoco(env: str, level: str, **kwargs) -> GeneratedDataset:
    from offrl.data.generators import mujoco

    return mujoco.generate(env, level, **kwargs)


def _medium_replay(env: str, **kwargs) -> GeneratedDataset:
    # A recipe that trains an agent (offrl.recipes) is above the data layer: it is found by name, not imported here.
    return importlib.import_module("offrl.recipes.medium_replay").generate(env, **kwargs)


def _adroit(task: str, **kwargs) -> GeneratedDataset:
    from offrl.data.generators import adroit

    return adroit.generate(task, **kwargs)


def _recipes() -> dict[str, Recipe]:
    recipes = {}
    for maze in MAZES:
        recipes[f"offrl/pointmaze/{maze}-v0"] = Recipe(partial(_pointmaze, maze), default_steps=1_000_000)
        # Same recipe without action noise / with much more: the two sides of the coverage-vs-optimality question.
        for variant in ("expert", "explore"):
            recipes[f"offrl/pointmaze/{maze}-{variant}-v0"] = Recipe(partial(_pointmaze, maze, variant), default_steps=1_000_000)
        # The same recipe at a tenth of the size, under its own id (a quick run never shrinks the full dataset).
        recipes[f"offrl/pointmaze/{maze}-100k-v0"] = Recipe(partial(_pointmaze, maze), default_steps=100_000)
    for env in MUJOCO_ENVS:
        for level in MUJOCO_LEVELS:
            # D4RL's medium-expert concatenates the 1M-step medium and expert sets.
            steps = 2_000_000 if level == "medium-expert" else 1_000_000
            recipes[f"offrl/mujoco/{env}/{level}-v0"] = Recipe(partial(_mujoco, env, level), default_steps=steps)
        # The replay buffer of an online SAC run, stopped at the medium level; the budget caps it (D4RL's hold
        # 0.2M-0.4M steps).
        recipes[f"offrl/mujoco/{env}/medium-replay-v0"] = Recipe(partial(_medium_replay, env), default_steps=1_000_000)
    for task in ADROIT_TASKS:
        # D4RL's Adroit expert sets hold 5000 episodes each.
        recipes[f"offrl/adroit/{task}/expert-v0"] = Recipe(partial(_adroit, task), default_episodes=5000)
    return recipes


RECIPES = _recipes()
def local_ids() -> list[str]:
    return sorted(minari.list_local_datasets(compatible_minari_version=False).keys())


def unknown_id(dataset_id: str, reason: str) -> OffrlError:
    candidates = list(RECIPES) + local_ids() + list(PUBLIC_IDS)
    close = difflib.get_close_matches(dataset_id, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "`offrl data list` shows the known ids."
    return OffrlError(f"unknown dataset id {dataset_id!r} ({reason}); {hint}")


def recipe(dataset_id: str) -> Recipe:
    if dataset_id not in RECIPES:
        raise unknown_id(dataset_id, "offrl/ ids are made by `offrl data generate`")
    return RECIPES[dataset_id]
