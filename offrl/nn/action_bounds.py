"""The env's action box [low, high] on an algorithm: its buffers, the clamp, and the affine map to and from the
unit box [-1, 1] that tanh actors and SAC's critics work in. Every algorithm that acts uses these four."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def register_action_bounds(module: nn.Module, low: Sequence[float] | torch.Tensor, high: Sequence[float] | torch.Tensor) -> None:
    """`module.action_low` and `module.action_high`: float32 buffers, so they move with the module and are saved."""
    module.register_buffer("action_low", torch.as_tensor(low, dtype=torch.float32).clone())
    module.register_buffer("action_high", torch.as_tensor(high, dtype=torch.float32).clone())


def clamp_action(action: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return torch.clamp(action, low, high)


def from_unit_box(unit_action: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [low, high]; exact when the box is [-1, 1]."""
    return (high + low) / 2 + (high - low) / 2 * unit_action


def to_unit_box(action: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[low, high] -> [-1, 1], clamped (dataset actions may sit a rounding error outside their box)."""
    return ((action - (high + low) / 2) / ((high - low) / 2)).clamp(-1.0, 1.0)
