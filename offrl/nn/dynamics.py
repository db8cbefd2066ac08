"""Building blocks of the dynamics models in offrl.models: a Gaussian head's log-variance soft-clamped between
learned bounds, and ADM's residual output block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
