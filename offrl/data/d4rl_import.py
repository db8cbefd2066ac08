"""D4RL-layout HDF5 (observations, actions, rewards, terminals, timeouts[, next_observations, infos/goal]) -> Minari."""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from pathlib import Path
from typing import Any

import gymnasium as gym
import h5py
import numpy as np
from minari.data_collector import EpisodeBuffer

from offrl.data import minari_io
from offrl.data.generators import GeneratedDataset
from offrl.envs import d4rl_adroit
from offrl.dataset_info import reference_scores
from offrl.envs.robotics import robotics_envs
from offrl.errors import OffrlError

REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals", "timeouts")


def read_d4rl_arrays(path: Path) -> dict[str, np.ndarray]:
    """The D4RL arrays of an HDF5 file, checked for presence, equal lengths and finite values."""
    if not path.is_file():
        raise OffrlError(f"HDF5 file {path} does not exist; check the path")
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in REQUIRED_KEYS if key not in f]
            if missing:
                raise OffrlError(
                    f"{path} is missing the D4RL keys {missing}; a D4RL file holds {', '.join(REQUIRED_KEYS)}"
                )
            arrays = {key: np.asarray(f[key]) for key in REQUIRED_KEYS}
            for optional in ("next_observations", "infos/goal"):
                if optional in f:
                    arrays[optional] = np.asarray(f[optional])
    except OSError as err:
        raise OffrlError(f"{path} is not a readable HDF5 file ({err}); it may be truncated or corrupt, so fetch it again") from None

    length = len(arrays["observations"])
    for key, array in arrays.items():
        if array.ndim == 0 or len(array) != length:
            raise OffrlError(f"{path}: {key} has {array.shape[0] if array.ndim else 0} rows but observations has {length}")
        if np.issubdtype(array.dtype, np.floating):
            bad = ~np.isfinite(array)
            if bad.any():
                raise OffrlError(
                    f"{path}: {key} holds {int(bad.sum())} NaN/inf values (first at row {int(np.argwhere(bad)[0][0])}); "
                    "clean the file before importing"
                )
    if length == 0:
        raise OffrlError(f"{path} holds no transitions")
    for key in ("observations", "actions", "next_observations", "infos/goal"):
        if key in arrays and arrays[key].ndim != 2:
            raise OffrlError(f"{path}: {key} has shape {arrays[key].shape} but D4RL stores it as [rows, dim]")
    if "next_observations" in arrays and arrays["next_observations"].shape != arrays["observations"].shape:
        raise OffrlError(
            f"{path}: next_observations has shape {arrays['next_observations'].shape} but observations has "
            f"{arrays['observations'].shape}"
        )
    for key in ("rewards", "terminals", "timeouts"):
        if arrays[key].size != length:
            raise OffrlError(f"{path}: {key} has shape {arrays[key].shape} but D4RL stores one value per row ({length} rows)")
        arrays[key] = arrays[key].reshape(length)
    return arrays


def split_episodes(arrays: dict[str, np.ndarray]) -> list[EpisodeBuffer]:
    """Cut the flat arrays at terminals and timeouts (kept apart as terminations and truncations).

    Each episode needs one observation more than it has actions: with `next_observations` that is the
    last next observation; without it, D4RL's own convention applies and the last step only supplies it.
    """
    terminals = arrays["terminals"].astype(bool).reshape(-1)
    timeouts = arrays["timeouts"].astype(bool).reshape(-1)
    has_next = "next_observations" in arrays
    goal = arrays.get("infos/goal")
    ends = np.flatnonzero(terminals | timeouts).tolist()
    if not ends or ends[-1] != len(terminals) - 1:
        ends.append(len(terminals) - 1)  # the file's last transitions form a cut-off episode

    def observations(rows: slice, final_row: int) -> dict | np.ndarray:
        obs = arrays["observations"][rows]
        final = arrays["next_observations"][final_row] if has_next else None
        stacked = np.concatenate([obs, final[None]]) if final is not None else obs
        stacked = stacked.astype(np.float32)
        if goal is None:
            return stacked
        goals = arrays["infos/goal"][rows]
        goals = np.concatenate([goals, goals[-1:]]) if final is not None else goals
        # D4RL maze2d: the first two observation dims are the position, the goal space of PointMaze.
        return {"observation": stacked, "achieved_goal": stacked[:, : goals.shape[1]], "desired_goal": goals.astype(np.float32)}

    episodes = []
    start = 0
    for end in ends:
        last = end if has_next else end - 1  # without next observations, the final step only gives s_T
        if last >= start:
            rows = slice(start, last + 1)
            terminated = terminals[rows].copy()
            truncated = timeouts[rows].copy()
            if not has_next:
                # The dropped step decided how the episode ended.
                terminated[-1], truncated[-1] = terminals[end], timeouts[end] or not terminals[end]
            elif not (terminated[-1] or truncated[-1]):
                truncated[-1] = True
            episodes.append(
                EpisodeBuffer(
                    id=len(episodes),
                    observations=observations(slice(start, end + 1) if not has_next else rows, end),
                    actions=arrays["actions"][rows].astype(np.float32),
                    rewards=arrays["rewards"][rows].astype(np.float64).reshape(-1),
                    terminations=terminated,
                    truncations=truncated,
                )
            )
        start = end + 1
    if not episodes:
        raise OffrlError("the file holds no episode with at least one complete transition")
    return episodes


def parse_env_kwargs(text: str | None) -> dict[str, Any]:
    """The JSON object of `--env-kwargs` as a dict ({} for None), or one sentence why not."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        example = "'{\"terminate_when_unhealthy\": false}'"
        raise OffrlError(f"--env-kwargs {text!r} is not a JSON object of keyword arguments; give one such as {example}")
    return value


def parse_max_episode_steps(value: int | str | None) -> int | None:
    """`--max-episode-steps` as a positive int (None stays None: the default length), or one sentence why not."""
    if value is None:
        return None
    try:
        steps = int(value) if not isinstance(value, (bool, float)) else None
    except ValueError:
        steps = None
    if steps is None or steps <= 0:
        raise OffrlError(
            f"--max-episode-steps {value} is not a positive whole number of steps; give the evaluation episode "
            "length, e.g. 200, or leave it out for the env's default"
        )
    return steps


def similar_env_ids(env_id: str, count: int = 3) -> list[str]:
    """Registered env ids that look like `env_id`: those containing its name, newest version first
    (door-v0 -> AdroitHandDoor-v1), then close spellings."""
    def name_and_version(i: str) -> tuple[str, int]:
        found = re.fullmatch(r"(.*)-v(\d+)", i)
        return (found.group(1), -int(found.group(2))) if found else (i, 0)

    name = name_and_version(env_id)[0].lower()
    containing = [i for i in sorted(gym.registry, key=name_and_version) if name in i.lower() and i != env_id]
    close = difflib.get_close_matches(env_id, list(gym.registry), n=count, cutoff=0.7)
    return list(dict.fromkeys(containing + close))[:count]


def eval_env_spec(
    env_id: str, max_episode_steps: int | None = None, env_kwargs: dict[str, Any] | None = None, d4rl_rules: bool = True
) -> gym.envs.registration.EnvSpec:
    """The spec an imported dataset records for `env_id`: its kwargs updated by `env_kwargs`, its time limit
    replaced by `max_episode_steps`, and, for a dense AdroitHand* env unless `d4rl_rules` is off, D4RL's Adroit
    reward, pen ending and episode length (offrl.envs.d4rl_adroit)."""
    robotics_envs()
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        close = similar_env_ids(env_id)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise OffrlError(f"--env {env_id!r} is not a Gymnasium env that can be made here ({err}){hint}") from None
    if d4rl_rules and d4rl_adroit.adroit_task(env_id) is not None:
        return d4rl_adroit.d4rl_adroit_spec(env_id, max_episode_steps, env_kwargs)
    return dataclasses.replace(
        spec,
        kwargs={**spec.kwargs, **(env_kwargs or {})},
        max_episode_steps=spec.max_episode_steps if max_episode_steps is None else max_episode_steps,
    )


def import_d4rl(
    path: Path,
    dataset_id: str,
    env_id: str,
    max_episode_steps: int | str | None = None,
    env_kwargs: dict[str, Any] | str | None = None,
    d4rl_rules: bool = True,
) -> Path:
    """Convert a D4RL HDF5 file into the Minari dataset `dataset_id` recorded against Gymnasium env `env_id`.

    The recorded env (used by evaluation) is `env_id` made with `env_kwargs` (a dict or a JSON object) and
    `max_episode_steps` (default: the registered limit); a dense AdroitHand* env gets D4RL's reward and episode
    length (pen 100 steps, the others 200) unless `d4rl_rules` is False, so scores compare with D4RL's tables.
    """
    minari_io.check_new_id(dataset_id)  # before the conversion, which can take minutes
    with minari_io.generation_lock(dataset_id):  # a second import of the same id is refused at once
        return convert_d4rl(path, dataset_id, env_id, max_episode_steps, env_kwargs, d4rl_rules)


def convert_d4rl(
    path: str | Path, dataset_id: str, env_id: str, max_episode_steps: int | str | None,
    env_kwargs: dict[str, Any] | str | None, d4rl_rules: bool,
) -> Path:
    """import_d4rl's work, under the id's writer lock."""
    steps = parse_max_episode_steps(max_episode_steps)
    kwargs = parse_env_kwargs(env_kwargs) if not isinstance(env_kwargs, dict) else env_kwargs
    spec = eval_env_spec(env_id, steps, kwargs, d4rl_rules)
    try:
        env = gym.make(spec)
    except OffrlError:
        raise
    except Exception as err:  # gym errors, and TypeError/ValueError from a constructor refusing a kwarg
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        if not kwargs:
            raise OffrlError(f"--env {env_id!r} is not a Gymnasium env that can be made here ({detail})") from None
        raise OffrlError(
            f"--env {env_id!r} cannot be made with --env-kwargs {json.dumps(kwargs)} ({detail}); pass only keyword "
            "arguments its constructor takes"
        ) from None
    try:
        obs_space = env.observation_space["observation"] if isinstance(env.observation_space, gym.spaces.Dict) else env.observation_space
        action_space = env.action_space
    finally:
        env.close()
    arrays = read_d4rl_arrays(Path(path))
    episodes = split_episodes(arrays)
    if arrays["observations"].shape[1:] != obs_space.shape:
        raise OffrlError(
            f"observations in {path} have shape {arrays['observations'].shape[1:]} but {env_id} gives {obs_space.shape}; pick the matching --env"
        )
    if arrays["actions"].shape[1:] != action_space.shape:
        raise OffrlError(f"actions in {path} have shape {arrays['actions'].shape[1:]} but {env_id} takes {action_space.shape}")
    if isinstance(env.observation_space, gym.spaces.Dict) and "infos/goal" not in arrays:
        raise OffrlError(f"{env_id} is goal-conditioned but {path} has no infos/goal; pick a flat-observation --env")
    ref_min, ref_max = reference_scores(env_id)
    rules = d4rl_adroit.has_d4rl_rules(spec)
    generated = GeneratedDataset(
        episodes=episodes,
        env_spec=spec,
        eval_env_spec=spec,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name="imported from D4RL HDF5",
        description=f"Imported from {Path(path).name} by offrl data import-d4rl.",
        metadata={
            "source_file": str(Path(path).resolve()),
            "transitions_in_file": int(len(arrays["observations"])),
            "max_episode_steps": spec.max_episode_steps,
            "env_kwargs": kwargs,
            "eval_reward": "D4RL's Adroit rules (offrl.envs.d4rl_adroit.D4RLAdroit)" if rules else "the env's own",
        },
    )
    return minari_io.write_dataset(dataset_id, generated)
