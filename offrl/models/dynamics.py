"""The interface every dynamics model offers to model fitting (`fitting.py`) and roll-outs (`rollouts.py`).

A model predicts a Gaussian over (s_{t+1} - s_{t-k+1}, r_t) from the state at the start of a window of k real
steps and the k actions in it (k = 1 for one-step models), and normalises its inputs with statistics fixed from
the data it is fitted on.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


class DynamicsModel(Protocol):
    max_window: int  # the longest window (k) the model predicts from; 1 for a one-step model

    def fit_normalizers(self, observations: torch.Tensor, actions: torch.Tensor) -> None:
        """Fix the input statistics from the data the model is about to be fitted on."""

    def window_draw_shape(self, batch_size: int) -> tuple[int, ...]:
        """The shape of the training windows drawn per update: [B], or [E, B] for an ensemble (one batch per member)."""

    def predict_window(self, start_obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """start_obs [..., obs] and the window's k actions [..., k, act] -> mean and log-variance of (delta s, r)."""

    def loss(self, mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch of predictions."""

    def member_state_names(self) -> list[str]:
        """state_dict entries holding one slice per ensemble member, each kept at its own best (none: whole model)."""

    def after_fit(self, holdout_scores: torch.Tensor) -> None:
        """Work once fitting has restored the best parameters, given their hold-out scores (e.g. choose elites)."""

    def start_rollout(self, history_obs: torch.Tensor, history_actions: torch.Tensor, penalized: bool) -> Any:
        """The memory a roll-out carries between its steps, after the real history s, a [N, h, *] (h < max_window;
        0 for a one-step model)."""

    def rollout_step(
        self, memory: Any, observation: torch.Tensor, action: torch.Tensor, penalized: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, Any]:
        """From the memory and the current state and action [N, *]: the Gaussian of (s_{t+1}, r_t) to sample,
        mean and log-variance [N, obs + 1], the uncertainty penalty [N] when `penalized` (else None), and the
        memory for the next step."""

    def train(self, mode: bool = True): ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...

