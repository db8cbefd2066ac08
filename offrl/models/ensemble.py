"""The probabilistic MLP ensemble of MBPO and MOPO (Janner et al. 2019, Yu et al. 2020; OfflineRL-Kit's and
tianheyu927/mopo's code): one-step models, a random elite per roll-out row, and MOPO's uncertainty, the largest
predicted standard deviation over the members."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from offrl.models.dynamics import join_chunks, rollout_chunk_rows
from offrl.nn.dynamics import LogVarBounds
from offrl.nn.ensemble import EnsembleLinear, ensemble_mlp
from offrl.nn.mlp import Normalizer
from offrl.objectives.dynamics import dynamics_nll, ensemble_penalty, layer_weight_decay


class EnsembleModel(nn.Module):
    """E MLPs (Swish) evaluated as one batched matmul per layer; the E_elite best by hold-out error are the ones
    roll-outs sample from. (s, a) -> mean, log-variance [E, B, obs + 1] of (delta s, r)."""

    max_window = 1

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dims: Sequence[int] = (200, 200, 200, 200),
        num_members: int = 7,
        num_elites: int = 5,
        weight_decay: Sequence[float] | None = None,
    ):
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.num_members, self.num_elites = num_members, num_elites
        self.weight_decay = list(weight_decay) if weight_decay else None  # one per linear layer, input to output
        self.obs_normalizer = Normalizer(obs_dim)
        self.action_normalizer = Normalizer(action_dim)
        self.net = ensemble_mlp(num_members, obs_dim + action_dim, list(hidden_dims), 2 * (obs_dim + 1), activation=nn.SiLU)
        for layer in self.member_layers():  # MOPO/MBPO's init: truncated normal, std 1 / (2 sqrt(fan_in)), zero bias
            std = 1.0 / (2.0 * math.sqrt(layer.weight.shape[1]))
            nn.init.trunc_normal_(layer.weight, std=std, a=-2.0 * std, b=2.0 * std)
            nn.init.zeros_(layer.bias)
        self.bounds = LogVarBounds(obs_dim + 1)
        self.register_buffer("elites", torch.arange(num_elites))

    def member_layers(self) -> list[EnsembleLinear]:
        return [layer for layer in self.net if isinstance(layer, EnsembleLinear)]

    def fit_normalizers(self, observations: torch.Tensor, actions: torch.Tensor) -> None:
        self.obs_normalizer.fit(observations)
        self.action_normalizer.fit(actions)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, obs] or [E, B, obs] (one batch per member) -> mean, log-variance [E, B, obs + 1]."""
        mean, logvar = self.net(torch.cat([self.obs_normalizer(obs), self.action_normalizer(action)], -1)).chunk(2, -1)
        return mean, self.bounds(logvar)

    # -- fitting ----------------------------------------------------------------------------------------

    def window_draw_shape(self, batch_size: int) -> tuple[int, ...]:
        return (self.num_members, batch_size)  # each member trains on its own draws (bootstrap)

    def predict_window(self, start_obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(start_obs, actions[..., 0, :])  # one-step: the window's single action

    def loss(self, mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = dynamics_nll(mean, logvar, target, self.bounds.min_logvar, self.bounds.max_logvar)
        if self.weight_decay:
            loss = loss + layer_weight_decay([layer.weight for layer in self.member_layers()], self.weight_decay)
        return loss

    def member_state_names(self) -> list[str]:
        """The state_dict entries that hold one slice per member (dim 0); the rest (normalisers, log-variance
        bounds, elites) are shared."""
        return [f"net.{i}.{name}" for i, layer in enumerate(self.net) if isinstance(layer, EnsembleLinear) for name in ("weight", "bias")]

    @torch.no_grad()
    def after_fit(self, holdout_scores: torch.Tensor) -> None:
        """Keep the num_elites members with the lowest hold-out error ([E])."""
        self.elites.copy_(holdout_scores.argsort()[: self.num_elites])

    # -- roll-outs --------------------------------------------------------------------------------------

    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute next-state mean and reward mean, and log-variance, of every member: [E, B, obs + 1]."""
        mean, logvar = self(obs, action)
        return torch.cat([mean[..., :-1] + obs, mean[..., -1:]], -1), logvar

    def random_elites(self, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """One elite member index per row [size], uniformly (MOPO's random_inds)."""
        draw = torch.randint(len(self.elites), (size,), generator=generator)
        return self.elites[draw.to(self.elites.device)]

    def start_rollout(self, history_obs: torch.Tensor, history_actions: torch.Tensor, penalized: bool) -> None:
        """A one-step model remembers nothing between roll-out steps."""

    def rollout_step(
        self, memory: None, obs: torch.Tensor, action: torch.Tensor, penalized: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, None]:
        """A random elite's prediction per row; MOPO's penalty takes its maximum over all members. Every member
        predicts for a chunk of rows at a time (`rollout_chunk_rows`)."""
        members = self.random_elites(obs.shape[0])
        predictions = []
        for chunk_obs, chunk_action, member in zip(*(x.split(rollout_chunk_rows(obs)) for x in (obs, action, members))):
            means, logvars = self.predict(chunk_obs, chunk_action)
            rows = torch.arange(chunk_obs.shape[0], device=obs.device)
            predictions.append((means[member, rows], logvars[member, rows], ensemble_penalty(logvars) if penalized else None))
        return *join_chunks(predictions), None
