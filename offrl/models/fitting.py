"""Fitting a dynamics model by maximum likelihood with hold-out early stopping, as the official ADMPO code and
MBPO/MOPO do (for an ensemble, every member keeps its own best parameters)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from offrl.errors import OffrlError
from offrl.models.dynamics import DynamicsModel
from offrl.models.windows import window_starts, window_targets
from offrl.nn.optim import adam


@dataclass(frozen=True)
class FitSettings:
    """How a dynamics model is fitted (the `dynamics_*` settings of the model-based algorithms).

    batch_size, lr: Adam on batches of windows of one k ~ U{1..max_window} per update.
    holdout_fraction, max_holdout: the hold-out set is the last min(fraction * N, max) transitions.
    patience: epochs without a better hold-out error before fitting stops.
    improvement: relative drop of the hold-out error that counts as better (MBPO/MOPO: 0.01; ADMPO: 0).
    max_epochs: an upper bound on epochs (None: early stopping only).
    updates_per_epoch: updates per epoch (None: N_train / batch_size * max_window).
    """

    batch_size: int = 256
    lr: float = 3e-4
    holdout_fraction: float = 0.2
    max_holdout: int = 1000
    patience: int = 25
    improvement: float = 0.0
    max_epochs: int | None = None
    updates_per_epoch: int | None = None


@torch.no_grad()
def holdout_errors(model: DynamicsModel, transitions: TensorDict, starts: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the predicted means on the hold-out windows of every k, averaged over k: one score
    for a single model ([1]), one per member for an ensemble ([E])."""
    was_training = model.training
    model.eval()
    errors = []
    for k, first in enumerate(starts, start=1):
        start_obs, actions, target = window_targets(transitions, first, k)
        mean, _ = model.predict_window(start_obs, actions)
        errors.append(((mean - target) ** 2).mean((-2, -1)))
    model.train(was_training)
    return torch.stack(errors).mean(0).reshape(-1)


@torch.no_grad()
def keep_best(model: DynamicsModel, best_state: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
    """Copy the improved members' slices (an ensemble) or the whole model into `best_state`; an ensemble's shared
    entries follow its latest snapshot."""
    members = set(model.member_state_names())
    for name, tensor in model.state_dict().items():
        if name in members:
            mask = improved.to(tensor.device)
            best_state[name][mask] = tensor[mask]
        else:
            best_state[name] = tensor.clone()


def split_windows(transitions: TensorDict, max_window: int, settings: FitSettings) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The first rows of the training and hold-out windows of every k in 1..max_window. The hold-out set is the
    last transitions; no window crosses the split or an episode boundary."""
    size = transitions.batch_size[0]
    train_end = size - min(int(settings.holdout_fraction * size), settings.max_holdout)
    episode_last = transitions["episode_last"]
    train = [window_starts(episode_last, k, end=train_end) for k in range(1, max_window + 1)]
    holdout = [s[s >= train_end] for s in (window_starts(episode_last, k) for k in range(1, max_window + 1))]
    if min(len(s) for s in train) == 0 or min(len(s) for s in holdout) == 0:
        raise OffrlError(
            f"the dataset ({size} transitions) has no {max_window}-step windows to train or hold out the model on; "
            "lower the model's max_window or use a larger dataset"
        )
    return train, holdout


def updates_per_epoch(settings: FitSettings, train_starts: list[torch.Tensor]) -> int:
    """Updates in one fitting epoch: settings.updates_per_epoch, else N_train / batch_size * max_window."""
    return settings.updates_per_epoch or max(len(train_starts[0]) // settings.batch_size, 1) * len(train_starts)


def fit_epoch(model: DynamicsModel, transitions: TensorDict, starts: list[torch.Tensor], updates: int, batch_size: int, optimizer) -> None:
    """`updates` Adam steps, each on windows of one k ~ U{1..max_window}."""
    for _ in range(updates):
        k = int(torch.randint(1, len(starts) + 1, ()))  # drawn on the host: no device sync
        first = starts[k - 1][torch.randint(len(starts[k - 1]), model.window_draw_shape(batch_size), device=starts[k - 1].device)]
        start_obs, actions, target = window_targets(transitions, first, k)
        loss = model.loss(*model.predict_window(start_obs, actions), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def fit_dynamics(model: DynamicsModel, transitions: TensorDict, settings: FitSettings, progress: bool = True) -> list[float]:
    """Fit `model` on `transitions` until `settings.patience` epochs bring no better hold-out error (an ensemble
    stops once no member has improved for that long); returns the mean hold-out error of every epoch. The model
    ends with its best hold-out parameters (per member for an ensemble), then `model.after_fit` (elites)."""
    train_starts, holdout_starts = split_windows(transitions, model.max_window, settings)
    updates = updates_per_epoch(settings, train_starts)
    optimizer = adam(model.parameters(), lr=settings.lr)
    best_errors = torch.tensor([float("inf")])  # the best hold-out score so far; broadcasts to [E] for an ensemble
    best_state, since_best, history = copy.deepcopy(model.state_dict()), 0, []
    model.train()
    epochs = tqdm(desc="fitting the dynamics model", unit="epoch", disable=not progress, dynamic_ncols=True)
    while since_best < settings.patience and (settings.max_epochs is None or len(history) < settings.max_epochs):
        fit_epoch(model, transitions, train_starts, updates, settings.batch_size, optimizer)
        errors = holdout_errors(model, transitions, holdout_starts).cpu()  # one sync per epoch
        history.append(errors.mean().item())
        improved = errors < best_errors * (1.0 - settings.improvement)
        if improved.any():
            best_errors = torch.where(improved, errors, best_errors)
            keep_best(model, best_state, improved)
            since_best = 0
        else:
            since_best += 1
        epochs.update()
        epochs.set_postfix(holdout_mse=history[-1], best=best_errors.mean().item())
    epochs.close()
    model.load_state_dict(best_state)
    model.after_fit(holdout_errors(model, transitions, holdout_starts))
    return history
