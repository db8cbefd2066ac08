"""The loop that MOPO and ADMPO-OFF (offline), MBPO and ADMPO-ON (online) share: SAC on batches that mix real
transitions with transitions rolled out in a learned dynamics model. The algorithm files (`mopo.py`,
`admpo.py`) choose the model (`build_dynamics`) and its settings; everything else is here, top to bottom:

Every update trains SAC on the datamodule's real batch plus `model_rows` rows of a buffer holding the last
`retain_rounds` roll-out rounds; when its schedule (`self.schedule`) says a round is due, the current policy is first
rolled out in the model from `rollout_batch_size` real states. Two schedules:

- `OfflineRollouts` (MOPO, ADMPO-OFF): the model is fitted before training (the CLI fits it first,
  offrl.algos.dynamics.DynamicsFit in `<run>/dynamics/`, or takes one fitted before, `dynamics_checkpoint`, and hands
  it over: `use_fitted_dynamics`; kept in the checkpoint); every `rollout_every` updates a round of
  `rollout_horizon` model steps with reward r - penalty_coef * penalty.
- `OnlineRollouts` (MBPO, ADMPO-ON): offrl.callbacks.online.OnlineInteraction fills a ReplayDataModule; every
  `dynamics_every` env steps the model is refitted on all the data so far (continuing from its weights; its windows
  drawn from the schedule's own seeded streams, kept in the checkpoint) and a round of unpenalised roll-outs
  starts, its horizon ramped from `min_rollout_horizon` to `rollout_horizon` (MBPO's schedule).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tensordict import TensorDict

from offrl.algos.base import OfflineAlgorithm, check_td_settings
from offrl.algos.dynamics import DynamicsFit, FitSettings, fit_dynamics
from offrl.algos.sac import SACAgent, SACUpdates
from offrl.data.windows import WindowGenerators, window_starts
from offrl.dataset_info import DatasetInfo
from offrl.envs.termination import termination_fn
from offrl.errors import OffrlError
from offrl.models.dynamics import DynamicsModel
from offrl.models.rollouts import SAC_KEYS, ModelBuffer, rollout
from offrl.nn.optim import adam


# The fit's data settings: a model-based algorithm's name -> the AnyStepDataModule's.
DYNAMICS_DATA_SETTINGS = {
    "dynamics_batch_size": "batch_size", "dynamics_holdout_fraction": "holdout_fraction",
    "dynamics_max_holdout": "max_holdout", "dynamics_updates_per_epoch": "steps_per_epoch",
}
# How a model is fitted, as opposed to its shape.
FIT_SETTINGS = {*DYNAMICS_DATA_SETTINGS, "dynamics_lr", "dynamics_patience", "dynamics_improvement", "dynamics_max_epochs"}


@dataclass
class OfflineRollouts:
    """A penalised round of `horizon` model steps every `every` updates, from the dataset's windows."""

    every: int
    horizon: int
    penalty_coef: float
    online = False

    def cadences(self) -> dict[str, int]:
        return {"model.rollout_every": self.every}

    def round_horizon(self, update: int, env_steps: int) -> int | None:
        """The horizon of the round due before update `update`, or None when none is."""
        return self.horizon if update % self.every == 0 else None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class OnlineRollouts:
    """Every `dynamics_every` env steps: refit the model on all data so far, then an unpenalised round whose horizon
    grows from `min_horizon` to `horizon` between `ramp_start` and `ramp_end` env steps (MBPO's schedule)."""

    horizon: int
    dynamics_every: int
    min_horizon: int
    ramp_start: int
    ramp_end: int
    model_env_steps: int | None = None  # env steps when the model was last fitted
    window_generators: WindowGenerators | None = field(default=None, repr=False)  # the refits' draws, from the first refit
    saved_window_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # restored before the first refit
    online = True
    penalty_coef = None

    def __post_init__(self) -> None:
        if self.dynamics_every < 1:
            raise OffrlError(f"model.dynamics_every must be a positive integer, got {self.dynamics_every}")
        if not 1 <= self.min_horizon <= self.horizon:
            raise OffrlError(f"model.min_rollout_horizon must lie in 1..rollout_horizon, got {self.min_horizon}")
        if self.ramp_end < self.ramp_start:
            raise OffrlError(f"model.horizon_ramp_end ({self.ramp_end}) must not precede horizon_ramp_start ({self.ramp_start})")

    def cadences(self) -> dict[str, int]:
        return {}  # roll-outs follow env steps, not updates

    def round_horizon(self, update: int, env_steps: int) -> int | None:
        if self.model_env_steps is not None and env_steps - self.model_env_steps < self.dynamics_every:
            return None
        span = max(self.ramp_end - self.ramp_start, 1)
        progress = min(max((env_steps - self.ramp_start) / span, 0.0), 1.0)
        return int(self.min_horizon + progress * (self.horizon - self.min_horizon))

    def refit_generators(self, seed: int, device: torch.device) -> WindowGenerators:
        """The window streams of the refits: seeded at the first refit, or restored from a checkpoint."""
        if self.window_generators is None:
            self.window_generators = WindowGenerators(seed, device)
            if self.saved_window_state is not None:
                self.window_generators.load_state_dict(self.saved_window_state)
                self.saved_window_state = None
        return self.window_generators

    def state_dict(self) -> dict[str, Any]:
        windows = self.window_generators.state_dict() if self.window_generators is not None else self.saved_window_state
        return {"model_env_steps": self.model_env_steps, "refit_window_generators": windows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model_env_steps = state.get("model_env_steps")
        self.saved_window_state, self.window_generators = state.get("refit_window_generators"), None


def check_unpenalised(penalty_coef: float) -> None:
    """Online roll-outs are unpenalised (ADMPO-ON, MBPO)."""
    if penalty_coef:
        raise OffrlError(
            f"model.penalty_coef is {penalty_coef}, but online roll-outs are unpenalised (ADMPO-ON, MBPO); remove it from the config"
        )


class ModelBasedSAC(SACUpdates, OfflineAlgorithm):
    """Offline model-based SAC with uncertainty-penalised roll-outs; subclasses name their model's fit
    (`dynamics_fit_class`, an offrl.algos.dynamics.DynamicsFit)."""

    default_name = "model_based_sac"
    dynamics_fit_class: type[DynamicsFit]

    def __init__(
        self,
        rollout_horizon: int = 5,
        penalty_coef: float = 1.0,
        dynamics_lr: float = 3e-4,
        dynamics_batch_size: int = 256,
        dynamics_holdout_fraction: float = 0.2,
        dynamics_max_holdout: int = 1000,
        dynamics_patience: int = 25,
        dynamics_improvement: float = 0.0,
        dynamics_max_epochs: int | None = None,
        dynamics_updates_per_epoch: int | None = None,
        hidden_dims: Sequence[int] = (256, 256),
        discount: float = 0.99,
        tau: float = 0.005,
        actor_lr: float = 1e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        actor_cosine_steps: int | None = None,
        init_alpha: float = 1.0,
        learn_alpha: bool = True,
        target_entropy: float | None = None,
        model_rows: int = 243,
        rollout_every: int = 1000,
        rollout_batch_size: int = 50000,
        retain_rounds: int = 5,
        name: str | None = None,
        dynamics_checkpoint: str | None = None,
    ):
        """
        Args:
            rollout_horizon: H, model steps per roll-out.
            penalty_coef: beta in r - beta * penalty.
            dynamics_lr, dynamics_batch_size: Adam learning rate and batch of model fitting.
            dynamics_holdout_fraction, dynamics_max_holdout: hold-out = min(fraction * N, max) last transitions.
            dynamics_patience: epochs without a better hold-out error before fitting stops.
            dynamics_improvement: relative drop of the hold-out error that counts as better (MOPO/MBPO: 0.01).
            dynamics_max_epochs: an upper bound on fitting epochs (None: only early stopping).
            dynamics_updates_per_epoch: updates per epoch (None: N_train / dynamics_batch_size * max_window).
            hidden_dims, discount, tau, init_alpha, learn_alpha, target_entropy: the SAC agent.
            actor_lr, critic_lr, alpha_lr: Adam learning rates; the actor's decays by a cosine over
                actor_cosine_steps updates (None: constant, as in ValuePolicy).
            model_rows: model transitions per SAC update; the datamodule's batch_size gives the real ones.
            rollout_every: updates between roll-out rounds.
            rollout_batch_size: roll-outs started per round.
            retain_rounds: roll-out rounds the model buffer holds.
            name: run name for logs/<name>/<dataset>/ (default: the algorithm's).
            dynamics_checkpoint: a fitted model (a fit's last.ckpt) with this algorithm's dynamics settings. Offline
                (same dataset, same settings): it is used instead of fitting one, so seeds of a study share one fit.
                Online (a model of the same shape fitted on data of the same env): the first refit starts from it.
                The CLI reads and checks the file and hands the model over through `use_fitted_dynamics`.
        """
        super().__init__()
        for name_, value in (("rollout_horizon", rollout_horizon), ("rollout_every", rollout_every),
                             ("rollout_batch_size", rollout_batch_size), ("retain_rounds", retain_rounds),
                             ("dynamics_batch_size", dynamics_batch_size)):
            if value < 1:
                raise OffrlError(f"model.{name_} must be a positive integer, got {value}")
        if model_rows < 0:
            raise OffrlError(f"model.model_rows must be >= 0, got {model_rows}")
        if actor_cosine_steps is not None and actor_cosine_steps < 1:
            raise OffrlError(f"model.actor_cosine_steps must be a positive integer or null (a constant rate), got {actor_cosine_steps}")
        check_td_settings(discount, tau)
        self.save_hyperparameters()
        self.dynamics_fit()  # the model's own settings are checked by its fit
        self.model_buffer = ModelBuffer(rollout_batch_size * rollout_horizon * retain_rounds)
        self.schedule: OfflineRollouts | OnlineRollouts = OfflineRollouts(rollout_every, rollout_horizon, penalty_coef)
        self.fitted_dynamics: dict[str, torch.Tensor] | None = None  # a fitted model's state, set before fit

    @property
    def algorithm_name(self) -> str:
        return self.hparams.name or self.default_name

    def dynamics_fit(self) -> tuple[DynamicsFit, dict[str, Any]]:
        """The fit of this run's dynamics model: its LightningModule and its AnyStepDataModule's settings."""
        settings = self.dynamics_settings()
        data = {DYNAMICS_DATA_SETTINGS[key]: settings.pop(key) for key in DYNAMICS_DATA_SETTINGS}
        fit = self.dynamics_fit_class(**settings)
        return fit, {**data, "max_window": settings.get("max_window", 1), "members": fit.members()}

    def build_dynamics(self, obs_dim: int, action_dim: int) -> DynamicsModel:
        return self.dynamics_fit()[0].build_model(obs_dim, action_dim, self.hparams.get("penalty_form"))

    def fit_settings(self) -> FitSettings:
        hp = self.hparams
        return FitSettings(
            hp.dynamics_batch_size, hp.dynamics_lr, hp.dynamics_holdout_fraction, hp.dynamics_max_holdout,
            hp.dynamics_patience, hp.dynamics_improvement, hp.dynamics_max_epochs, hp.dynamics_updates_per_epoch,
        )

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        if self.schedule.online:
            # The replay buffer is still empty: the model's statistics come with its data, and an env without a
            # termination rule is refused (no data yet shows whether it terminates).
            self.build_networks(info)
            if self.fitted_dynamics is not None:  # a warm start: the first refit continues from a model fitted before
                self.dynamics.load_state_dict(self.fitted_dynamics)
            return
        self.build_networks(info, data_terminates=bool(transitions["next", "terminated"].any()))
        self.register_buffer("dynamics_trained", torch.tensor(False))  # a resumed run does not fit its model again
        self.dynamics.fit_normalizers(transitions["observation"], transitions["action"])
        if self.fitted_dynamics is not None:  # a model fitted by another run on the same data (normalisers included)
            self.dynamics.load_state_dict(self.fitted_dynamics)
            self.dynamics_trained.fill_(True)
        # Roll-outs start after m - 1 real steps of history: windows of m rows, the last row's state is the start.
        self.rollout_starts = window_starts(transitions["episode_last"], self.dynamics.max_window)
        if len(self.rollout_starts) == 0:
            raise OffrlError(f"no episode of {info.dataset_id} is {self.dynamics.max_window} steps long; lower model.max_window")

    def dynamics_settings(self) -> dict[str, Any]:
        """The settings that decide the fitted model: its architecture and how it is fitted."""
        return {key: value for key, value in self.hparams.items()
                if (key.startswith("dynamics_") and key not in ("dynamics_checkpoint", "dynamics_every")) or key == "max_window"}

    def dynamics_architecture(self) -> dict[str, Any]:
        """The settings that decide the model's shape alone (an online run refits a given model its own way)."""
        return {key: value for key, value in self.dynamics_settings().items() if key not in FIT_SETTINGS}

    def use_fitted_dynamics(self, state: dict[str, torch.Tensor]) -> None:
        """Use this dynamics-model state (a fitted model's `dynamics.*` tensors) instead of fitting one."""
        self.fitted_dynamics = state

    def build_networks(self, info: DatasetInfo, data_terminates: bool = True) -> None:
        """The SAC agent, the dynamics model and the roll-outs' termination rule (an env without one is taken to
        never terminate only when its data shows no terminal state)."""
        hp = self.hparams
        spec = info.eval_env_spec or info.env_spec
        self.terminated_fn = termination_fn(spec.id if spec is not None else None, data_terminates)
        self.agent = SACAgent(
            info.observation_dim, info.action_dim, info.action_low, info.action_high, list(hp.hidden_dims), hp.discount,
            hp.tau, hp.target_entropy, hp.init_alpha, hp.learn_alpha,
        )
        self.dynamics = self.build_dynamics(info.observation_dim, info.action_dim)

    def configure_optimizers(self):
        hp, groups = self.hparams, self.agent.parameter_groups()
        optimizers = [adam(groups["critic"], lr=hp.critic_lr)]
        if groups["alpha"]:
            optimizers.append(adam(groups["alpha"], lr=hp.alpha_lr))
        actor = adam(groups["actor"], lr=hp.actor_lr)
        if hp.actor_cosine_steps is None:
            return [*optimizers, actor]
        return [*optimizers, actor], [torch.optim.lr_scheduler.CosineAnnealingLR(actor, hp.actor_cosine_steps)]

    # -- the model and its roll-outs ---------------------------------------------------------------------

    def update_cadences(self) -> dict[str, int]:
        return self.schedule.cadences()

    def on_fit_start(self) -> None:
        if not self.schedule.online and not bool(self.dynamics_trained):  # online: the model trains as data arrives
            raise OffrlError(
                f"{type(self).__name__} trains with a fitted dynamics model and was given none: train it with `offrl fit` "
                "(which fits the model first) or set model.dynamics_checkpoint to a fitted model"
            )

    @torch.no_grad()
    def rollout_round(self, transitions: TensorDict, starts: torch.Tensor, horizon: int) -> None:
        """Roll the current policy out in the model for `horizon` steps from rollout_batch_size real windows of
        `transitions` (first rows `starts`); add the model transitions to the buffer."""
        window = self.dynamics.max_window
        first = starts.to(transitions.device)
        first = first[torch.randint(len(first), (self.hparams.rollout_batch_size,), device=first.device)]
        history = first[:, None] + torch.arange(window - 1, device=first.device)
        rows = rollout(
            self.dynamics, lambda obs: self.agent.act(obs, deterministic=False),
            transitions["observation"][history], transitions["action"][history],
            transitions["observation"][first + window - 1], horizon, self.terminated_fn, self.schedule.penalty_coef,
        )
        metrics = {"rollout/reward": rows["next", "reward"].mean()}
        if "penalty" in rows.keys():
            metrics["rollout/penalty"] = rows["penalty"].mean()
        self.log_now(metrics)
        self.model_buffer.add(rows)

    def refresh_model_data(self) -> None:
        """A roll-out round when the schedule says one is due; online, the model is refitted first."""
        env_steps = self.datamodule.size if self.schedule.online else 0
        horizon = self.schedule.round_horizon(self.global_step, env_steps)
        if horizon is None:
            return
        if not self.schedule.online:
            self.rollout_round(self.datamodule.transitions, self.rollout_starts, horizon)
            return
        stored = self.datamodule.stored()
        self.dynamics.fit_normalizers(stored["observation"], stored["action"])
        generators = self.schedule.refit_generators(self.datamodule.seed + self.global_rank, stored.device)
        history = fit_dynamics(self.dynamics, stored, self.fit_settings(), generators, progress=False)
        self.rollout_round(stored, window_starts(stored["episode_last"], self.dynamics.max_window), horizon)
        self.schedule.model_env_steps = env_steps
        self.log_now({"model/holdout_mse": history[-1], "rollout/horizon": float(horizon)})

    # -- SAC ---------------------------------------------------------------------------------------------

    def training_step(self, batch: TensorDict | list[TensorDict], batch_idx: int) -> dict[str, torch.Tensor]:
        self.model_buffer.to(self.device)
        self.refresh_model_data()
        return super().training_step(batch, batch_idx)

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """SAC's losses on the real rows of `batch` and model_rows model rows."""
        real = batch.select(*SAC_KEYS)
        real["next", "reward"] = real["next", "reward"].float()
        model_rows = self.hparams.model_rows
        return super().losses(torch.cat([real, self.model_buffer.sample(model_rows)]) if model_rows else real)

    def accelerate_update(self, compile: bool = False, cuda_graphs: bool = False) -> None:
        if cuda_graphs:
            raise OffrlError(
                "performance.cuda_graphs cannot capture a model-based SAC update: its model buffer grows between "
                "roll-out rounds; set it false (performance.compile works)"
            )
        super().accelerate_update(compile, cuda_graphs)

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        return self.agent.act(observation, deterministic=True)

    def explore(self, observation: torch.Tensor) -> torch.Tensor:
        """The behaviour policy of online interaction: a sample of the policy."""
        return self.agent.act(observation, deterministic=False)

    # -- checkpoints -------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["model_buffer"] = self.model_buffer.state_dict()
        checkpoint.update(self.schedule.state_dict())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "model_buffer" in checkpoint:
            self.model_buffer.load_state_dict(checkpoint["model_buffer"], self.device)
        self.schedule.load_state_dict(checkpoint)
