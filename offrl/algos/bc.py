"""Behaviour cloning, plain or goal-conditioned: maximise log pi(a | s[, g]) on the dataset's actions."""

from __future__ import annotations

from typing import Sequence

import torch
from tensordict import TensorDict

from offrl.algos.base import OfflineAlgorithm
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError
from offrl.nn.action_bounds import clamp_action, register_action_bounds
from offrl.nn.mlp import GaussianMLP, Normalizer, mlp
from offrl.nn.optim import adam
from offrl.objectives.bc import gaussian_nll, mse

POLICY_KINDS = ("gaussian", "deterministic")


class BC(OfflineAlgorithm):
    algorithm_name = "bc"
    progress_bar_loss = "bc_loss"

    def __init__(
        self,
        hidden_dims: Sequence[int] = (256, 256),
        lr: float = 3e-4,
        policy: str = "gaussian",
        layer_norm: bool = False,
        normalize_observations: bool = True,
    ):
        """
        Args:
            hidden_dims: widths of the policy MLP.
            lr: Adam learning rate.
            policy: "gaussian" (NLL with a learned state-independent std) or "deterministic" (MSE).
            layer_norm: LayerNorm after every hidden layer.
            normalize_observations: z-score observations (and goals) with dataset statistics.
        """
        super().__init__()
        if lr <= 0:
            raise OffrlError(f"model.lr must be positive, got {lr}")
        if policy not in POLICY_KINDS:
            raise OffrlError(f"model.policy must be one of {POLICY_KINDS}, got {policy!r}")
        self.save_hyperparameters()

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        goal_dim = self.goal_dim()
        in_dim = info.observation_dim + goal_dim
        hidden, layer_norm = list(self.hparams.hidden_dims), self.hparams.layer_norm
        if self.hparams.policy == "gaussian":
            self.policy = GaussianMLP(in_dim, hidden, info.action_dim, layer_norm)
        else:
            self.policy = mlp(in_dim, hidden, info.action_dim, layer_norm)
        self.input_normalizer = Normalizer(in_dim)
        if self.hparams.normalize_observations:
            inputs = [transitions["observation"]]
            if goal_dim:
                inputs.append(transitions[self.datamodule.goal_key])
            self.input_normalizer.fit(torch.cat(inputs, -1))
        register_action_bounds(self, info.action_low, info.action_high)

    def policy_inputs(self, observation: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        x = observation if goal is None else torch.cat([observation, goal], -1)
        return self.input_normalizer(x)

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        x = self.policy_inputs(batch["observation"], batch.get("goal"))
        if self.hparams.policy == "gaussian":
            mean, log_std = self.policy(x)
            return {"bc_loss": gaussian_nll(mean, log_std, batch["action"])}
        return {"bc_loss": mse(self.policy(x), batch["action"])}

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        out = self.policy(self.policy_inputs(observation, goal))
        mean = out[0] if self.hparams.policy == "gaussian" else out
        return clamp_action(mean, self.action_low, self.action_high)

    def configure_optimizers(self):
        return adam(self.parameters(), lr=self.hparams.lr)
