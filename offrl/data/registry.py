"""Dataset ids: the `offrl/` ids made here by generators, and any other Minari id loaded through Minari."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from functools import partial
from typing import Callable

import minari
from tensordict import TensorDict
from tqdm.auto import tqdm

from offrl.data import minari_io
from offrl.data.generators import GeneratedDataset, Progress
from offrl.dataset_info import DatasetInfo
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
ID_PATTERN = minari_io.ID_PATTERN


def local_ids() -> list[str]:
    return sorted(minari.list_local_datasets(compatible_minari_version=False).keys())


def _unknown_id(dataset_id: str, reason: str) -> OffrlError:
    candidates = list(RECIPES) + local_ids() + list(PUBLIC_IDS)
    close = difflib.get_close_matches(dataset_id, candidates, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "`offrl data list` shows the known ids."
    return OffrlError(f"unknown dataset id {dataset_id!r} ({reason}); {hint}")


def recipe(dataset_id: str) -> Recipe:
    if dataset_id not in RECIPES:
        raise _unknown_id(dataset_id, "offrl/ ids are made by `offrl data generate`")
    return RECIPES[dataset_id]


def generate(dataset_id: str, steps: int | None = None, episodes: int | None = None, seed: int = 0) -> None:
    """Generate an `offrl/` dataset into the local Minari store, with a progress bar; atomic."""
    found = recipe(dataset_id)
    if steps is not None and episodes is not None:
        raise OffrlError("give either --steps or --episodes, not both")
    for name, value in (("steps", steps), ("episodes", episodes)):
        if value is not None and value <= 0:
            raise OffrlError(f"--{name} must be a positive number, got {value}")
    if steps is None and episodes is None:
        steps, episodes = found.default_steps, found.default_episodes
    minari_io.check_new_id(dataset_id)  # before minutes or hours of generation, not after
    total = steps if steps is not None else None
    with minari_io.generation_lock(dataset_id):
        with tqdm(total=total, desc=f"generating {dataset_id}", unit="step", dynamic_ncols=True) as bar:
            progress: Progress = bar.update
            generated = found.generate(steps=steps, episodes=episodes, seed=seed, progress=progress)
        minari_io.write_dataset(dataset_id, generated)


def load(
    dataset_id: str, generate_steps: int | None = None, generate_episodes: int | None = None, seed: int = 0
) -> tuple[TensorDict, DatasetInfo]:
    """Any dataset id -> (transitions on the CPU, info). Missing `offrl/` ids are generated first."""
    if not ID_PATTERN.match(dataset_id):
        raise _unknown_id(dataset_id, "Minari ids look like namespace/name-vN")
    exists = minari_io.dataset_path(dataset_id).exists()
    if dataset_id.startswith("offrl/"):
        if not exists:
            generate(dataset_id, steps=generate_steps, episodes=generate_episodes, seed=seed)
        dataset = minari_io.load_minari(dataset_id, download=False)
    else:
        if not exists and dataset_id not in PUBLIC_IDS:
            # Probably a typo of a known id: say so now, not after a download's retries (a minute offline).
            known = list(RECIPES) + local_ids() + list(PUBLIC_IDS)
            close = difflib.get_close_matches(dataset_id, known, n=3, cutoff=0.85)
            if close:
                raise OffrlError(
                    f"dataset {dataset_id!r} is not in the local store; did you mean {', '.join(close)}? "
                    f"(if it is a remote Minari id, fetch it first with `minari download {dataset_id}`)"
                )
        try:
            dataset = minari_io.load_minari(dataset_id, download=not exists)
        except OffrlError as err:
            close = difflib.get_close_matches(dataset_id, [i for i in PUBLIC_IDS if i != dataset_id], n=3, cutoff=0.8)
            if close and dataset_id not in PUBLIC_IDS:
                raise OffrlError(f"{err}; did you mean {', '.join(close)}?") from None
            raise
    try:
        transitions = minari_io.cached_transitions(dataset)
        return transitions, minari_io.dataset_info(dataset, transitions)
    except OffrlError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:  # a damaged HDF5 file or metadata in the store
        raise minari_io.unreadable(dataset_id, err) from None
