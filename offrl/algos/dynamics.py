"""Fitting a dynamics model: Gaussian maximum likelihood on windows of real steps, with hold-out early stopping as
the official ADMPO code and MBPO/MOPO define it (patience epochs without a better hold-out error; an ensemble keeps
every member's own best parameters and stops once no member has improved for that long).

- `DynamicsFit` is the LightningModule the Trainer fits, on an offrl.data.datamodules.AnyStepDataModule:
  `AnyStepDynamics` (ADM's any-step GRU, offrl.models.any_step) and `EnsembleDynamics` (MOPO/MBPO's MLP
  ensemble, offrl.models.ensemble). `offrl fit --config configs/dynamics/<model>-<dataset>.yaml` fits one alone;
  an offline model-based run (MOPO, ADMPO-OFF) fits one first, in `<run>/dynamics/`, or takes a fitted one
  (`model.dynamics_checkpoint`). Every checkpoint holds the fitted model so far (`fitted_dynamics`: the best
  hold-out parameters, elites chosen) and whether the fit has ended.
- `fit_dynamics` is the same fit as a plain loop on transitions in memory: online model-based SAC (MBPO,
  ADMPO-ON) refits its model this way every few env steps, inside its training step. Both draw their batches
  with offrl.data.windows.draw_windows.

The loss of one batch of windows, for predicted mean mu and log-variance v of the target y = (s_{i+k} - s_i, r):
    L = mean((mu - y)^2 * exp(-v) + v) (+ the model's own terms: log-variance bounds, MOPO's weight decay)
The hold-out score: the mean squared error of mu, averaged over the windows of every k in 1..m.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from offrl.algos.base import OfflineAlgorithm
from offrl.data.windows import WindowGenerators, split_window_starts, window_targets
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError
from offrl.models.any_step import AnyStepModel
from offrl.models.dynamics import DynamicsModel
from offrl.models.ensemble import EnsembleModel
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
def window_errors(model: DynamicsModel, start_obs: torch.Tensor, actions: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the predicted means on one k's windows: [1] for one model, [E] for an ensemble."""
    mean, _ = model.predict_window(start_obs, actions)
    return ((mean - target) ** 2).mean((-2, -1)).reshape(-1)


@torch.no_grad()
def holdout_errors(model: DynamicsModel, transitions: TensorDict, starts: list[torch.Tensor]) -> torch.Tensor:
    """The hold-out score: window_errors on the hold-out windows of every k, averaged over k."""
    was_training = model.training
    model.eval()
    errors = [window_errors(model, *window_targets(transitions, first, k)) for k, first in enumerate(starts, start=1)]
    model.train(was_training)
    return torch.stack(errors).mean(0)


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


def improved_members(errors: torch.Tensor, best_errors: torch.Tensor, improvement: float) -> torch.Tensor:
    """Which members' hold-out errors beat their best so far by the relative `improvement`."""
    return errors < best_errors * (1.0 - improvement)


# -- the fit as a LightningModule --------------------------------------------------------------------------


class DynamicsFit(OfflineAlgorithm):
    """A dynamics model fitted by the Trainer on an AnyStepDataModule (see the module docstring). Subclasses build
    the model (`build_model`); the settings carry the names of the model-based algorithms' `dynamics_*` settings,
    so that a fitted model is checked against a run's settings name by name."""

    default_name = "dynamics"
    progress_bar_loss = "model_nll"
    acts_in_env = False  # validated on the hold-out windows, not in the env

    def __init__(
        self,
        dynamics_lr: float = 3e-4,
        dynamics_patience: int = 25,
        dynamics_improvement: float = 0.0,
        dynamics_max_epochs: int | None = None,
        name: str | None = None,
    ):
        """
        Args:
            dynamics_lr: Adam's learning rate.
            dynamics_patience: hold-out evaluations (one per epoch) without a better error before the fit stops.
            dynamics_improvement: relative drop of the hold-out error that counts as better (MOPO/MBPO: 0.01).
            dynamics_max_epochs: an upper bound on epochs (None: only early stopping).
            name: run name for logs/<name>/<dataset>/ (default: the model's).
        """
        super().__init__()
        if dynamics_patience < 1:
            raise OffrlError(f"model.dynamics_patience must be a positive integer, got {dynamics_patience}")
        if not 0.0 <= dynamics_improvement < 1.0:
            raise OffrlError(f"model.dynamics_improvement must be in [0, 1) (a relative drop, e.g. 0.01), got {dynamics_improvement}")
        if dynamics_max_epochs is not None and dynamics_max_epochs < 1:
            raise OffrlError(f"model.dynamics_max_epochs must be a positive integer or null, got {dynamics_max_epochs}")
        self.save_hyperparameters()
        self.fitted_dynamics: dict[str, torch.Tensor] | None = None  # the best hold-out model so far, elites chosen
        self.best_errors: torch.Tensor | None = None  # per member ([1] for one model)
        self.epochs_since_best = 0
        self.epochs = 0
        self.finished = False
        self._holdout_errors_by_k: list[torch.Tensor] = []

    @property
    def algorithm_name(self) -> str:
        return self.hparams.name or self.default_name

    def build_model(self, obs_dim: int, action_dim: int) -> DynamicsModel:
        raise NotImplementedError

    def members(self) -> int:
        """Independent batches per update the model trains on (an ensemble: one per member)."""
        return 1

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        datamodule = self.datamodule
        if not hasattr(datamodule, "holdout_starts"):
            raise OffrlError(
                f"{type(self).__name__} fits on windows of steps; set data.class_path to offrl.data.datamodules.AnyStepDataModule"
            )
        wanted = {"max_window": getattr(self.hparams, "max_window", 1), "members": self.members()}
        for key, value in wanted.items():
            if getattr(datamodule, key) != value:
                raise OffrlError(f"data.{key} is {getattr(datamodule, key)} but the model needs {value}; set data.{key} {value}")
        self.model = self.build_model(info.observation_dim, info.action_dim)
        self.model.fit_normalizers(transitions["observation"], transitions["action"])
        self.fitted_dynamics = None

    def configure_optimizers(self):
        return adam(self.model.parameters(), lr=self.hparams.dynamics_lr)

    def accelerate_update(self, compile: bool = False, cuda_graphs: bool = False) -> None:
        if compile or cuda_graphs:
            raise OffrlError(
                "a dynamics fit draws a window length per batch (a new shape each time), which one graph cannot serve; "
                "set performance.compile false and performance.cuda_graphs false"
            )
        super().accelerate_update(compile, cuda_graphs)

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        raise OffrlError("a dynamics model does not act; fit a model-based algorithm (MOPO, ADMPOOffline) to get a policy")

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        prediction = self.model.predict_window(batch["observation"], batch["window_actions"])
        return {"model_nll": self.model.loss(*prediction, batch["target"])}

    # -- hold-out evaluation and early stopping ---------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self._holdout_errors_by_k = []

    def validation_step(self, batch: TensorDict, batch_idx: int) -> None:
        self._holdout_errors_by_k.append(window_errors(self.model, batch["observation"], batch["window_actions"], batch["target"]))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or len(self._holdout_errors_by_k) != self.model.max_window:
            return
        errors = torch.stack(self._holdout_errors_by_k).mean(0)
        best = self.best_errors.to(errors.device) if self.best_errors is not None else torch.full_like(errors, float("inf"))
        improved = improved_members(errors, best, self.hparams.dynamics_improvement)
        self.epochs += 1
        if improved.any():
            self.best_errors = torch.where(improved, errors, best)
            best_state = self.fitted_dynamics if self.fitted_dynamics is not None else copy.deepcopy(self.model.state_dict())
            keep_best(self.model, best_state, improved)
            fitted = copy.deepcopy(self.model)
            fitted.load_state_dict(best_state)
            fitted.after_fit(self.best_errors)  # e.g. the ensemble's elites, from its members' best errors
            self.fitted_dynamics = fitted.state_dict()
            self.epochs_since_best = 0
        else:
            self.epochs_since_best += 1
        max_epochs = self.hparams.dynamics_max_epochs
        self.finished = self.epochs_since_best >= self.hparams.dynamics_patience or (max_epochs is not None and self.epochs >= max_epochs)
        if self.finished:
            self.trainer.should_stop = True
        self.log_now({
            "dynamics/holdout_mse": errors.mean(), "dynamics/best_holdout_mse": self.best_errors.mean(),
            "dynamics/epochs_since_best": float(self.epochs_since_best),
        })

    def on_train_end(self) -> None:
        if self.fitted_dynamics is not None:  # the module ends as the fitted model
            self.model.load_state_dict(self.fitted_dynamics)

    # -- checkpoints -------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["dynamics_fit"] = {
            "fitted_dynamics": self.fitted_dynamics, "best_errors": self.best_errors, "epochs": self.epochs,
            "epochs_since_best": self.epochs_since_best, "finished": self.finished,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint.get("dynamics_fit") or {}
        self.fitted_dynamics, self.best_errors = saved.get("fitted_dynamics"), saved.get("best_errors")
        self.epochs, self.epochs_since_best = int(saved.get("epochs", 0)), int(saved.get("epochs_since_best", 0))
        self.finished = bool(saved.get("finished", False))


class AnyStepDynamics(DynamicsFit):
    """ADM's any-step GRU model (offrl.models.any_step.AnyStepModel), as ADMPO fits it."""

    default_name = "adm"

    def __init__(
        self,
        max_window: int = 5,
        dynamics_hidden_dim: int = 200,
        dynamics_gru_layers: int = 3,
        dynamics_residual_blocks: int = 4,
        dynamics_dropout: float = 0.1,
        **kwargs: Any,
    ):
        """
        Args:
            max_window: m, the largest k the model predicts from (data.max_window must match).
            dynamics_hidden_dim, dynamics_gru_layers, dynamics_residual_blocks, dynamics_dropout: the GRU model.
            **kwargs: DynamicsFit's (learning rate, patience, improvement, max epochs, name).
        """
        if max_window < 1:
            raise OffrlError(f"model.max_window must be >= 1, got {max_window}")
        super().__init__(**kwargs)

    def build_model(self, obs_dim: int, action_dim: int, penalty_form: str = "official") -> AnyStepModel:
        hp = self.hparams
        return AnyStepModel(
            obs_dim, action_dim, hp.max_window, hp.dynamics_hidden_dim, hp.dynamics_gru_layers,
            hp.dynamics_residual_blocks, hp.dynamics_dropout, penalty_form,
        )


class EnsembleDynamics(DynamicsFit):
    """MOPO/MBPO's probabilistic MLP ensemble (offrl.models.ensemble.EnsembleModel): one batch per member."""

    default_name = "ensemble"

    def __init__(
        self,
        dynamics_hidden_dims: Sequence[int] = (200, 200, 200, 200),
        dynamics_members: int = 7,
        dynamics_elites: int = 5,
        dynamics_weight_decay: Sequence[float] | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            dynamics_hidden_dims: widths of every member's MLP.
            dynamics_members, dynamics_elites: ensemble size (data.members must match), and the members roll-outs
                sample from (the lowest hold-out errors).
            dynamics_weight_decay: MOPO's per-layer L2 coefficients, one per linear layer from input to output.
            **kwargs: DynamicsFit's (learning rate, patience, improvement, max epochs, name).
        """
        if dynamics_elites > dynamics_members:
            raise OffrlError(f"model.dynamics_elites ({dynamics_elites}) must not exceed dynamics_members ({dynamics_members})")
        layers = len(dynamics_hidden_dims) + 1
        if dynamics_weight_decay is not None and (len(dynamics_weight_decay) != layers or min(dynamics_weight_decay) < 0):
            raise OffrlError(
                f"model.dynamics_weight_decay must be {layers} non-negative numbers (one per ensemble layer), "
                f"got {list(dynamics_weight_decay)}"
            )
        super().__init__(**kwargs)

    def members(self) -> int:
        return self.hparams.dynamics_members

    def build_model(self, obs_dim: int, action_dim: int, penalty_form: str | None = None) -> EnsembleModel:
        hp = self.hparams
        return EnsembleModel(
            obs_dim, action_dim, list(hp.dynamics_hidden_dims), hp.dynamics_members, hp.dynamics_elites, hp.dynamics_weight_decay
        )


# -- the same fit as a plain loop (online refits) ---------------------------------------------------------


def fit_epoch(
    model: DynamicsModel, transitions: TensorDict, starts: list[torch.Tensor], updates: int, batch_size: int,
    optimizer, generators: WindowGenerators,
) -> None:
    """`updates` Adam steps, each on windows of one k ~ U{1..max_window} (drawn by offrl.data.windows.draw_windows)."""
    for _ in range(updates):
        batch = generators.draw(transitions, starts, model.window_draw_shape(batch_size))
        loss = model.loss(*model.predict_window(batch["observation"], batch["window_actions"]), batch["target"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def updates_per_epoch(settings: FitSettings, train_starts: list[torch.Tensor]) -> int:
    """Updates in one fitting epoch: settings.updates_per_epoch, else N_train / batch_size * max_window."""
    return settings.updates_per_epoch or max(len(train_starts[0]) // settings.batch_size, 1) * len(train_starts)


def fit_dynamics(
    model: DynamicsModel, transitions: TensorDict, settings: FitSettings, generators: WindowGenerators, progress: bool = True,
) -> list[float]:
    """Fit `model` on `transitions` in this process (`generators` draw the windows) until `settings.patience`
    epochs bring no better hold-out error; returns the mean hold-out error of every epoch. The model ends with its
    best hold-out parameters (per member for an ensemble), then `model.after_fit` (elites)."""
    train_starts, holdout_starts = split_window_starts(
        transitions["episode_last"], model.max_window, settings.holdout_fraction, settings.max_holdout
    )
    updates = updates_per_epoch(settings, train_starts)
    optimizer = adam(model.parameters(), lr=settings.lr)
    best_errors = torch.tensor([float("inf")])  # the best hold-out score so far; broadcasts to [E] for an ensemble
    best_state, since_best, history = copy.deepcopy(model.state_dict()), 0, []
    model.train()
    epochs = tqdm(desc="fitting the dynamics model", unit="epoch", disable=not progress, dynamic_ncols=True)
    while since_best < settings.patience and (settings.max_epochs is None or len(history) < settings.max_epochs):
        fit_epoch(model, transitions, train_starts, updates, settings.batch_size, optimizer, generators)
        errors = holdout_errors(model, transitions, holdout_starts).cpu()  # one sync per epoch
        history.append(errors.mean().item())
        improved = improved_members(errors, best_errors, settings.improvement)
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
