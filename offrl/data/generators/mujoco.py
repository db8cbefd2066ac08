"""MuJoCo locomotion datasets in the D4RL recipe: random, medium, expert and medium-expert roll-outs.

Gymnasium's v5 environments stand in for D4RL's v2 (mujoco-py) ones; the behaviour policies are the ones kept in
../shared/data/policies (see its SOURCES.md), sampled stochastically as D4RL sampled its SAC policies.
"""

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from minari.data_collector import EpisodeBuffer

from offrl.data.generators import GeneratedDataset, Progress, collect_episodes, return_summary
from offrl.data.policies.d4rl import load_d4rl_policy
from offrl.data.policies.rl_zoo import load_rl_zoo_policy
from offrl.data.policies.tanh_gaussian import TanhGaussianPolicy
from offrl.dataset_info import D4RL_REFERENCE_SCORES
from offrl.errors import OffrlError
from offrl.paths import policies_dir

ENV_IDS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5"}


@dataclass(frozen=True)
class Behaviour:
    """How actions are chosen: a policy file sampled stochastically (+ Gaussian noise), or uniform when None."""

    policy_file: str | None  # relative to offrl.paths.policies_dir()
    noise_std: float = 0.0

    @property
    def sampling(self) -> str:
        return "uniform" if self.policy_file is None else "tanh-gaussian sample"

    def describe(self) -> str:
        if self.policy_file is None:
            return "uniformly random actions"
        noise = f" + N(0, {self.noise_std}^2) action noise" if self.noise_std else ""
        return f"{self.policy_file}, sampled stochastically{noise}"


RANDOM = Behaviour(policy_file=None)

# The best policy available per env, by mean normalised return when sampled stochastically on Gymnasium v5.
# Measured with this generator (seed 0, 20 episodes): hopper 103.6, halfcheetah 99.3, walker2d 92.0. The runners-up
# (10 episodes each): hopper SAC 55.8; halfcheetah TQC 94.3; walker2d SAC 87.1, D4RL _10 85.9.
EXPERT = {
    "hopper": Behaviour("rl_zoo/tqc/Hopper-v3_1/Hopper-v3.zip"),
    "halfcheetah": Behaviour("d4rl_deep_ope/halfcheetah_online_10.pkl"),
    "walker2d": Behaviour("rl_zoo/tqc/Walker2d-v3_1/Walker2d-v3.zip"),
}

# Chosen so the mean normalised return lands in D4RL's medium band (hopper 45-60, halfcheetah 40-45,
# walker2d 60-80), stochastic sampling first and extra noise only where that was not enough. Each line gives the
# mean normalised return (standard error) measured with this generator, seed 0.
MEDIUM = {
    # 49.7 (1.7), 200 episodes. D4RL _5 sampled gives 39 and noise only lowers it; this one is bimodal (33-114).
    "hopper": Behaviour("rl_zoo/sac/Hopper-v3_1/Hopper-v3.zip"),
    # 42.3 (0.4), 50 episodes. Sampled alone it gives 76; noise 0.35 gave 44.1, 0.4 gave 39.5 (20 episodes each).
    "halfcheetah": Behaviour("d4rl_deep_ope/halfcheetah_online_5.pkl", noise_std=0.375),
    # 74.9 (0.2), 50 episodes.
    "walker2d": Behaviour("d4rl_deep_ope/walker_online_5.pkl"),
}


def generate(
    env: str, level: str, *, steps: int | None, episodes: int | None, seed: int, progress: Progress
) -> GeneratedDataset:
    """One of D4RL's MuJoCo datasets for env in ENV_IDS and level in random, medium, expert, medium-expert.

    The budget is `steps` environment steps (the last episode is cut, and marked truncated, when it runs out)
    or `episodes` whole episodes. medium-expert is medium roll-outs followed by expert ones, half the budget each.
    """
    if env not in ENV_IDS:
        raise OffrlError(f"unknown MuJoCo env {env!r}; choose one of {', '.join(ENV_IDS)}")
    if (steps is None) == (episodes is None):
        raise OffrlError("give exactly one of steps and episodes")
    levels = {"random": [RANDOM], "medium": [MEDIUM[env]], "expert": [EXPERT[env]]}
    levels["medium-expert"] = levels["medium"] + levels["expert"]
    if level not in levels:
        raise OffrlError(f"unknown MuJoCo level {level!r}; choose one of {', '.join(levels)}")
    parts = levels[level]

    env_id = ENV_IDS[env]
    ref_min, ref_max = D4RL_REFERENCE_SCORES[env]
    budget = steps if steps is not None else episodes
    # Half the budget per part (the first takes the odd one); an independent seed per part, so that the expert
    # half of medium-expert does not replay the medium half's initial states.
    part_budgets = [budget // len(parts) + (i < budget % len(parts)) for i in range(len(parts))]
    part_seeds = [int(s) for s in np.random.SeedSequence(seed).generate_state(len(parts))]

    all_episodes: list[EpisodeBuffer] = []
    all_returns: list[float] = []
    part_facts: list[dict[str, Any]] = []
    for behaviour, part_budget, part_seed in zip(parts, part_budgets, part_seeds):
        collected, returns = _collect(
            env_id,
            behaviour,
            steps=part_budget if steps is not None else None,
            episodes=part_budget if episodes is not None else None,
            seed=part_seed,
            first_id=len(all_episodes),
            progress=progress,
        )
        all_episodes += collected
        all_returns += returns
        part_facts.append(
            {
                "policy_file": behaviour.policy_file,
                "noise_std": behaviour.noise_std,
                "sampling": behaviour.sampling,
                "seed": part_seed,
                "episodes": len(collected),
                "steps": sum(len(episode) for episode in collected),
                **return_summary(returns, ref_min, ref_max),
            }
        )

    described = "; then ".join(behaviour.describe() for behaviour in parts)
    return mujoco_dataset(env, level, all_episodes, all_returns, described, seed, parts=part_facts)


def mujoco_dataset(
    env: str, level: str, collected: list, returns: list[float], described: str, seed: int, **facts: Any
) -> GeneratedDataset:
    """A D4RL-style MuJoCo dataset of the `collected` episodes in ENV_IDS[env], scored with D4RL's reference returns;
    `facts` (how it was collected) go into the metadata beside the return summary."""
    env_id = ENV_IDS[env]
    ref_min, ref_max = D4RL_REFERENCE_SCORES[env]
    spec = gym.spec(env_id)
    return GeneratedDataset(
        episodes=collected,
        env_spec=spec,
        eval_env_spec=spec,
        ref_min_score=ref_min,
        ref_max_score=ref_max,
        algorithm_name=described,
        description=f"D4RL-style {env} {level} data collected in Gymnasium {env_id}: {described}.",
        metadata={"env_id": env_id, "level": level, "seed": seed, **facts, **return_summary(returns, ref_min, ref_max)},
    )


def _collect(
    env_id: str,
    behaviour: Behaviour,
    *,
    steps: int | None,
    episodes: int | None,
    seed: int,
    first_id: int,
    progress: Progress,
) -> tuple[list[EpisodeBuffer], list[float]]:
    """Roll `behaviour` out for `steps` steps or `episodes` episodes -> (episodes, returns of the uncut ones)."""
    env = gym.make(env_id)
    rng = np.random.default_rng(seed)
    policy = None if behaviour.policy_file is None else _load_policy(behaviour.policy_file)
    sizes = (env.observation_space.shape[0], env.action_space.shape[0])
    if policy is not None and (policy.observation_dim, policy.action_dim) != sizes:
        raise OffrlError(f"policy {behaviour.policy_file} does not fit {env_id}'s observation and action sizes")
    low, high = env.action_space.low, env.action_space.high


    def act(observation: np.ndarray) -> np.ndarray:
        if policy is None:
            return rng.uniform(low, high).astype(np.float32)
        return policy.act(observation, rng, behaviour.noise_std)

    collected, complete_returns = collect_episodes(
        env, act, steps=steps, episodes=episodes, seed=seed, progress=progress, first_id=first_id
    )
    env.close()
    return collected, complete_returns


def _load_policy(policy_file: str) -> TanhGaussianPolicy:
    path = policies_dir() / policy_file
    return load_d4rl_policy(path) if path.suffix == ".pkl" else load_rl_zoo_policy(path)
