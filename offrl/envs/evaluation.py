"""Batched evaluation roll-outs: returns, normalised scores, goal success and action latency."""

from __future__ import annotations

import time
from typing import Callable

import torch
from tensordict import TensorDictBase
from torchrl.envs import EnvBase

from offrl.dataset_info import DatasetInfo

# act(observation, goal | None) -> action, all float32 tensors on the policy's device.
ActFn = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]


class TimedPolicy:
    """Adapts `act` to TorchRL's rollout (a callable on TensorDicts) and times every call."""

    def __init__(self, act: ActFn, device: torch.device, goal_conditioned: bool):
        self.act, self.device, self.goal_conditioned = act, device, goal_conditioned
        self.seconds, self.calls = 0.0, 0

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        start = time.perf_counter()
        observation = td["observation"].to(self.device, torch.float32)
        goal = td["desired_goal"].to(self.device, torch.float32) if self.goal_conditioned else None
        with torch.no_grad():
            action = self.act(observation, goal)
        td["action"] = action.to(td.device or "cpu", torch.float32)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return td


def first_episode_mask(done: torch.Tensor) -> torch.Tensor:
    """True on every step up to and including each env's first `done` ([envs, steps])."""
    done = done.long()
    return (done.cumsum(-1) - done) == 0


def evaluate(
    act: ActFn,
    env: EnvBase,
    info: DatasetInfo,
    num_episodes: int,
    device: torch.device,
    success_threshold: float = 0.45,
) -> dict[str, float]:
    """Run `num_episodes` episodes (batched across the env's copies) and average their metrics."""
    max_steps = info.eval_env_spec.max_episode_steps or 1000
    policy = TimedPolicy(act, device, info.is_goal_conditioned)
    returns, successes = [], []
    while len(returns) * env.batch_size[0] < num_episodes:
        rollout = env.rollout(max_steps, policy=policy, break_when_any_done=False, auto_reset=True)
        alive = first_episode_mask(rollout["next", "done"].squeeze(-1))
        returns.append((rollout["next", "reward"].squeeze(-1) * alive).sum(-1))
        if info.is_goal_conditioned:
            distance = (rollout["next", "achieved_goal"] - rollout["next", "desired_goal"]).norm(dim=-1)
            successes.append(((distance <= success_threshold) & alive).any(-1).float())
    episode_returns = torch.cat(returns)[:num_episodes].double()
    metrics = {"eval/return": episode_returns.mean().item()}
    normalized = info.normalized_score(episode_returns)
    if normalized is not None:
        metrics["eval/normalized_score"] = normalized.mean().item()
    if successes:
        metrics["eval/success"] = torch.cat(successes)[:num_episodes].mean().item()
    metrics["perf/action_latency_ms"] = 1000.0 * policy.seconds / max(policy.calls, 1)
    return metrics
