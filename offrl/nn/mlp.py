"""Multi-layer perceptrons and the Gaussian policy head the algorithms share, and how their inputs are joined and
their parameters frozen."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.stateless import _reparametrize_module  # functional_call's context manager

from offrl.nn.action_bounds import from_unit_box


def mlp(
    in_dim: int, hidden_dims: Sequence[int], out_dim: int, layer_norm: bool = False, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Linear -> [LayerNorm] -> activation for each hidden width, then a linear output layer."""
    layers: list[nn.Module] = []
    width = in_dim
    for hidden in hidden_dims:
        layers.append(nn.Linear(width, hidden))
        if layer_norm:
            layers.append(nn.LayerNorm(hidden))
        layers.append(activation())
        width = hidden
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


class GaussianMLP(nn.Module):
    """An MLP mean with a learned log-std: state-independent (one vector) or state-dependent (a second head).

    With `mean_box` (low, high) the mean is tanh of the MLP's output mapped affinely into the box: IQL's official
    policy (ikostrikov/implicit_q_learning, NormalTanhPolicy with tanh_squash_distribution=False) is
    Normal(tanh(out), std) on actions in [-1, 1]. Without it the mean is the output itself.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dims: Sequence[int],
        out_dim: int,
        layer_norm: bool = False,
        state_dependent_std: bool = False,
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
        mean_box: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        self.state_dependent_std = state_dependent_std
        self.log_std_bounds = log_std_bounds
        self.net = mlp(in_dim, hidden_dims, out_dim * (2 if state_dependent_std else 1), layer_norm)
        if not state_dependent_std:
            self.log_std = nn.Parameter(torch.zeros(out_dim))
        self.register_buffer("mean_low", None if mean_box is None else torch.as_tensor(mean_box[0], dtype=torch.float32).clone())
        self.register_buffer("mean_high", None if mean_box is None else torch.as_tensor(mean_box[1], dtype=torch.float32).clone())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std), both shaped like the output."""
        out = self.net(x)
        if self.state_dependent_std:
            mean, log_std = out.chunk(2, dim=-1)
        else:
            mean, log_std = out, self.log_std.expand_as(out)
        if self.mean_low is not None:
            mean = from_unit_box(torch.tanh(mean), self.mean_low, self.mean_high)
        return mean, log_std.clamp(*self.log_std_bounds)


class Normalizer(nn.Module):
    """z-scores inputs with statistics fixed from the dataset; kept as buffers so checkpoints carry them."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, data: torch.Tensor, min_std: float = 1e-3) -> None:
        self.mean.copy_(data.mean(0))
        self.std.copy_(data.std(0).clamp_min(min_std))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def joined(*parts: torch.Tensor | None) -> torch.Tensor:
    """Concatenate the present parts on the feature dimension (the goal is None on reward tasks)."""
    return torch.cat([part for part in parts if part is not None], -1)


def with_parameters(module: nn.Module, parameters: dict[str, torch.Tensor]) -> contextlib.AbstractContextManager:
    """Inside it, `module`'s named parameters (names as module.named_parameters gives them) are the given
    tensors; the others stay. torch.func.functional_call's own mechanism, around any code rather than only the
    module's forward; torch.func.grad differentiates through it and torch.compile traces it."""
    return _reparametrize_module(module, parameters, strict=False)


def frozen(module: nn.Module) -> contextlib.AbstractContextManager:
    """Inside it, gradients flow through `module` to its inputs but not into its parameters: it computes with
    detached parameters (toggling requires_grad would fail inside torch.func.grad, the compiled update)."""
    return with_parameters(module, {name: parameter.detach() for name, parameter in module.named_parameters()})
