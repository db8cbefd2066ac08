"""Termination functions for model roll-outs: the envs' own "unhealthy" rules, applied to predicted states.

Gymnasium v5 locomotion observations exclude the x position, so obs[0] is the torso height z and obs[1] its
angle. The rules and ranges are those of Gymnasium's Hopper-v5 and Walker2d-v5 (`is_healthy`).
"""

from __future__ import annotations

from typing import Callable

import torch

from offrl.errors import OffrlError

# terminated(next_obs [B, obs]) -> bool [B]
TerminationFn = Callable[[torch.Tensor], torch.Tensor]


def hopper_terminated(next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[:, 0], next_obs[:, 1]
    # Hopper also requires every other state entry inside (-100, 100); the observation's velocities are clipped
    # to 10, so this only catches diverged predictions.
    healthy = (z > 0.7) & (angle > -0.2) & (angle < 0.2) & (next_obs[:, 1:].abs() < 100).all(-1)
    return ~(healthy & torch.isfinite(next_obs).all(-1))


def walker2d_terminated(next_obs: torch.Tensor) -> torch.Tensor:
    z, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    return ~(healthy & torch.isfinite(next_obs).all(-1))


def never_terminated(next_obs: torch.Tensor) -> torch.Tensor:
    return torch.zeros(next_obs.shape[0], dtype=torch.bool, device=next_obs.device)


TERMINATIONS: dict[str, TerminationFn] = {
    "Hopper": hopper_terminated,
    "Walker2d": walker2d_terminated,
    "HalfCheetah": never_terminated,
}


def termination_fn(env_id: str | None, data_terminates: bool = True) -> TerminationFn:
    """The termination rule of a Gymnasium env id such as 'Hopper-v5'. An env without a rule whose data never
    terminates (Pendulum, Reacher, ...) never terminates in roll-outs either."""
    name = (env_id or "").split("-v")[0]
    if name in TERMINATIONS:
        return TERMINATIONS[name]
    if not data_terminates:
        return never_terminated
    raise OffrlError(
        f"model roll-outs need a termination rule, and env {env_id!r}, whose data has terminal states, has none; "
        f"use a dataset of {sorted(TERMINATIONS)} (or add a rule to offrl/envs/termination.py)"
    )
