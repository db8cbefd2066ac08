"""Trains one d3rlpy algorithm on an exported offrl dataset and prints one JSON line: updates/s (wall, over
`fit` alone), this process's CPU seconds in `fit`, and the normalised score of the trained policy.

Runs in d3rlpy's own venv (d3rlpy 2.8.1 pins gymnasium 1.0, which offrl's venv does not have); the driver,
d3rlpy_vs_offrl.py, starts it. By hand:

    .venv-d3rlpy/bin/python benchmarks/peers/d3rlpy_worker.py --npz data.npz --algo iql --updates 20000
"""

from __future__ import annotations

import argparse
import json
import time

import d3rlpy
import gymnasium as gym
import numpy as np
import torch


def make_algo(name: str, normalize_rewards: bool, seed: int):
    """The same settings as offrl's configs/{iql,td3bc,bc}/hopper-medium.yaml: 256x2 networks, batch 256, lr 3e-4,
    observations standardised; IQL's rewards x 1000 / return range and the actor's cosine over 1M updates."""
    scaler = d3rlpy.preprocessing.StandardObservationScaler()
    if name == "iql":
        reward_scaler = d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0) if normalize_rewards else None
        cosine = d3rlpy.optimizers.AdamFactory(lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=1_000_000))
        config = d3rlpy.algos.IQLConfig(
            batch_size=256, actor_learning_rate=3e-4, critic_learning_rate=3e-4, expectile=0.7, weight_temp=3.0,
            max_weight=100.0, gamma=0.99, tau=0.005, observation_scaler=scaler, reward_scaler=reward_scaler,
            actor_optim_factory=cosine,
        )
    elif name == "td3bc":
        config = d3rlpy.algos.TD3PlusBCConfig(
            batch_size=256, actor_learning_rate=3e-4, critic_learning_rate=3e-4, alpha=2.5, target_smoothing_sigma=0.2,
            target_smoothing_clip=0.5, update_actor_interval=2, gamma=0.99, tau=0.005, observation_scaler=scaler,
        )
    elif name == "bc":
        config = d3rlpy.algos.BCConfig(batch_size=256, learning_rate=3e-4, policy_type="deterministic", observation_scaler=scaler)
    else:
        raise SystemExit(f"unknown algorithm {name}")
    d3rlpy.seed(seed)
    return config.create(device="cpu:0")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--npz", required=True)
    parser.add_argument("--algo", required=True, choices=("iql", "td3bc", "bc"))
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = np.load(args.npz)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=data["observations"], actions=data["actions"], rewards=data["rewards"],
        terminals=data["terminals"], timeouts=data["timeouts"],
    )
    algo = make_algo(args.algo, bool(data["normalize_rewards"]), args.seed)
    algo.build_with_dataset(dataset)
    wall, cpu = time.perf_counter(), time.process_time()
    algo.fit(
        dataset, n_steps=args.updates, n_steps_per_epoch=args.updates, show_progress=False, save_interval=10**9,
        logger_adapter=d3rlpy.logging.NoopAdapterFactory(),
    )
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    env = gym.make(str(data["env_id"]), **json.loads(str(data["env_kwargs"])))
    env.reset(seed=args.seed + 1)
    mean_return = d3rlpy.metrics.evaluate_qlearning_with_environment(algo, env, n_trials=args.eval_episodes)
    low, high = float(data["ref_min"]), float(data["ref_max"])
    print(json.dumps({
        "library": f"d3rlpy {d3rlpy.__version__}", "algo": args.algo, "updates": args.updates,
        "updates_per_s": round(args.updates / wall, 2), "updates_per_cpu_s": round(args.updates / cpu, 2),
        "train_seconds": round(wall, 1), "return": round(mean_return, 1),
        "normalized_score": round(100 * (mean_return - low) / (high - low), 1), "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
