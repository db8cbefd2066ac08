"""Model-based offline RL with uncertainty-penalised model roll-outs: ADMPO-OFF (Lin et al., "Any-step Dynamics
Model Improves Future Predictions for Online and Offline Reinforcement Learning", arXiv 2405.17031; official code
HxLyn3/ADMPO) and its baseline MOPO (Yu et al. 2020). They share everything but the model and its penalty:

- `dynamics: any_step` (ADMPO-OFF): a GRU predicts s_{t+1} from s_{t-k+1} and the k actions in between, any k in
  1..m. Roll-outs start from m-1 real steps of history; each step draws k ~ U{1..min(history, m)}; the penalty is
  the disagreement of the predictions for k = 1..min(history, m) (`penalty_form`: "official" or "eq4").
- `dynamics: ensemble` (MOPO): 7 MLPs (5 elites), one-step; a random elite per row; the penalty is the largest
  predicted std norm over the elites.

The fit: pretrain the model on the dataset (hold-out early stopping) once, at the start of `fit` (kept in the
checkpoint), then SAC on batches mixing real transitions (the datamodule's batch) and model transitions (a buffer
of the last `retain_rounds` roll-out rounds, refreshed every `rollout_every` updates from `rollout_batch_size`
starts) with reward r - penalty_coef * penalty.

ADMPO-ON and its baseline MBPO (`OnlineModelBasedSAC`) run the same pieces online, MBPO-style: the model retrains
on the growing replay buffer every few hundred env steps and roll-outs of ramped length feed SAC at a high
update-to-data ratio.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from offrl.algos.base import OfflineAlgorithm, check_td_settings
from offrl.algos.sac import SACAgent, SACUpdates
from offrl.data.datamodules import window_starts
from offrl.dataset_info import DatasetInfo
from offrl.envs.termination import TerminationFn, termination_fn
from offrl.errors import OffrlError
from offrl.nn.dynamics import AnyStepDynamics, EnsembleDynamics
from offrl.objectives.dynamics import PENALTY_FORMS, any_step_penalty, dynamics_nll, ensemble_penalty, layer_weight_decay

DYNAMICS_KINDS = ("any_step", "ensemble")
SAC_KEYS = ("observation", "action", ("next", "observation"), ("next", "reward"), ("next", "terminated"))
Dynamics = AnyStepDynamics | EnsembleDynamics


# -- model pretraining -------------------------------------------------------------------------------------


def window_targets(transitions: TensorDict, first: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For windows starting at `first` (any shape [...]): s_first [..., obs], the k actions [..., k, act] and the
    target (s_{first+k} - s_first, r_{first+k-1}) [..., obs + 1]."""
    steps = first[..., None] + torch.arange(k, device=first.device)
    final = steps[..., -1]
    start_obs = transitions["observation"][first]
    target = torch.cat(
        [transitions["next", "observation"][final] - start_obs, transitions["next", "reward"][final][..., None]], -1
    )
    return start_obs, transitions["action"][steps], target


def predict_window(model: Dynamics, start_obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(delta s, r) mean and log-variance: ADM reads the k actions, the ensemble (k = 1) the one action."""
    if isinstance(model, AnyStepDynamics):
        return model(start_obs, actions)
    return model(start_obs, actions[..., 0, :])


@torch.no_grad()
def holdout_errors(model: Dynamics, transitions: TensorDict, starts: list[torch.Tensor]) -> torch.Tensor:
    """Mean squared error of the predicted means on the hold-out windows: [m] per k (ADM) or [E] per member."""
    was_training = model.training
    model.eval()
    errors = []
    for k, first in enumerate(starts, start=1):
        start_obs, actions, target = window_targets(transitions, first, k)
        mean, _ = predict_window(model, start_obs, actions)
        errors.append(((mean - target) ** 2).mean((-2, -1)))
    model.train(was_training)
    return torch.stack(errors) if isinstance(model, AnyStepDynamics) else errors[0]


@torch.no_grad()
def save_best(model: Dynamics, best_state: dict[str, torch.Tensor], improved: torch.Tensor) -> None:
    """Copy the improved members' slices (an ensemble) or the whole model into `best_state`; an ensemble's shared
    entries follow its latest snapshot."""
    members = set(model.member_state_names()) if isinstance(model, EnsembleDynamics) else set()
    for name, tensor in model.state_dict().items():
        if name in members:
            mask = improved.to(tensor.device)
            best_state[name][mask] = tensor[mask]
        else:
            best_state[name] = tensor.clone()


def pretrain_dynamics(
    model: Dynamics,
    transitions: TensorDict,
    max_window: int,
    batch_size: int = 256,
    lr: float = 3e-4,
    holdout_fraction: float = 0.2,
    max_holdout: int = 1000,
    patience: int = 25,
    max_epochs: int | None = None,
    updates_per_epoch: int | None = None,
    progress: bool = True,
    improvement: float = 0.0,
) -> list[float]:
    """Fit a dynamics model by NLL with hold-out early stopping, as the official ADMPO code; returns the hold-out
    error (mean over k, or over members) of every epoch. The model ends with its best hold-out parameters.

    The hold-out set is the last min(holdout_fraction * N, max_holdout) transitions; no window crosses the split
    or an episode boundary. An epoch is N_train / batch_size * max_window updates (unless `updates_per_epoch`),
    each on windows of one k ~ U{1..max_window}; training stops after `patience` epochs without a hold-out error
    lower than the best by more than the relative `improvement` (or after `max_epochs`). An ensemble draws
    separate windows for each member, keeps each member's own best parameters (MOPO/MBPO's per-member snapshots:
    it stops once no member has improved for `patience` epochs) and keeps as elites the members with the lowest
    hold-out error.
    """
    size = transitions.batch_size[0]
    holdout = min(int(holdout_fraction * size), max_holdout)
    train_end = size - holdout
    episode_last = transitions["episode_last"]
    train_starts = [window_starts(episode_last, k, end=train_end) for k in range(1, max_window + 1)]
    holdout_starts = [s[s >= train_end] for s in (window_starts(episode_last, k) for k in range(1, max_window + 1))]
    if min(len(s) for s in train_starts) == 0 or min(len(s) for s in holdout_starts) == 0:
        raise OffrlError(
            f"the dataset ({size} transitions) has no {max_window}-step windows to train or hold out the model on; "
            "lower the model's max_window or use a larger dataset"
        )
    ensemble = isinstance(model, EnsembleDynamics)
    members = (model.num_members,) if ensemble else ()
    updates = updates_per_epoch or max(train_end // batch_size, 1) * max_window
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    # Best hold-out error per member (an ensemble) or of the whole model, and the parameters that gave it.
    best_errors = torch.full((model.num_members if ensemble else 1,), float("inf"))
    best_state, since_best, history = copy.deepcopy(model.state_dict()), 0, []
    model.train()
    epochs = tqdm(desc="pretraining dynamics", unit="epoch", disable=not progress, dynamic_ncols=True)
    while since_best < patience and (max_epochs is None or len(history) < max_epochs):
        for _ in range(updates):
            k = int(torch.randint(1, max_window + 1, ()))  # drawn on the host: no device sync
            starts = train_starts[k - 1]
            first = starts[torch.randint(len(starts), (*members, batch_size), device=starts.device)]
            start_obs, actions, target = window_targets(transitions, first, k)
            mean, logvar = predict_window(model, start_obs, actions)
            loss = dynamics_nll(mean, logvar, target, model.bounds.min_logvar, model.bounds.max_logvar)
            if ensemble and model.weight_decay:
                loss = loss + layer_weight_decay(model.decayed_weights(), model.weight_decay)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        errors = holdout_errors(model, transitions, holdout_starts).cpu()  # one sync per epoch
        history.append(errors.mean().item())
        errors = errors if ensemble else errors.mean().reshape(1)
        improved = errors < best_errors * (1.0 - improvement)
        if improved.any():
            best_errors = torch.where(improved, errors, best_errors)
            save_best(model, best_state, improved)
            since_best = 0
        else:
            since_best += 1
        epochs.update()
        epochs.set_postfix(holdout_mse=history[-1], best=best_errors.mean().item())
    epochs.close()
    model.load_state_dict(best_state)
    if ensemble:
        model.select_elites(holdout_errors(model, transitions, holdout_starts))
    return history


# -- roll-outs ---------------------------------------------------------------------------------------------


@torch.no_grad()
def rollout(
    model: Dynamics,
    policy,
    history_obs: torch.Tensor,
    history_actions: torch.Tensor,
    observation: torch.Tensor,
    horizon: int,
    terminated_fn: TerminationFn,
    penalty_coef: float,
    penalty_form: str = "official",
    max_window: int = 1,
) -> TensorDict:
    """Roll the policy out in the model for `horizon` steps from `observation` [N, obs], after the real history
    s, a [N, h, *] (h = 0 for the ensemble). Returns the transitions of rows still alive (not yet terminated),
    with the penalised reward and `penalty` (only when penalty_coef is not 0), flattened to [n]."""
    was_training = model.training
    model.eval()
    steps = []
    alive = torch.ones(observation.shape[0], dtype=torch.bool, device=observation.device)
    for _ in range(horizon):
        action = policy(observation)
        if isinstance(model, AnyStepDynamics):
            history_obs = torch.cat([history_obs, observation[:, None]], 1)[:, -max_window:]
            history_actions = torch.cat([history_actions, action[:, None]], 1)[:, -max_window:]
            # k ~ U{1..min(history, m)} picks the sample's prediction; the penalty needs every k's, so without
            # one (ADMPO-ON) only the drawn k is predicted, as the official code does.
            k = int(torch.randint(history_obs.shape[1], ())) + 1
            if penalty_coef:
                means, logvars = model.predict_every_k(history_obs, history_actions)
                mean, logvar = means[k - 1], logvars[k - 1]
                penalty = any_step_penalty(means[..., :-1], logvars[..., :-1], penalty_form)
            else:
                mean, logvar = model.predict_from_history(history_obs, history_actions, k)
                penalty = None
        else:
            means, logvars = model.predict(observation, action)
            member = model.random_elites(observation.shape[0])
            rows = torch.arange(observation.shape[0], device=observation.device)
            mean, logvar = means[member, rows], logvars[member, rows]
            penalty = ensemble_penalty(logvars) if penalty_coef else None
        sample = mean + (0.5 * logvar).exp() * torch.randn_like(mean)
        next_obs, reward = sample[:, :-1], sample[:, -1]
        terminated = terminated_fn(next_obs)
        step = TensorDict(
            {
                "observation": observation,
                "action": action,
                "alive": alive,
                "next": {"observation": next_obs, "reward": reward, "terminated": terminated},
            },
            batch_size=[observation.shape[0]],
        )
        if penalty is not None:
            step["penalty"] = penalty
            step["next", "reward"] = reward - penalty_coef * penalty
        steps.append(step)
        alive = alive & ~terminated
        observation = next_obs
    model.train(was_training)
    out = torch.stack(steps, 1).reshape(-1)
    return out[out["alive"]].exclude("alive")


class ModelBuffer:
    """A ring buffer of model transitions on the training device, holding the last `capacity` rows."""

    def __init__(self, capacity: int):
        self.capacity, self.size, self.position = capacity, 0, 0
        self.data: TensorDict | None = None

    def add(self, rows: TensorDict) -> None:
        rows = rows.select(*SAC_KEYS)[-self.capacity :]
        if self.data is None:
            self.data = torch.zeros_like(rows[:1]).expand(self.capacity).clone()
        index = (self.position + torch.arange(len(rows), device=rows.device)) % self.capacity
        self.data[index] = rows
        self.position = (self.position + len(rows)) % self.capacity
        self.size = min(self.size + len(rows), self.capacity)

    def to(self, device: torch.device) -> None:
        # A checkpoint is restored before Lightning moves the module to its device.
        if self.data is not None and self.data.device != device:
            self.data = self.data.to(device)

    def sample(self, batch_size: int) -> TensorDict:
        return self.data[torch.randint(self.size, (batch_size,), device=self.data.device)]

    def state_dict(self) -> dict[str, Any]:
        # Plain tensors, so that checkpoints load with torch.load(weights_only=True).
        data = None if self.data is None else self.data[: self.size].cpu().to_dict()
        return {"data": data, "size": self.size, "position": self.position}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.size, self.position, self.data = 0, 0, None
        if state["data"] is not None:
            self.add(TensorDict(state["data"], batch_size=[state["size"]]).to(device))
            self.position = state["position"]


# -- the algorithm -----------------------------------------------------------------------------------------


class ModelBasedSAC(SACUpdates, OfflineAlgorithm):
    """ADMPO-OFF (`dynamics: any_step`) or MOPO (`dynamics: ensemble`): see the module docstring."""

    def __init__(
        self,
        dynamics: str = "any_step",
        max_window: int = 5,
        rollout_horizon: int = 5,
        penalty_coef: float = 1.0,
        penalty_form: str = "official",
        model_hidden_dim: int = 200,
        model_gru_layers: int = 3,
        model_residual_blocks: int = 4,
        model_dropout: float = 0.1,
        ensemble_hidden_dims: Sequence[int] = (200, 200, 200, 200),
        ensemble_members: int = 7,
        ensemble_elites: int = 5,
        ensemble_weight_decay: Sequence[float] | None = None,
        model_lr: float = 3e-4,
        model_batch_size: int = 256,
        model_holdout_fraction: float = 0.2,
        model_max_holdout: int = 1000,
        model_patience: int = 25,
        model_improvement: float = 0.0,
        model_max_epochs: int | None = None,
        model_updates_per_epoch: int | None = None,
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
    ):
        """
        Args:
            dynamics: "any_step" (ADM, ADMPO-OFF) or "ensemble" (MLP ensemble, MOPO).
            max_window: m, the largest k of the any-step model (1 for the ensemble).
            rollout_horizon: H, model steps per roll-out.
            penalty_coef: beta in r - beta * penalty.
            penalty_form: ADMPO's penalty, "official" (spread of the means over k) or "eq4" (plus the variances).
            model_hidden_dim, model_gru_layers, model_residual_blocks, model_dropout: the any-step model.
            ensemble_hidden_dims, ensemble_members, ensemble_elites: the ensemble model.
            ensemble_weight_decay: MOPO's per-layer L2 coefficients on the ensemble's weights, one per linear
                layer from input to output (None: no decay).
            model_lr, model_batch_size: Adam learning rate and batch of model pretraining.
            model_holdout_fraction, model_max_holdout: hold-out = min(fraction * N, max) last transitions.
            model_patience: epochs without a better hold-out error before pretraining stops.
            model_improvement: relative drop of the hold-out error that counts as better (MOPO/MBPO: 0.01).
            model_max_epochs: an upper bound on pretraining epochs (None: only early stopping).
            model_updates_per_epoch: updates per epoch (None: N_train / model_batch_size * max_window).
            hidden_dims, discount, tau, init_alpha, learn_alpha, target_entropy: the SAC agent.
            actor_lr, critic_lr, alpha_lr: Adam learning rates; the actor's decays by a cosine over
                actor_cosine_steps updates (None: trainer.max_steps).
            model_rows: model transitions per SAC update; the datamodule's batch_size gives the real ones.
            rollout_every: updates between roll-out rounds.
            rollout_batch_size: roll-outs started per round.
            retain_rounds: roll-out rounds the model buffer holds.
            name: run name for logs/<name>/<dataset>/ (default "admpo_off" or "mopo").
        """
        super().__init__()
        if dynamics not in DYNAMICS_KINDS:
            raise OffrlError(f"model.dynamics must be one of {DYNAMICS_KINDS}, got {dynamics!r}")
        if penalty_form not in PENALTY_FORMS:
            raise OffrlError(f"model.penalty_form must be one of {PENALTY_FORMS}, got {penalty_form!r}")
        if max_window < 1 or (dynamics == "ensemble" and max_window != 1):
            raise OffrlError(f"model.max_window must be >= 1 (1 for the ensemble), got {max_window}")
        if ensemble_elites > ensemble_members:
            raise OffrlError(f"model.ensemble_elites ({ensemble_elites}) must not exceed ensemble_members ({ensemble_members})")
        if ensemble_weight_decay is not None:
            layers = len(ensemble_hidden_dims) + 1
            if dynamics != "ensemble" or len(ensemble_weight_decay) != layers or min(ensemble_weight_decay) < 0:
                raise OffrlError(
                    f"model.ensemble_weight_decay must be {layers} non-negative numbers (one per ensemble layer) with "
                    f"dynamics: ensemble, got {list(ensemble_weight_decay)} with dynamics: {dynamics}"
                )
        for name_, value in (("rollout_horizon", rollout_horizon), ("rollout_every", rollout_every),
                             ("rollout_batch_size", rollout_batch_size), ("retain_rounds", retain_rounds),
                             ("model_batch_size", model_batch_size), ("model_patience", model_patience)):
            if value < 1:
                raise OffrlError(f"model.{name_} must be a positive integer, got {value}")
        if model_rows < 0:
            raise OffrlError(f"model.model_rows must be >= 0, got {model_rows}")
        if not 0.0 <= model_improvement < 1.0:
            raise OffrlError(f"model.model_improvement must be in [0, 1) (a relative drop, e.g. 0.01), got {model_improvement}")
        check_td_settings(discount, tau)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.model_buffer = ModelBuffer(rollout_batch_size * rollout_horizon * retain_rounds)

    @property
    def algorithm_name(self) -> str:
        return self.hparams.name or ("admpo_off" if self.hparams.dynamics == "any_step" else "mopo")

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        self.build_networks(info, data_terminates=bool(transitions["next", "terminated"].any()))
        self.dynamics.fit_normalizers(transitions["observation"], transitions["action"])
        # Roll-outs start after m - 1 real steps of history: windows of m rows, the last row's state is the start.
        self.rollout_starts = window_starts(transitions["episode_last"], self.hparams.max_window)
        if len(self.rollout_starts) == 0:
            raise OffrlError(f"no episode of {info.dataset_id} is {self.hparams.max_window} steps long; lower model.max_window")

    def build_networks(self, info: DatasetInfo, data_terminates: bool = True) -> None:
        """The SAC agent, the dynamics model and the roll-outs' termination rule (an env without one is taken to
        never terminate only when its data shows no terminal state)."""
        hp = self.hparams
        obs_dim, action_dim = info.observation_dim, info.action_dim
        spec = info.eval_env_spec or info.env_spec
        self.terminated_fn = termination_fn(spec.id if spec is not None else None, data_terminates)
        self.agent = SACAgent(
            obs_dim, action_dim, info.action_low, info.action_high, list(hp.hidden_dims), hp.discount, hp.tau,
            hp.target_entropy, hp.init_alpha, hp.learn_alpha,
        )
        if hp.dynamics == "any_step":
            self.dynamics = AnyStepDynamics(
                obs_dim, action_dim, hp.model_hidden_dim, hp.model_gru_layers, hp.model_residual_blocks, hp.model_dropout
            )
        else:
            self.dynamics = EnsembleDynamics(obs_dim, action_dim, list(hp.ensemble_hidden_dims), hp.ensemble_members, hp.ensemble_elites, hp.ensemble_weight_decay)
        self.register_buffer("dynamics_trained", torch.tensor(False))

    def configure_optimizers(self):
        hp, groups = self.hparams, self.agent.parameter_groups()
        optimizers = [torch.optim.Adam(groups["critic"], lr=hp.critic_lr)]
        if groups["alpha"]:
            optimizers.append(torch.optim.Adam(groups["alpha"], lr=hp.alpha_lr))
        actor = torch.optim.Adam(groups["actor"], lr=hp.actor_lr)
        steps = hp.actor_cosine_steps or self.trainer.max_steps
        if steps is None or steps < 1:
            raise OffrlError("set trainer.max_steps or model.actor_cosine_steps: the actor's cosine schedule needs a length")
        return [*optimizers, actor], [torch.optim.lr_scheduler.CosineAnnealingLR(actor, steps)]

    # -- model -------------------------------------------------------------------------------------------

    def update_cadences(self) -> dict[str, int]:
        return {"model.rollout_every": self.hparams.rollout_every}

    def on_fit_start(self) -> None:
        if bool(self.dynamics_trained):
            return
        hp = self.hparams
        history = pretrain_dynamics(
            self.dynamics, self.datamodule.transitions.to(self.device), hp.max_window, hp.model_batch_size, hp.model_lr,
            hp.model_holdout_fraction, hp.model_max_holdout, hp.model_patience, hp.model_max_epochs,
            hp.model_updates_per_epoch, progress=self.trainer.is_global_zero, improvement=hp.model_improvement,
        )
        self.dynamics_trained.fill_(True)
        if self.logger is not None:
            for epoch, error in enumerate(history):
                self.logger.log_metrics({"model/holdout_mse": error}, step=epoch)

    @torch.no_grad()
    def rollout_round(self, transitions: TensorDict, starts: torch.Tensor, horizon: int) -> None:
        """Roll the current policy out in the model for `horizon` steps from rollout_batch_size real windows of
        `transitions` (first rows `starts`); add the model transitions to the buffer."""
        hp = self.hparams
        first = starts.to(transitions.device)
        first = first[torch.randint(len(first), (hp.rollout_batch_size,), device=first.device)]
        history = first[:, None] + torch.arange(hp.max_window - 1, device=first.device)
        rows = rollout(
            self.dynamics, lambda obs: self.agent.act(obs, deterministic=False),
            transitions["observation"][history], transitions["action"][history],
            transitions["observation"][first + hp.max_window - 1], horizon, self.terminated_fn,
            hp.penalty_coef, hp.penalty_form, hp.max_window,
        )
        metrics = {"rollout/reward": rows["next", "reward"].mean()}
        if "penalty" in rows.keys():
            metrics["rollout/penalty"] = rows["penalty"].mean()
        self.log_now(metrics)
        self.model_buffer.add(rows)

    # -- SAC ---------------------------------------------------------------------------------------------

    def refresh_model_data(self) -> None:
        """A roll-out round every rollout_every updates."""
        if self.global_step % self.hparams.rollout_every == 0:
            self.rollout_round(self.datamodule.transitions, self.rollout_starts, self.hparams.rollout_horizon)

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

    # -- checkpoints -------------------------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["model_buffer"] = self.model_buffer.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        if "model_buffer" in checkpoint:
            self.model_buffer.load_state_dict(checkpoint["model_buffer"], self.device)


class OnlineModelBasedSAC(ModelBasedSAC):
    """ADMPO-ON (`dynamics: any_step`) or MBPO (`dynamics: ensemble`): the same model, roll-outs and mixed SAC
    batches, online. offrl.callbacks.online.OnlineInteraction fills a ReplayDataModule (warm-up, then one env step
    per updates_per_step updates, ADMPO-ON's UTD 20); every `model_every` env steps the model is retrained on all
    the data so far (hold-out early stopping, continuing from its weights) and a roll-out round starts from real
    states, with the horizon ramped linearly from `min_rollout_horizon` to `rollout_horizon` between
    `horizon_ramp_start` and `horizon_ramp_end` env steps (MBPO's schedule). Online roll-outs are unpenalised
    (penalty_coef 0 in the configs); rollout_every is unused.
    """

    def __init__(
        self,
        model_every: int = 250,
        min_rollout_horizon: int = 1,
        horizon_ramp_start: int = 20000,
        horizon_ramp_end: int = 100000,
        **kwargs: Any,
    ):
        """
        Args:
            model_every: env steps between two model retrainings (each followed by a roll-out round).
            min_rollout_horizon: the roll-out horizon until horizon_ramp_start env steps.
            horizon_ramp_start, horizon_ramp_end: env steps over which the horizon grows to rollout_horizon.
            **kwargs: ModelBasedSAC's arguments (model, roll-outs, SAC).
        """
        super().__init__(**kwargs)
        if model_every < 1:
            raise OffrlError(f"model.model_every must be a positive integer, got {model_every}")
        if not 1 <= min_rollout_horizon <= self.hparams.rollout_horizon:
            raise OffrlError(f"model.min_rollout_horizon must lie in 1..rollout_horizon, got {min_rollout_horizon}")
        if horizon_ramp_end < horizon_ramp_start:
            raise OffrlError(f"model.horizon_ramp_end ({horizon_ramp_end}) must not precede horizon_ramp_start ({horizon_ramp_start})")
        self.model_env_steps = None  # env steps when the model was last trained

    @property
    def algorithm_name(self) -> str:
        return self.hparams.name or ("admpo_on" if self.hparams.dynamics == "any_step" else "mbpo")

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        # The replay buffer is still empty: the model's statistics come with its data, and an env without a
        # termination rule is refused (no data yet shows whether it terminates).
        self.build_networks(info)

    def update_cadences(self) -> dict[str, int]:
        return {}  # roll-outs follow env steps (model_every), not rollout_every

    def on_fit_start(self) -> None:
        """Nothing to pretrain on yet: the model trains as the data arrives."""

    def rollout_horizon_at(self, env_steps: int) -> int:
        hp = self.hparams
        span = max(hp.horizon_ramp_end - hp.horizon_ramp_start, 1)
        progress = min(max((env_steps - hp.horizon_ramp_start) / span, 0.0), 1.0)
        return int(hp.min_rollout_horizon + progress * (hp.rollout_horizon - hp.min_rollout_horizon))

    def refresh_model_data(self) -> None:
        hp, env_steps = self.hparams, self.datamodule.size
        if self.model_env_steps is not None and env_steps - self.model_env_steps < hp.model_every:
            return
        stored = self.datamodule.stored()
        self.dynamics.fit_normalizers(stored["observation"], stored["action"])
        history = pretrain_dynamics(
            self.dynamics, stored, hp.max_window, hp.model_batch_size, hp.model_lr, hp.model_holdout_fraction,
            hp.model_max_holdout, hp.model_patience, hp.model_max_epochs, hp.model_updates_per_epoch, progress=False,
            improvement=hp.model_improvement,
        )
        horizon = self.rollout_horizon_at(env_steps)
        self.rollout_round(stored, window_starts(stored["episode_last"], hp.max_window), horizon)
        self.model_env_steps = env_steps
        self.log_now({"model/holdout_mse": history[-1], "rollout/horizon": float(horizon)})

    def explore(self, observation: torch.Tensor) -> torch.Tensor:
        """The behaviour policy of online interaction: a sample of the policy."""
        return self.agent.act(observation, deterministic=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["model_env_steps"] = self.model_env_steps

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.model_env_steps = checkpoint.get("model_env_steps")
