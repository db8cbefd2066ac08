"""Adroit `expert` datasets, D4RL's recipe: the DAPG expert policies sampled stochastically, here in
Gymnasium-Robotics' `AdroitHand{Pen,Door,Hammer,Relocate}-v1` scored by D4RL's rules.

D4RL ran mjrl's `get_action` (mean + exp(log_std) * N(0, 1)) and clipped the action to [-1, 1]
(d4rl scripts/generation/hand_dapg_policies.py); its reference expert returns were measured the same way.
The v1 environments keep v0's observation layout and its [-1, 1] -> actuator-range action mapping, so the
v0 policies run unchanged. Their rewards and pen episodes are not D4RL's (v1 adds the hand-to-object distance
term of door, hammer and relocate that D4RL subtracts, and runs pen for 200 steps without ending it when the
pen falls), so data are collected through `offrl.envs.d4rl_adroit.D4RLAdroit` with D4RL's episode lengths:
the stored rewards, terminations and the recorded env and eval env specs are D4RL's, as in D4RL's expert files,
and evaluation scores compare with published tables.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from offrl.data.generators import GeneratedDataset, Progress, collect_episodes, return_summary
from offrl.data.policies.dapg import load_dapg_policy
from offrl.envs import d4rl_adroit
from offrl.envs.robotics import robotics_envs
from offrl.dataset_info import D4RL_REFERENCE_SCORES
from offrl.errors import OffrlError
from offrl.paths import policies_dir

TASKS = ("pen", "door", "hammer", "relocate")

# D4RL's pen episodes last 100 steps and its reference returns were measured over 100 steps; v1 registers
# all four tasks with 200, which is D4RL's length for the other three.
EPISODE_STEPS = d4rl_adroit.EPISODE_STEPS

REWARD = "D4RL's (offrl.envs.d4rl_adroit.D4RLAdroit, recorded in the env and eval env specs); pen ends when the pen falls"

SAMPLING = "stochastic: mean + exp(log_std) * N(0, 1), clipped to [-1, 1], as D4RL sampled its expert data"


def env_id(task: str) -> str:
    return f"AdroitHand{task.capitalize()}-v1"


def make_env(task: str) -> gym.Env:
    """The task's v1 env under D4RL's rules (reward, pen's end on a drop, episode length)."""
    robotics_envs()
    return d4rl_adroit.make_d4rl_adroit(env_id(task), max_episode_steps=EPISODE_STEPS[task])


def generate(task: str, *, steps: int | None, episodes: int | None, seed: int, progress: Progress) -> GeneratedDataset:
    """`steps` transitions or `episodes` episodes of the DAPG expert for `task`; the same seed gives the same data."""
    if task not in TASKS:
        raise OffrlError(f"unknown Adroit task {task!r}; choose one of {', '.join(TASKS)}")
    if (steps is None) == (episodes is None):
        raise OffrlError("give either a number of steps or a number of episodes to generate, not both or neither")
    policy_file = f"hand_dapg/{task}-v0.pickle"
    policy = load_dapg_policy(policies_dir() / policy_file)
    env = make_env(task)
    spaces = (env.observation_space.shape, env.action_space.shape)
    if spaces != ((policy.observation_dim,), (policy.action_dim,)):
        raise OffrlError(
            f"{env_id(task)} has observations {spaces[0]} and actions {spaces[1]}, but {policy_file} expects "
            f"({policy.observation_dim},) and ({policy.action_dim},); this gymnasium-robotics changed the Adroit layout"
        )

    rng = np.random.default_rng(seed)  # the policy's action noise; the env draws its own from the reset seed
    buffers, complete_returns = collect_episodes(
        env, lambda observation: policy.act(observation, rng), steps=steps, episodes=episodes, seed=seed, progress=progress
    )
    env.close()

    ref_min, ref_max = D4RL_REFERENCE_SCORES[task]
    return GeneratedDataset(
        episodes=buffers,
        env_spec=env.spec,
        eval_env_spec=env.spec,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name="DAPG expert policy (aravindr93/hand_dapg), sampled stochastically",
        description=(
            f"D4RL-style Adroit {task} expert data: the DAPG expert policy {policy_file} run in {env_id(task)} "
            f"({EPISODE_STEPS[task]}-step episodes) with D4RL's reward, actions {SAMPLING}."
        ),
        metadata={
            "policy_file": policy_file,
            "sampling": SAMPLING,
            "env_id": env_id(task),
            "max_episode_steps": EPISODE_STEPS[task],
            "reward": REWARD,
            **return_summary(complete_returns, ref_min, ref_max),
            "seed": seed,
            # The v1 envs' own rewards changed between releases; D4RLAdroit computes D4RL's whatever the release.
            "gymnasium_robotics_version": robotics_envs().__version__,
        },
    )
