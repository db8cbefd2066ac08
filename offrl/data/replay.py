"""A growing replay buffer as a DataModule: online interaction appends env steps, updates sample them on the device.

The buffer is one preallocated TensorDict with the offline transitions' key layout (observation, action, episode,
step, episode_last, ("next", observation | reward | terminated | truncated | done)), so every sampler and
algorithm that reads datasets reads it too. With `num_envs` environments stepped together, env e owns the rows
[e * C, (e + 1) * C), C = capacity // num_envs, so each episode stays contiguous (any-step windows need that) and
`episode_last` is kept up to date while an episode is still running.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from tensordict import TensorDict

from offrl.data.datamodules import TransitionDataModule
from offrl.dataset_info import DatasetInfo, box_bounds, reference_scores
from offrl.errors import OffrlError


def env_info(env_id: str) -> DatasetInfo:
    """What the algorithms need to know about an environment, in the shape a dataset describes itself."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as err:
        raise OffrlError(f"data.env_id {env_id!r} is not a registered Gymnasium env ({err})") from None
    env = gym.make(spec)
    observation_space, action_space = env.observation_space, env.action_space
    env.close()
    if not isinstance(observation_space, gym.spaces.Box) or not isinstance(action_space, gym.spaces.Box):
        raise OffrlError(f"data.env_id {env_id!r} needs Box observation and action spaces for online training")
    ref_min, ref_max = reference_scores(env_id)
    action_low, action_high = box_bounds(action_space)
    return DatasetInfo(
        dataset_id=env_id,
        observation_dim=int(np.prod(observation_space.shape)),
        action_dim=int(np.prod(action_space.shape)),
        goal_dim=0,
        action_low=action_low,
        action_high=action_high,
        env_spec=spec,
        eval_env_spec=spec,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        num_episodes=0,
    )


class ReplayDataModule(TransitionDataModule):
    """Uniform transitions from the env steps taken so far (filled by offrl.callbacks.online.OnlineInteraction)."""

    def __init__(
        self,
        env_id: str,
        batch_size: int = 256,
        steps_per_epoch: int = 5000,
        seed: int = 0,
        capacity: int = 1_000_000,
        num_envs: int = 1,
    ):
        """
        Args:
            env_id: Gymnasium env id to interact with (e.g. Hopper-v5); it also names the run's log folder.
            batch_size: transitions per update.
            steps_per_epoch: updates between two evaluations (one Lightning epoch).
            seed: sampler seed; the interaction callback seeds the env.
            capacity: transitions the buffer holds; interaction stops with an error when it is full.
            num_envs: environments stepped together by the interaction callback.
        """
        super().__init__(env_id, batch_size, steps_per_epoch, seed, env_id=env_id)
        if num_envs < 1 or capacity < num_envs:
            raise OffrlError(f"data.num_envs must be in 1..data.capacity, got num_envs={num_envs}, capacity={capacity}")
        self.num_envs = num_envs
        self.rows_per_env = capacity // num_envs
        self.filled = 0  # rows written per env (every env steps together)
        self.episode_start = [0] * num_envs  # row where each env's current episode began
        self.episode_step = [0] * num_envs
        self.episode_ids = list(range(num_envs))  # id of each env's current episode
        self.next_episode_id = num_envs

    def setup(self, stage: str | None = None) -> None:
        if self.transitions is not None:
            return
        self.info = env_info(self.env_id)
        obs_dim, action_dim, rows = self.info.observation_dim, self.info.action_dim, self.num_envs * self.rows_per_env
        self.transitions = TensorDict(
            {
                "observation": torch.zeros(rows, obs_dim),
                "action": torch.zeros(rows, action_dim),
                "episode": torch.zeros(rows, dtype=torch.long),
                "step": torch.zeros(rows, dtype=torch.long),
                "episode_last": torch.zeros(rows, dtype=torch.long),
                "next": {
                    "observation": torch.zeros(rows, obs_dim),
                    "reward": torch.zeros(rows),
                    "terminated": torch.zeros(rows, dtype=torch.bool),
                    "truncated": torch.zeros(rows, dtype=torch.bool),
                    "done": torch.zeros(rows, dtype=torch.bool),
                },
            },
            batch_size=[rows],
        )
        for env in range(self.num_envs):
            self.episode_start[env] = env * self.rows_per_env

    @property
    def size(self) -> int:
        """Transitions stored so far."""
        return self.filled * self.num_envs

    def filled_indices(self) -> torch.Tensor:
        """Flat row indices of every stored transition, env by env (each env's steps in order)."""
        device = self.transitions.device
        offsets = torch.arange(self.num_envs, device=device) * self.rows_per_env
        return (offsets[:, None] + torch.arange(self.filled, device=device)).flatten()

    def stored(self) -> TensorDict:
        """The stored transitions alone, env by env, with `episode_last` pointing into this compact layout: what a
        model trained on the data so far (any-step windows, hold-out split) reads."""
        stored = self.transitions[self.filled_indices()]
        last = stored["episode_last"]
        stored["episode_last"] = (last // self.rows_per_env) * self.filled + last % self.rows_per_env
        return stored

    def extend(self, step: TensorDict, done: np.ndarray) -> None:
        """Append one step of every env: `step` [num_envs] holds observation, action and ("next", observation |
        reward | terminated | truncated); `done` (host booleans) says which envs' episodes ended with it."""
        if self.filled == self.rows_per_env:
            raise OffrlError(
                f"the replay buffer is full ({self.size} transitions); raise data.capacity or lower trainer.max_steps"
            )
        rows = [env * self.rows_per_env + self.filled for env in range(self.num_envs)]
        device = self.transitions.device
        stored = TensorDict(
            {
                "observation": step["observation"].float(),
                "action": step["action"].float(),
                "episode": torch.tensor(self.episode_ids),
                "step": torch.tensor(self.episode_step),
                "episode_last": torch.tensor(rows),
                "next": {
                    "observation": step["next", "observation"].float(),
                    "reward": step["next", "reward"].reshape(-1).float(),
                    "terminated": step["next", "terminated"].reshape(-1),
                    "truncated": step["next", "truncated"].reshape(-1),
                    "done": step["next", "terminated"].reshape(-1) | step["next", "truncated"].reshape(-1),
                },
            },
            batch_size=[self.num_envs],
        )
        self.transitions[torch.tensor(rows, device=device)] = stored.to(device)
        for env, row in enumerate(rows):
            # The running episode's last row is now this one: every earlier row of it learns that.
            self.transitions["episode_last"][self.episode_start[env] : row + 1] = row
            self.episode_step[env] += 1
            if done[env]:
                self._start_episode(env, row + 1)
        self.filled += 1

    def _start_episode(self, env: int, row: int) -> None:
        """Env `env`'s next step starts a new episode at `row`."""
        self.episode_start[env] = row
        self.episode_step[env] = 0
        self.episode_ids[env] = self.next_episode_id
        self.next_episode_id += 1

    def state_dict(self) -> dict:
        """The sampler state and the stored transitions in the compact layout of `stored()`, so that a resumed
        online run continues from the same data (a different data.capacity is fine if the data still fits)."""
        return super().state_dict() | {
            "stored": self.stored().cpu().to_dict() if self.filled else None,  # plain tensors: weights_only loads
            "filled": self.filled,
            "num_envs": self.num_envs,
            "episode_start": [start - env * self.rows_per_env for env, start in enumerate(self.episode_start)],
            "episode_step": list(self.episode_step),
            "episode_ids": list(self.episode_ids),
            "next_episode_id": self.next_episode_id,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        filled = state_dict.get("filled", 0)
        if not filled:
            return
        if state_dict["num_envs"] != self.num_envs or filled > self.rows_per_env:
            raise OffrlError(
                f"the checkpoint's replay buffer holds {filled} steps of {state_dict['num_envs']} envs, which does not "
                f"fit data.num_envs={self.num_envs}, data.capacity={self.num_envs * self.rows_per_env}; resume with "
                f"data.num_envs={state_dict['num_envs']} and a capacity of at least {filled * state_dict['num_envs']}"
            )
        self.filled = filled
        stored = TensorDict(state_dict["stored"], batch_size=[filled * self.num_envs])
        compact_last = stored["episode_last"]
        stored["episode_last"] = (compact_last // filled) * self.rows_per_env + compact_last % filled
        self.transitions[self.filled_indices()] = stored.to(self.transitions.device)
        self.episode_step = list(state_dict["episode_step"])
        self.episode_ids = list(state_dict["episode_ids"])
        self.next_episode_id = state_dict["next_episode_id"]
        self.episode_start = [env * self.rows_per_env + start for env, start in enumerate(state_dict["episode_start"])]
        # The envs' own state is not in the checkpoint: the resumed run starts new episodes, so each running
        # episode ends here, truncated (its transitions stay valid: none was terminal).
        for env in range(self.num_envs):
            if self.episode_step[env]:
                last = env * self.rows_per_env + filled - 1
                self.transitions["next", "truncated"][last] = True
                self.transitions["next", "done"][last] = True
                self._start_episode(env, last + 1)

    def sample(self, batch_size: int) -> TensorDict:
        if self.filled == 0:
            raise OffrlError(
                "the replay buffer is empty: add offrl.callbacks.online.OnlineInteraction to trainer.callbacks"
            )
        flat = self.random_indices(batch_size, self.size)
        rows = (flat // self.filled) * self.rows_per_env + flat % self.filled
        return self.transitions[rows]
