"""The interface every dynamics model offers to model fitting (offrl.algos.dynamics) and roll-outs (`rollouts.py`).

A model predicts a Gaussian over (s_{t+1} - s_{t-k+1}, r_t) from the state at the start of a window of k real
steps and the k actions in it (k = 1 for one-step models), and normalises its inputs with statistics fixed from
the data it is fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import torch

# Roll-out rows per model call on a CPU. All rows at once, a round's activations are fresh memory at every layer
# ([7, 50000, 200] is 280 MB for MOPO's ensemble; glibc maps anything over 32 MB anew at each allocation), and
# each page of it faults on first touch; chunks of 128 rows stay in cache and reuse freed memory (timed by
# benchmarks/model_round.py; figures in benchmarks/README.md).
CPU_ROLLOUT_CHUNK_ROWS = 128


def rollout_chunk_rows(rows: torch.Tensor) -> int:
    """Rows per model call when a roll-out step predicts for `rows` [N, *]: cache-sized chunks on a CPU, all at
    once on an accelerator."""
    return CPU_ROLLOUT_CHUNK_ROWS if rows.device.type == "cpu" else max(rows.shape[0], 1)


def join_chunks(predictions: Sequence[tuple[torch.Tensor | None, ...]]) -> tuple[torch.Tensor | None, ...]:
    """The per-chunk outputs of a roll-out step, each a tuple of [n, *] tensors (or None), joined along rows."""
    return tuple(torch.cat(parts) if parts[0] is not None else None for parts in zip(*predictions))


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

