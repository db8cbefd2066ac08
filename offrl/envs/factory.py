"""TorchRL environments for evaluation, built from the env spec a dataset recorded."""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec
from torchrl.envs import EnvBase, ParallelEnv, SerialEnv
from torchrl.envs.libs.gym import GymWrapper

from offrl.dataset_info import DatasetInfo
from offrl.envs.robotics import robotics_envs
from offrl.errors import OffrlError


def _make_one(spec: EnvSpec) -> GymWrapper:
    robotics_envs()
    return GymWrapper(gym.make(spec))


def make_eval_env(info: DatasetInfo, num_envs: int, seed: int, parallel: bool = False) -> EnvBase:
    """`num_envs` copies of the dataset's evaluation env stepped as one batched TorchRL env: in this process one
    after the other (SerialEnv), or each in its own worker process (ParallelEnv; pays off only for envs slower
    to step than the inter-process exchange, see benchmarks/eval_throughput.py)."""
    spec = info.eval_env_spec
    if spec is None:
        raise OffrlError(
            f"dataset {info.dataset_id} recorded no environment, so it cannot be evaluated; "
            "pass --data.env_id GYM_ENV_ID, or train without evaluation with --trainer.limit_val_batches 0"
        )
    robotics_envs()
    try:
        gym.make(spec).close()  # fail here, in one sentence, rather than inside a worker
    except gym.error.Error as err:
        raise OffrlError(f"the evaluation env {spec.id} of {info.dataset_id} cannot be made ({err}); pass --data.env_id") from None
    batched = ParallelEnv if parallel else SerialEnv
    env = batched(num_envs, _make_one, create_env_kwargs={"spec": spec})
    env.set_seed(seed)
    return env
