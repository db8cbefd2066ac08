"""How offrl parameters move: the Adam every network trains with, and the Polyak averaging of target networks."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim.adam import adam as functional_adam

# Devices with torch's fused Adam kernel: one pass over each parameter instead of ~10 foreach ops (faster per
# update; figures in benchmarks/README.md). Same formula and defaults as foreach Adam (tests/test_optim.py).
FUSED_ADAM_DEVICES = ("cpu", "cuda")


def adam(parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """torch's Adam, fused where the parameters' device has the fused kernel (foreach elsewhere)."""
    parameters = list(parameters)
    fused = bool(parameters) and all(parameter.device.type in FUSED_ADAM_DEVICES for parameter in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


def adam_step_in_graph(optimizer: torch.optim.Adam, parameters: list[list[torch.nn.Parameter]], gradients: list[list[torch.Tensor]]) -> None:
    """`optimizer.step()` for the given parameters of each param group (others do not step, like parameters
    without a gradient) with the given gradients, as torch.compile can trace it into one graph: torch's
    functional foreach Adam on the optimiser's own state. `optimizer.step` graph-breaks and the fused kernel is
    opaque to the compiler; capturable keeps the step count and the learning rate in tensors (on a CPU torch
    accepts that only inside a compiled graph). The optimiser must have stepped once eagerly (its state)."""
    for group, group_parameters, group_gradients in zip(optimizer.param_groups, parameters, gradients):
        if not group_parameters:
            continue
        states = [optimizer.state[parameter] for parameter in group_parameters]
        functional_adam(
            group_parameters,
            group_gradients,
            [state["exp_avg"] for state in states],
            [state["exp_avg_sq"] for state in states],
            [state["max_exp_avg_sq"] for state in states] if group["amsgrad"] else [],
            [state["step"] for state in states],
            foreach=True,
            capturable=True,
            amsgrad=group["amsgrad"],
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
        )


@torch.no_grad()
def polyak_update(target_params: Iterable[torch.Tensor], online_params: Iterable[torch.Tensor], tau: float) -> None:
    """Soft target update in place: θ̄ ← (1 − τ) θ̄ + τ θ (τ = 1 copies)."""
    targets, onlines = list(target_params), list(online_params)
    if len(targets) != len(onlines):
        raise ValueError(f"target has {len(targets)} tensors, online has {len(onlines)}")
    for target, online in zip(targets, onlines):
        target.lerp_(online, tau)
