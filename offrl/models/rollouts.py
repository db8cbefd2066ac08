"""Roll-outs of a policy in a learned model, and the buffer of model transitions SAC samples from."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict

from offrl.models.dynamics import DynamicsModel

SAC_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"), ("next", "terminated"))


@torch.no_grad()
def rollout(
    model: DynamicsModel,
    policy: Callable[[torch.Tensor], torch.Tensor],
    history_obs: torch.Tensor,
    history_actions: torch.Tensor,
    observation: torch.Tensor,
    horizon: int,
    terminated_fn: Callable[[torch.Tensor], torch.Tensor],
    penalty_coef: float | None,
) -> TensorDict:
    """Roll the policy out in the model for `horizon` steps from `observation` [N, obs], after the real history
    s, a [N, h, *] (h = max_window - 1; 0 for a one-step model). Returns the transitions of rows still alive (not
    yet terminated), flattened to [n]. With a `penalty_coef` (offline), each carries its `penalty` and the reward
    r - penalty_coef * penalty; with None (online) the roll-out is unpenalised."""
    was_training = model.training
    model.eval()
    steps = []
    alive = torch.ones(observation.shape[0], dtype=torch.bool, device=observation.device)
    penalized = penalty_coef is not None
    memory = model.start_rollout(history_obs, history_actions, penalized)
    for _ in range(horizon):
        action = policy(observation)
        mean, logvar, penalty, memory = model.rollout_step(memory, observation, action, penalized)
        sample = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        next_obs, reward = sample[:, :-1], sample[:, -1]
        terminated = terminated_fn(next_obs)
        step = TensorDict(
            {
                "observation": observation,
                "action": action,
                "alive": alive,
                "next": {"observation": next_obs, "reward": reward, "terminated": terminated},
            },
            batch_size=[observation.shape[0]],
        )
        if penalty is not None:
            step["penalty"] = penalty
            step["next", "reward"] = reward - penalty_coef * penalty
        steps.append(step)
        alive = alive & ~terminated
        observation = next_obs
    model.train(was_training)
    out = torch.stack(steps, 1).reshape(-1)
    return out[out["alive"]].exclude("alive")


class ModelBuffer:
    """A ring buffer of model transitions on the training device, holding the last `capacity` rows."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.position = capacity, 0, 0
        self.data: TensorDict | None = None

    def add(self, rows: TensorDict) -> None:
        rows = rows.select(*SAC_KEYS)[-self.capacity :]
        if self.data is None:
            self.data = torch.zeros_like(rows[:1]).expand(self.capacity).clone()
        index = (self.position + torch.arange(len(rows), device=rows.device)) % self.capacity
        self.data[index] = rows
        self.position = (self.position + len(rows)) % self.capacity
        self.size = min(self.size + len(rows), self.capacity)

    def to(self, device: torch.device) -> None:
        # A checkpoint is restored before Lightning moves the module to its device.
        if self.data is not None and self.data.device != device:
            self.data = self.data.to(device)

    def sample(self, batch_size: int) -> TensorDict:
        return self.data[torch.randint(self.size, (batch_size,), device=self.data.device)]

    def state_dict(self) -> dict[str, Any]:
        # Plain tensors, so that checkpoints load with torch.load(weights_only=True).
        data = None if self.data is None else self.data[: self.size].cpu().to_dict()
        return {"data": data, "size": self.size, "position": self.position}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.size, self.position, self.data = 0, 0, None
        if state["data"] is not None:
            self.add(TensorDict(state["data"], batch_size=[state["size"]]).to(device))
            self.position = state["position"]
