"""Vectorised ensembles: E independent MLPs evaluated with one batched matmul per layer, no loop over members."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class EnsembleLinear(nn.Module):
    """E independent linear layers: [B, in] (shared input) or [E, B, in] -> [E, B, out]."""

    def __init__(self, num_members: int, in_dim: int, out_dim: int):
        super().__init__()
        # nn.Linear's default initialisation, U(-1/sqrt(in), 1/sqrt(in)), drawn independently per member.
        bound = 1.0 / math.sqrt(in_dim)
        self.weight = nn.Parameter(torch.empty(num_members, in_dim, out_dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num_members, 1, out_dim).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # baddbmm starts the matmul from the bias: one kernel, no [E, B, out] product to add it to afterwards.
        if x.dim() == 2:
            x = x.expand(self.weight.shape[0], *x.shape)
        return torch.baddbmm(self.bias, x, self.weight)

    def member_forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """Member `member` alone: [B, in] -> [B, out]."""
        return torch.addmm(self.bias[member], x, self.weight[member])


class EnsembleLayerNorm(nn.Module):
    """LayerNorm over the last dimension with a separate affine transform per member ([E, B, dim])."""

    def __init__(self, num_members: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(num_members, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias

    def member_forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        """Member `member` alone: [B, dim] -> [B, dim]."""
        return F.layer_norm(x, x.shape[-1:]) * self.weight[member] + self.bias[member]


def ensemble_mlp(
    num_members: int,
    in_dim: int,
    hidden_dims: Sequence[int],
    out_dim: int,
    layer_norm: bool = False,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """The ensemble counterpart of offrl.nn.mlp.mlp: [B, in] -> [E, B, out]."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_dims:
        layers.append(EnsembleLinear(num_members, width, hidden))
        if layer_norm:
            layers.append(EnsembleLayerNorm(num_members, hidden))
        layers.append(activation())
        width = hidden
    layers.append(EnsembleLinear(num_members, width, out_dim))
    return nn.Sequential(*layers)


def ensemble_member_forward(ensemble: nn.Sequential, x: torch.Tensor, member: int) -> torch.Tensor:
    """One member of an `ensemble_mlp` on its own: [B, in] -> [B, out], the member's slice of the whole ensemble's
    output (and of its gradients) at 1/E of the cost."""
    for layer in ensemble:
        x = layer.member_forward(x, member) if isinstance(layer, (EnsembleLinear, EnsembleLayerNorm)) else layer(x)
    return x
