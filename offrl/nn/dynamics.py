"""Learned dynamics models: the any-step GRU model of ADM (arXiv 2405.17031) and MOPO's MLP ensemble.

Both predict a Gaussian over (delta s, r) with a log-variance soft-clamped between learned bounds, and both
normalise their inputs with statistics fixed from the dataset (buffers, so checkpoints carry them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from offrl.nn.ensemble import EnsembleLinear, ensemble_mlp
from offrl.nn.mlp import Normalizer


def soft_clamp(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Clamp into (low, high) with softplus edges, so gradients reach x and the learned bounds."""
    x = high - F.softplus(high - x)
    return low + F.softplus(x - low)


class ResidualBlock(nn.Module):
    """LayerNorm(x + Dropout(Swish(Linear(x)))): ADM's output block."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(F.silu(self.linear(x))))


class LogVarBounds(nn.Module):
    """Learned log-variance bounds, initialised at (min_init, max_init), shared by the model kinds."""

    def __init__(self, dim: int, min_init: float = -10.0, max_init: float = 0.5):
        super().__init__()
        self.min_logvar = nn.Parameter(torch.full((dim,), min_init))
        self.max_logvar = nn.Parameter(torch.full((dim,), max_init))

    def forward(self, logvar: torch.Tensor) -> torch.Tensor:
        return soft_clamp(logvar, self.min_logvar, self.max_logvar)


class AnyStepDynamics(nn.Module):
    """ADM: from s_{t-k+1} and the k actions a_{t-k+1..t}, a Gaussian over (s_{t+1} - s_{t-k+1}, r_t).

    Every GRU step sees concat(norm(s_{t-k+1}), norm(a_i)): the start state repeated beside each action.
    The GRU's last output goes through residual blocks to the mean and log-variance.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden_dim: int = 200,
        gru_layers: int = 3,
        residual_blocks: int = 4,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.obs_normalizer = Normalizer(obs_dim)
        self.action_normalizer = Normalizer(action_dim)
        self.gru = nn.GRU(obs_dim + action_dim, hidden_dim, gru_layers, batch_first=True)
        self.head = nn.Sequential(
            *[ResidualBlock(hidden_dim, dropout) for _ in range(residual_blocks)], nn.Linear(hidden_dim, 2 * (obs_dim + 1))
        )
        self.bounds = LogVarBounds(obs_dim + 1)

    def fit_normalizers(self, observations: torch.Tensor, actions: torch.Tensor) -> None:
        self.obs_normalizer.fit(observations)
        self.action_normalizer.fit(actions)

    def forward(self, start_obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """start_obs [B, obs], actions [B, k, act] -> mean, log-variance [B, obs + 1] of (delta s, r)."""
        obs = self.obs_normalizer(start_obs)[:, None].expand(-1, actions.shape[1], -1)
        output, _ = self.gru(torch.cat([obs, self.action_normalizer(actions)], -1))
        mean, logvar = self.head(output[:, -1]).chunk(2, -1)
        return mean, self.bounds(logvar)

    def predict_from_history(
        self, observations: torch.Tensor, actions: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """From histories s_{..t} [B, L, obs] and a_{..t} [B, L, act] (aligned), the k-step prediction of
        (s_{t+1}, r_t): absolute next-state mean and log-variance [B, obs + 1]."""
        start = observations[:, -k]
        mean, logvar = self(start, actions[:, -k:])
        return torch.cat([mean[:, :-1] + start, mean[:, -1:]], -1), logvar


    def predict_every_k(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """predict_from_history for every k in 1..L at once: one GRU pass over the L windows, right-padded and
        packed. observations, actions [B, L, *] -> absolute means, log-variances [L, B, obs + 1] (row k-1: k)."""
        batch, length = observations.shape[:2]
        device = observations.device
        k = torch.arange(1, length + 1, device=device)
        starts = observations[:, length - k].transpose(0, 1)  # [K, B, obs]: s_{t-k+1}
        positions = ((length - k)[:, None] + torch.arange(length, device=device)).clamp_max(length - 1)  # [K, L]
        window_actions = actions[:, positions].transpose(0, 1)  # [K, B, L, act]; steps past k are padding
        x = torch.cat(
            [self.obs_normalizer(starts)[:, :, None].expand(-1, -1, length, -1), self.action_normalizer(window_actions)], -1
        )
        lengths = torch.arange(1, length + 1).repeat_interleave(batch)  # host tensor, as packing requires
        packed = nn.utils.rnn.pack_padded_sequence(x.flatten(0, 1), lengths, batch_first=True, enforce_sorted=False)
        _, last_hidden = self.gru(packed)  # the top layer's state after each window's own last step
        mean, logvar = self.head(last_hidden[-1]).view(length, batch, -1).chunk(2, -1)
        return torch.cat([mean[..., :-1] + starts, mean[..., -1:]], -1), self.bounds(logvar)


class EnsembleDynamics(nn.Module):
    """MOPO's model: E MLPs (Swish) evaluated as one batched matmul per layer; the E_elite best by hold-out
    error are the ones roll-outs sample from. (s, a) -> mean, log-variance [E, B, obs + 1] of (delta s, r)."""

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

    def member_state_names(self) -> list[str]:
        """The state_dict entries that hold one slice per member (dim 0); the rest (normalisers, log-variance
        bounds, elites) are shared."""
        return [f"net.{i}.{name}" for i, layer in enumerate(self.net) if isinstance(layer, EnsembleLinear) for name in ("weight", "bias")]

    def fit_normalizers(self, observations: torch.Tensor, actions: torch.Tensor) -> None:
        self.obs_normalizer.fit(observations)
        self.action_normalizer.fit(actions)

    def decayed_weights(self) -> list[torch.Tensor]:
        """The weights the training loss's per-layer decay applies to (objectives.dynamics.layer_weight_decay)."""
        return [layer.weight for layer in self.member_layers()]

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [B, obs] or [E, B, obs] (one batch per member) -> mean, log-variance [E, B, obs + 1]."""
        mean, logvar = self.net(torch.cat([self.obs_normalizer(obs), self.action_normalizer(action)], -1)).chunk(2, -1)
        return mean, self.bounds(logvar)

    def predict(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Absolute next-state mean and reward mean, and log-variance, of every member: [E, B, obs + 1]. Samples
        come from the elites (`random_elites`); MOPO's penalty takes its maximum over all members."""
        mean, logvar = self(obs, action)
        return torch.cat([mean[..., :-1] + obs, mean[..., -1:]], -1), logvar

    def random_elites(self, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """One elite member index per row [size], uniformly (MOPO's random_inds)."""
        draw = torch.randint(len(self.elites), (size,), generator=generator)
        return self.elites[draw.to(self.elites.device)]

    @torch.no_grad()
    def select_elites(self, holdout_errors: torch.Tensor) -> None:
        """Keep the num_elites members with the lowest hold-out error ([E])."""
        self.elites.copy_(holdout_errors.argsort()[: self.num_elites])
