"""Minari datasets <-> one TensorDict of transitions.

Layout of the TensorDict (batch size [N] transitions, TorchRL key conventions):
    observation, action, episode, step, episode_last  (+ achieved_goal, desired_goal on goal datasets)
    ("next", observation | reward | terminated | truncated | done)  (+ ("next", achieved_goal | desired_goal))
`episode_last` is the flat index of the last transition of the same episode: samplers use it to stay inside
an episode without scanning.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, NamedTuple

import gymnasium as gym
import h5py
import minari
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from tensordict import TensorDict

from offrl.data.generators import GeneratedDataset
from offrl.envs.scores import reference_scores
from offrl.errors import OffrlError
from offrl.paths import datasets_root

GOAL_KEYS = ("achieved_goal", "desired_goal")
CACHE_DIR = "offrl-cache-v1"  # beside Minari's data/ folder; bump the version when the layout changes


class EpisodeArrays(NamedTuple):
    id: int
    observations: np.ndarray | dict
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray


@dataclass
class DatasetInfo:
    """What training and evaluation need to know about a dataset besides its transitions."""

    dataset_id: str
    observation_dim: int
    action_dim: int
    goal_dim: int  # 0 for reward tasks
    action_low: list[float]
    action_high: list[float]
    env_spec: EnvSpec | None  # None when the dataset recorded no environment
    eval_env_spec: EnvSpec | None
    ref_min_score: float | None
    ref_max_score: float | None
    num_episodes: int
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def is_goal_conditioned(self) -> bool:
        return self.goal_dim > 0

    def normalized_score(self, episode_return: torch.Tensor) -> torch.Tensor | None:
        """D4RL convention: 100 * (R - min) / (max - min); None when the dataset has no reference scores."""
        if self.ref_min_score is None or self.ref_max_score is None:
            return None
        return 100.0 * (episode_return - self.ref_min_score) / (self.ref_max_score - self.ref_min_score)


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Minari reads its store from MINARI_DATASETS_PATH at call time; point it elsewhere for a moment."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def dataset_path(dataset_id: str) -> Path:
    return datasets_root() / dataset_id


TMP_PREFIX = ".offrl-tmp-"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def remove_abandoned_writes(root: Path) -> None:
    """Delete the temporary stores of dataset writes whose process died (a SIGKILL skips their clean-up)."""
    for folder in root.glob(f"{TMP_PREFIX}*"):
        pid = folder.name[len(TMP_PREFIX):].split("-")[0]
        if not pid.isdigit() or not _process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def write_dataset(dataset_id: str, generated: GeneratedDataset) -> Path:
    """Write a Minari dataset atomically: build it in a temporary store beside the real one, then rename.

    A killed process leaves at most a `.offrl-tmp-<pid>-*` folder, never a half dataset under the real id; the
    next write removes the folders of processes that are gone.
    """
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    final = dataset_path(dataset_id)
    if final.exists():
        raise OffrlError(f"dataset {dataset_id} already exists at {final}; delete that folder to regenerate it")
    remove_abandoned_writes(root)
    tmp_root = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=root))
    try:
        with _minari_root(tmp_root):
            created = minari.create_dataset_from_buffers(
                dataset_id=dataset_id,
                buffer=generated.episodes,
                env=generated.env_spec,
                eval_env=generated.eval_env_spec,
                algorithm_name=generated.algorithm_name,
                author="offrl",
                code_permalink="offrl.data.generators",
                ref_min_score=generated.ref_min_score,
                ref_max_score=generated.ref_max_score,
                description=generated.description,
            )
            # Minari's metadata must be flat; keep the recipe facts as one JSON string.
            created.storage.update_metadata({"offrl_recipe": json.dumps(generated.metadata, sort_keys=True)})
        transitions = episodes_to_tensordict(
            (EpisodeArrays(e.id, e.observations, e.actions, e.rewards, e.terminations, e.truncations) for e in generated.episodes),
            dataset_id,
        )
        write_cache(tmp_root / dataset_id / "data", transitions)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp_root / dataset_id, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


def _env_spec_from_metadata(value: Any) -> EnvSpec | None:
    if value is None:
        return None
    if isinstance(value, EnvSpec):
        return value
    try:
        return EnvSpec.from_json(value)
    except (gym.error.Error, ValueError, TypeError, json.JSONDecodeError):
        return None


def load_minari(dataset_id: str, download: bool) -> minari.MinariDataset:
    """Open a Minari dataset from the local store, downloading it first when allowed and missing."""
    path = dataset_path(dataset_id)
    if path.exists():
        try:
            return minari.load_dataset(dataset_id)
        except Exception as err:  # h5py and Minari raise many kinds for a damaged store
            raise OffrlError(
                f"dataset {dataset_id} at {path} cannot be read ({type(err).__name__}: {err}); delete that folder and "
                "generate or download it again"
            ) from None
    if not download:
        raise OffrlError(f"dataset {dataset_id} is not in the local Minari store ({datasets_root()})")
    try:
        return minari.load_dataset(dataset_id, download=True)
    except Exception as err:  # no network, unknown remote id, missing remote client: all end the same way
        raise OffrlError(
            f"dataset {dataset_id} is not in the local Minari store ({datasets_root()}) and could not be downloaded "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); download it where there is a "
            "network, or import an HDF5 file with `offrl data import-d4rl`"
        ) from None


def _stack_observations(observations: Any) -> dict[str, np.ndarray]:
    """Flat observations -> {'observation'}; goal dicts -> {'observation', 'achieved_goal', 'desired_goal'}."""
    if isinstance(observations, dict):
        missing = {"observation", *GOAL_KEYS} - set(observations)
        if missing:
            raise OffrlError(
                f"dict observations need the keys observation, achieved_goal, desired_goal, but {sorted(missing)} "
                "are missing; flatten the observations before storing the dataset"
            )
        return {key: np.asarray(observations[key], dtype=np.float32) for key in ("observation", *GOAL_KEYS)}
    return {"observation": np.asarray(observations, dtype=np.float32)}


def _check_finite(name: str, array: np.ndarray, episode_id: int) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise OffrlError(
            f"{name} of episode {episode_id} holds {int(bad.sum())} NaN/inf values (first at index {first}); "
            "clean the dataset before training"
        )


def _read_group(node: h5py.Group | h5py.Dataset) -> np.ndarray | dict:
    return {key: _read_group(node[key]) for key in node} if isinstance(node, h5py.Group) else node[()]


def iterate_episode_arrays(dataset: minari.MinariDataset) -> Iterator[EpisodeArrays]:
    """(id, observations, actions, rewards, terminations, truncations) of every episode, in id order.

    Minari's own iterator decodes every episode's `infos` group, which dominates the time on datasets of
    thousands of episodes; for its HDF5 format we read the five arrays training needs and nothing else.
    """
    main_file = dataset.storage.data_path / "main_data.hdf5"
    if not main_file.is_file():  # another storage format: take Minari's general path
        for episode in dataset.iterate_episodes():
            yield EpisodeArrays(episode.id, episode.observations, episode.actions, episode.rewards, episode.terminations, episode.truncations)
        return
    with h5py.File(main_file, "r") as f:
        for episode_id in dataset.episode_indices:
            try:
                group = f[f"episode_{episode_id}"]
                arrays = [_read_group(group[key]) for key in ("observations", "actions", "rewards", "terminations", "truncations")]
            except KeyError as err:
                raise OffrlError(
                    f"{main_file} lacks part of episode {episode_id} ({err}); the dataset is damaged, so generate or download it again"
                ) from None
            yield EpisodeArrays(int(episode_id), *arrays)


def _checked_episode(episode: EpisodeArrays, dataset_id: str) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """(observations by key [T+1, d], actions [T, a], per-step columns [T]) of one episode, or one sentence why not."""
    where = f"episode {episode.id} of {dataset_id}"
    try:
        observations = _stack_observations(episode.observations)
        actions = np.asarray(episode.actions, dtype=np.float32)
        steps = {
            "reward": np.asarray(episode.rewards, dtype=np.float32),
            "terminated": np.asarray(episode.terminations).astype(bool),
            "truncated": np.asarray(episode.truncations).astype(bool),
        }
    except (TypeError, ValueError) as err:
        raise OffrlError(f"{where} holds values that are not numbers ({err}); the dataset is damaged") from None
    length = len(actions) if actions.ndim else 0
    actions = actions.reshape(length, -1) if length else actions.reshape(0, 0)
    for key, array in observations.items():
        if array.ndim != 2 or len(array) != length + 1:
            raise OffrlError(
                f"{where} has {key} of shape {array.shape} for {length} actions; an episode stores [steps + 1, dim] "
                "observations (flatten image or nested observations first)"
            )
    for key, array in steps.items():
        if array.size != length or array.ndim > 2:
            raise OffrlError(f"{where} has {key}s of shape {array.shape} for {length} actions; it needs one per step")
        steps[key] = array.reshape(length)
    return observations, actions, steps


def episodes_to_tensordict(episodes: Iterable[EpisodeArrays], dataset_id: str) -> TensorDict:
    """Every transition of every episode, in episode order, as one TensorDict on the CPU."""
    columns: dict[str, list[np.ndarray]] = {}

    def add(key: str, value: np.ndarray) -> None:
        columns.setdefault(key, []).append(value)

    start = 0
    widths: dict[str, int] = {}
    for episode in episodes:
        observations, actions, steps = _checked_episode(episode, dataset_id)
        length = len(actions)
        if length == 0:
            continue
        for name, array in [("actions", actions), ("rewards", steps["reward"]), *observations.items()]:
            _check_finite(name, array, episode.id)
        for key, array in [("action", actions), *observations.items()]:
            if widths.setdefault(key, array.shape[1]) != array.shape[1]:
                raise OffrlError(
                    f"episode {episode.id} of {dataset_id} has {key} of width {array.shape[1]} but earlier episodes have "
                    f"{widths[key]}; every episode needs the same spaces"
                )
        for key, array in observations.items():
            add(key, array[:-1])
            add(f"next_{key}", array[1:])
        add("action", actions)
        for key, array in steps.items():
            add(key, array)
        add("episode", np.full(length, episode.id, dtype=np.int64))
        add("step", np.arange(length, dtype=np.int64))
        add("episode_last", np.full(length, start + length - 1, dtype=np.int64))
        start += length
    if start == 0:
        raise OffrlError(f"dataset {dataset_id} holds no transitions; generate or download it again")

    tensor = {key: torch.from_numpy(np.concatenate(parts)) for key, parts in columns.items()}
    td = TensorDict(batch_size=[start])
    for key in ("observation", *GOAL_KEYS):
        if key in tensor:
            td[key] = tensor[key]
            td["next", key] = tensor[f"next_{key}"]
    td["action"] = tensor["action"]
    for key in ("episode", "step", "episode_last"):
        td[key] = tensor[key]
    td["next", "reward"] = tensor["reward"]
    td["next", "terminated"] = tensor["terminated"]
    td["next", "truncated"] = tensor["truncated"]
    # The flat layout cuts episodes apart: the last stored step of each episode is an end even if unmarked.
    td["next", "done"] = tensor["terminated"] | tensor["truncated"] | (torch.arange(start) == tensor["episode_last"])
    return td


def dataset_info(dataset: minari.MinariDataset, transitions: TensorDict) -> DatasetInfo:
    metadata = dataset.storage.metadata
    env_spec = _env_spec_from_metadata(metadata.get("env_spec"))
    eval_env_spec = _env_spec_from_metadata(metadata.get("eval_env_spec")) or env_spec
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if ref_min is None or ref_max is None:
        ref_min, ref_max = reference_scores(eval_env_spec.id if eval_env_spec else None)
    space = dataset.action_space
    recipe = metadata.get("offrl_recipe")
    return DatasetInfo(
        dataset_id=dataset.spec.dataset_id,
        observation_dim=transitions["observation"].shape[-1],
        action_dim=transitions["action"].shape[-1],
        goal_dim=transitions["desired_goal"].shape[-1] if "desired_goal" in transitions.keys() else 0,
        action_low=np.broadcast_to(space.low, space.shape).reshape(-1).astype(float).tolist(),
        action_high=np.broadcast_to(space.high, space.shape).reshape(-1).astype(float).tolist(),
        env_spec=env_spec,
        eval_env_spec=eval_env_spec,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        num_episodes=int(dataset.total_episodes),
        metadata=json.loads(recipe) if recipe else {},
    )


def _cache_stamp(data_path: Path) -> str:
    """Identifies the stored data: a cache made from other bytes is never used."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(data_path.iterdir()) if p.is_file()]
    return json.dumps(stats)


def write_cache(data_path: Path, transitions: TensorDict) -> TensorDict:
    """Keep `transitions` as a memory-mapped TensorDict beside Minari's `data/` folder; returns the mapped copy.

    Written to a temporary folder and renamed, so an interrupted write leaves no cache that looks complete.
    """
    cache = data_path.parent / CACHE_DIR
    tmp = Path(tempfile.mkdtemp(prefix=".offrl-cache-tmp-", dir=data_path.parent))
    try:
        transitions.memmap(tmp / "transitions")
        (tmp / "stamp.json").write_text(_cache_stamp(data_path))
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(tmp, cache)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # a read-only store still trains, just without a cache
        return transitions
    return TensorDict.load_memmap(cache / "transitions")


def cached_transitions(dataset: minari.MinariDataset) -> TensorDict:
    """The transitions of `dataset`: mapped from the cache when it matches the stored data, else converted once.

    Datasets generated here get their cache at creation; others (downloaded, imported by Minari) pay the
    HDF5 conversion on their first load only.
    """
    data_path = Path(dataset.storage.data_path)
    cache = data_path.parent / CACHE_DIR
    if (cache / "stamp.json").is_file() and (cache / "stamp.json").read_text() == _cache_stamp(data_path):
        return TensorDict.load_memmap(cache / "transitions")
    return write_cache(data_path, episodes_to_tensordict(iterate_episode_arrays(dataset), dataset.spec.dataset_id))
