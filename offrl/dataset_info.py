"""What training and evaluation know about a dataset besides its transitions (`DatasetInfo`), and the D4RL
reference returns its normalised scores use: 100 * (R - min) / (max - min). A leaf: data, envs, algos and callbacks
all read it, and it imports none of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec

# (min, max) by task, from D4RL (see DESIGN.md's table).
D4RL_REFERENCE_SCORES: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "maze2d-umaze": (23.85, 161.86),
    "maze2d-medium": (13.13, 277.39),
    "maze2d-large": (6.7, 273.99),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
}

# Gymnasium env name (id without version) -> D4RL task.
ENV_TASKS: dict[str, str] = {
    "Hopper": "hopper",
    "HalfCheetah": "halfcheetah",
    "Walker2d": "walker2d",
    "Ant": "ant",
    "PointMaze_UMaze": "maze2d-umaze",
    "PointMaze_Medium": "maze2d-medium",
    "PointMaze_Large": "maze2d-large",
    "AntMaze_UMaze": "antmaze",
    "AntMaze_Medium": "antmaze",
    "AntMaze_Large": "antmaze",
    "AdroitHandPen": "pen",
    "AdroitHandDoor": "door",
    "AdroitHandHammer": "hammer",
    "AdroitHandRelocate": "relocate",
    "FrankaKitchen": "kitchen",
}


def reference_scores(env_id: str | None) -> tuple[float | None, float | None]:
    """(min, max) reference returns for a Gymnasium env id such as 'Hopper-v5'; (None, None) when unknown."""
    if env_id is None:
        return None, None
    task = ENV_TASKS.get(env_id.split("/")[-1].rsplit("-v", 1)[0])
    return D4RL_REFERENCE_SCORES.get(task, (None, None))


def box_bounds(space) -> tuple[list[float], list[float]]:
    """A gymnasium Box's low and high, broadcast to its shape and flattened (a Box may give one scalar bound)."""
    return tuple(np.broadcast_to(bound, space.shape).reshape(-1).astype(float).tolist() for bound in (space.low, space.high))


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
