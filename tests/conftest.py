"""Shared fixtures: a private Minari store per test session, one torch thread, small synthetic datasets."""

from __future__ import annotations

import os

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from minari.data_collector import EpisodeBuffer

from offrl.data import minari_io
from offrl.data.generators import GeneratedDataset
from offrl.paths import policies_dir

# Tiny networks are fastest on one thread, and two threads thrash when the machine is shared. Through the
# environment, so every run the tests start (in this process or as a subprocess) takes one thread whatever the
# load: performance.threads auto would follow the load, and tests compare numbers across runs.
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def minari_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("minari")
    patch = pytest.MonkeyPatch()
    patch.setenv("MINARI_DATASETS_PATH", str(path))
    yield path
    patch.undo()


@pytest.fixture
def in_tmp_dir(tmp_path, monkeypatch):
    """Run in a fresh folder so logs/ lands there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def policies():
    """../shared/data/policies; CI has it beside the clone, so a missing folder fails rather than skips."""
    return policies_dir()


def no_progress(steps: int) -> None:
    """A Progress callback for generator calls in tests."""


def random_episodes(lengths: list[int], obs_dim: int, act_dim: int, goal_dim: int = 0, seed: int = 0) -> list[EpisodeBuffer]:
    """Episodes whose observation at step t encodes (episode, t), so tests can check where any row came from."""
    rng = np.random.default_rng(seed)
    episodes = []
    for episode_id, length in enumerate(lengths):
        obs = rng.normal(size=(length + 1, obs_dim)).astype(np.float32)
        obs[:, 0] = episode_id
        obs[:, 1] = np.arange(length + 1)
        observations = obs
        if goal_dim:
            achieved = obs[:, :goal_dim].copy()
            desired = np.repeat(rng.normal(size=(1, goal_dim)).astype(np.float32), length + 1, axis=0)
            observations = {"observation": obs, "achieved_goal": achieved, "desired_goal": desired}
        terminations = np.zeros(length, dtype=bool)
        truncations = np.zeros(length, dtype=bool)
        if episode_id % 2:
            terminations[-1] = True
        else:
            truncations[-1] = True
        episodes.append(
            EpisodeBuffer(
                id=episode_id,
                observations=observations,
                actions=rng.uniform(-1, 1, size=(length, act_dim)).astype(np.float32),
                rewards=rng.normal(size=length),
                terminations=terminations,
                truncations=truncations,
            )
        )
    return episodes


class Reach1D(gym.Env):
    """x in [-2, 2] starts at +-1.5; x' = clip(x + 0.5 a); reward -|x'|. Going to 0 and staying there is optimal
    (return about -1.5 over the 20 steps); uniform random actions get about -26."""

    observation_space = gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = np.array([self.np_random.choice([-1.5, 1.5])], dtype=np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.x = np.clip(self.x + 0.5 * np.asarray(action, dtype=np.float32), -2.0, 2.0).astype(np.float32)
        return self.x.copy(), float(-abs(self.x[0])), False, False, {}


REACH_1D = "OffrlTestReach1D-v0"
# A string entry point: datasets recorded in it store their env spec, which must be serialisable.
gym.register(REACH_1D, entry_point="conftest:Reach1D", max_episode_steps=20)


def write_synthetic(dataset_id: str, lengths: list[int], goal: bool = False, seed: int = 0) -> list[EpisodeBuffer]:
    """A synthetic dataset recorded against Hopper-v5 (11-dim) or PointMaze_UMaze-v3 (4-dim obs, 2-dim goal)."""
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    if goal:
        spec = gym.spec("PointMaze_UMaze-v3")
        episodes = random_episodes(lengths, obs_dim=4, act_dim=2, goal_dim=2, seed=seed)
    else:
        spec = gym.spec("Hopper-v5")
        episodes = random_episodes(lengths, obs_dim=11, act_dim=3, seed=seed)
    minari_io.write_dataset(
        dataset_id,
        GeneratedDataset(
            episodes=episodes,
            env_spec=spec,
            eval_env_spec=spec,
            ref_min_score=0.0,
            ref_max_score=1.0,
            algorithm_name="synthetic",
            description="test data",
            metadata={"kind": "synthetic"},
        ),
    )
    return episodes


def random_policy_success(info, episodes: int) -> float:
    """Success of uniform random actions in the dataset's eval env, from the evaluation callback's seed."""
    from offrl.envs.evaluation import evaluate
    from offrl.envs.factory import make_eval_env

    env = make_eval_env(info, num_envs=10, seed=12345)
    generator = torch.Generator().manual_seed(0)

    def random_act(observation, goal):
        return torch.rand(observation.shape[0], info.action_dim, generator=generator) * 2 - 1

    success = evaluate(random_act, env, info, episodes, torch.device("cpu"))["eval/success"]
    env.close()
    return success


def trainer(max_steps: int, callbacks=(), evaluate: bool | None = None, **options) -> L.Trainer:
    """A quiet CPU trainer (no logger, checkpoints, progress bar or summary). Validation, which runs evaluation
    callbacks, is on when `evaluate` is true (default: when there are callbacks)."""
    evaluate = bool(callbacks) if evaluate is None else evaluate
    quiet = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        num_sanity_val_steps=0,
        limit_val_batches=1 if evaluate else 0,
        callbacks=list(callbacks),
        **(quiet | options),
    )
