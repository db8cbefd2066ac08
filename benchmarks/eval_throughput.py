"""Environment steps per second of evaluation (offrl.envs.evaluate) with 1, 10 and 100 envs stepped together,
SerialEnv (one process) against ParallelEnv (a worker process per env). The last stdout line is JSON.

    python benchmarks/eval_throughput.py [--env PointMaze_UMaze-v3] [--num-envs 1 10 100] [--backends serial parallel]
        [--episodes-per-env 1] [--device cpu]

The policy is a paper-size BC network (MLP 256x2, untrained) called once per step on the batch of observations,
so the figure includes the batched policy call as evaluation runs it. Env creation is not timed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import gymnasium as gym
import torch

from offrl.dataset_info import DatasetInfo
from offrl.envs.evaluation import evaluate
from offrl.envs.factory import make_eval_env
from offrl.envs.robotics import robotics_envs
from offrl.nn.mlp import mlp


def info_for(env_id: str) -> DatasetInfo:
    """The DatasetInfo evaluation reads, for an env without a dataset."""
    robotics_envs()
    spec = gym.spec(env_id)
    env = gym.make(spec)
    space = env.observation_space
    goal = isinstance(space, gym.spaces.Dict)
    observation_dim = (space["observation"] if goal else space).shape[0]
    action = env.action_space
    env.close()
    return DatasetInfo(
        dataset_id=f"benchmark/{env_id}",
        observation_dim=observation_dim,
        action_dim=action.shape[0],
        goal_dim=space["desired_goal"].shape[0] if goal else 0,
        action_low=action.low.tolist(),
        action_high=action.high.tolist(),
        env_spec=spec,
        eval_env_spec=spec,
        ref_min_score=None,
        ref_max_score=None,
        num_episodes=0,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--env", default="PointMaze_UMaze-v3")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--backends", nargs="+", choices=("serial", "parallel"), default=["serial", "parallel"])
    parser.add_argument("--max-parallel", type=int, default=16, help="skip ParallelEnv above this many envs (one process each)")
    parser.add_argument("--episodes-per-env", type=int, default=1)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = info_for(args.env)
    torch.manual_seed(0)
    policy = mlp(info.observation_dim + info.goal_dim, [256, 256], info.action_dim).to(device)

    def act(observation: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(policy(observation if goal is None else torch.cat([observation, goal], -1)))

    results = []
    for backend in args.backends:
        for num_envs in args.num_envs:
            if backend == "parallel" and num_envs > args.max_parallel:
                results.append({"backend": backend, "num_envs": num_envs, "skipped": f"more than --max-parallel {args.max_parallel} processes"})
                continue
            env = make_eval_env(info, num_envs, seed=0, parallel=backend == "parallel")
            episodes = num_envs * args.episodes_per_env
            evaluate(act, env, info, num_envs, device)  # warm-up: starts workers, first resets
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            metrics = evaluate(act, env, info, episodes, device)
            wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
            env.close()
            steps = episodes * info.eval_env_spec.max_episode_steps  # evaluate steps every env to the time limit
            row = {
                "backend": backend,
                "num_envs": num_envs,
                "env_steps": steps,
                "env_steps_per_s": round(steps / wall, 1),
                "main_process_cpu_s": round(cpu, 2),
                "action_latency_ms": round(metrics["perf/action_latency_ms"], 3),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "env": args.env,
                "device": args.device,
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "load_average": round(os.getloadavg()[0], 2),
                "torch": torch.__version__,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
