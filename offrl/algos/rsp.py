"""RSP, recursive skip-step planning (arXiv 2412.11253; official JAX code imoneoi/RSP_JAX).

One Gaussian MLP per skip scale k predicts the change s_{t+k} - s_t, coarse to fine: the largest k from
(s, condition) alone, each finer k also from the coarser predictions. The policy, the same kind of MLP, acts
on (s, condition, all sub-goals). The condition is the goal on goal tasks and the RvS average return-to-go on
reward tasks (a fixed normalised target return at evaluation). Every network is trained by Gaussian NLL;
finer levels and the policy see the TRUE coarser deltas plus noise at the coarser models' learned std.

Training, set by `training`:
- "stagewise" (RSP_JAX): `steps_per_stage` updates of the coarsest level, then of each finer one, then of the
  policy; each stage has its own cosine-decayed learning rate. Total (depth + 1) * steps_per_stage updates.
- "joint": every level and the policy in one summed loss for steps_per_stage updates (the levels meet only
  through the detached noise scales), so each network gets as many updates as in stagewise training.
Stage-wise training leaves the other levels without gradients; under DDP use
`--trainer.strategy ddp_find_unused_parameters_true`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict

from offrl.algos.base import OfflineAlgorithm
from offrl.data.datamodules import SkipStepDataModule
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError
from offrl.nn.action_bounds import clamp_action, register_action_bounds
from offrl.nn.init import orthogonal_init_
from offrl.nn.mlp import GaussianMLP, Normalizer
from offrl.nn.optim import adam
from offrl.objectives.rsp import noisy_subgoals, planner_losses

TRAINING_MODES = ("stagewise", "joint")
LR_SCHEDULES = ("cosine", "constant")


def gaussian_mlp(in_dim: int, hidden_dims: Sequence[int], out_dim: int) -> GaussianMLP:
    """RSP_JAX's MLPNormal: ReLU MLP, orthogonal init (gain sqrt 2, zero bias), state-independent log-std (init 0)."""
    return orthogonal_init_(GaussianMLP(in_dim, hidden_dims, out_dim))


class RSP(OfflineAlgorithm):
    algorithm_name = "rsp"
    progress_bar_loss = "policy_nll"

    def __init__(
        self,
        hidden_dims: Sequence[int] = (1024, 1024),
        lr: float = 1e-3,
        lr_schedule: str = "cosine",
        training: str = "stagewise",
        steps_per_stage: int = 20000,
        normalize_observations: bool = True,
        target_return: float | None = None,
        sample_actions: bool = False,
        noise_scale: float = 1.0,
    ):
        """
        Args:
            hidden_dims: widths of every MLP (each sub-goal model and the policy).
            lr: Adam learning rate at the start of each stage.
            lr_schedule: "cosine" (decay to 0 over each stage) or "constant".
            training: "stagewise" (coarse -> fine -> policy, the official recipe) or "joint" (one summed loss).
            steps_per_stage: updates per stage (stagewise) or in all (joint); trainer.max_steps must match.
            normalize_observations: z-score observations, the condition and the sub-goal deltas with dataset
                statistics (RSP_JAX: on for MuJoCo/Adroit/Kitchen, off on mazes).
            target_return: reward tasks only: the D4RL-normalised return (x100) the policy is asked for at
                evaluation, e.g. 90 for hopper-medium; converted to an average return-to-go with the dataset's
                reference scores and the horizon of `data.rtg_horizon`.
            sample_actions: act with a sample of the policy instead of its mean (RSP_JAX samples on AntMaze).
            noise_scale: the conditioning sub-goals of finer levels and the policy are the true deltas plus
                noise_scale times the coarser model's learned std (RSP_JAX: 1; 0 trains on clean true deltas).
        """
        super().__init__()
        if lr <= 0:
            raise OffrlError(f"model.lr must be positive, got {lr}")
        if lr_schedule not in LR_SCHEDULES:
            raise OffrlError(f"model.lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if training not in TRAINING_MODES:
            raise OffrlError(f"model.training must be one of {TRAINING_MODES}, got {training!r}")
        if steps_per_stage < 1:
            raise OffrlError(f"model.steps_per_stage must be a positive integer, got {steps_per_stage}")
        if not hidden_dims or min(hidden_dims) < 1:
            raise OffrlError(f"model.hidden_dims must be a non-empty list of positive widths, got {list(hidden_dims)}")
        if not noise_scale >= 0:
            raise OffrlError(f"model.noise_scale must be zero or positive, got {noise_scale}")
        if target_return is not None and not math.isfinite(target_return):
            raise OffrlError(f"model.target_return must be a finite number, got {target_return}")
        self.save_hyperparameters()

    # -- networks ----------------------------------------------------------------------------------------

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        datamodule = self.datamodule
        if not isinstance(datamodule, SkipStepDataModule):
            raise OffrlError(f"RSP needs data.class_path offrl.data.datamodules.SkipStepDataModule, got {type(datamodule).__name__}")
        self.build_planner(
            datamodule.plan_scales, info.observation_dim, datamodule.condition_dim, info.action_dim,
            info.action_low, info.action_high, datamodule.goal_conditioned,
        )
        if self.hparams.normalize_observations:
            condition = transitions[datamodule.condition_key]
            self.input_normalizer.fit(torch.cat([transitions["observation"], condition], -1))
            self.fit_delta_normalizer(datamodule, transitions.batch_size[0])
        if not self.goal_conditioned:
            self.register_buffer("target_condition", self.average_rtg_target(info, datamodule.rtg_horizon))

    def build_planner(
        self,
        plan_scales: Sequence[int],
        obs_dim: int,
        condition_dim: int,
        action_dim: int,
        action_low: Sequence[float],
        action_high: Sequence[float],
        goal_conditioned: bool,
    ) -> None:
        """The networks, identity normalisers and buffers for these sizes (scales coarse to fine); `build` then
        fits the normalisers. Benchmarks call it directly to time or probe a planner without a trainer."""
        self.plan_scales = list(plan_scales)
        self.depth = len(self.plan_scales)
        self.goal_conditioned = goal_conditioned
        self.obs_dim = obs_dim
        hidden = list(self.hparams.hidden_dims)
        state_dim = obs_dim + condition_dim  # what every network sees first: (s, condition)
        # Level d predicts the delta of plan_scales[d] from (s, condition, the d coarser predictions).
        self.subgoal_models = torch.nn.ModuleList(
            gaussian_mlp(state_dim + level * obs_dim, hidden, obs_dim) for level in range(self.depth)
        )
        self.policy = gaussian_mlp(state_dim + self.depth * obs_dim, hidden, action_dim)
        self.input_normalizer = Normalizer(state_dim)
        self.delta_normalizer = Normalizer(self.depth * obs_dim)  # flattened [depth, obs_dim]
        # Buffers: everything `act` needs, so that a checkpoint restores the planner exactly.
        self.register_buffer("scales", torch.tensor(self.plan_scales))
        register_action_bounds(self, action_low, action_high)

    @torch.no_grad()
    def fit_delta_normalizer(self, datamodule: SkipStepDataModule, size: int, chunk: int = 1 << 18) -> None:
        """Mean and std of every sub-goal delta in the dataset (RSP_JAX z-scores them per scale and dimension)."""
        total = torch.zeros(self.delta_normalizer.mean.shape, dtype=torch.float64)
        squares = torch.zeros_like(total)
        for start in range(0, size, chunk):
            deltas = datamodule.subgoal_deltas(torch.arange(start, min(start + chunk, size))).flatten(1).double()
            total += deltas.sum(0)
            squares += (deltas**2).sum(0)
        mean = total / size
        variance = (squares / size - mean**2).clamp_min(0) * size / max(size - 1, 1)
        self.delta_normalizer.mean.copy_(mean.float())
        self.delta_normalizer.std.copy_(variance.sqrt().float().clamp_min(1e-3))

    def average_rtg_target(self, info: DatasetInfo, horizon: int) -> torch.Tensor:
        """The evaluation condition of reward tasks: the return of `target_return` (D4RL-normalised) / horizon."""
        target = self.hparams.target_return
        if target is None:
            raise OffrlError(
                f"model.target_return must be set for the reward dataset {info.dataset_id} (a D4RL-normalised return such as 90)"
            )
        if info.ref_min_score is None or info.ref_max_score is None:
            raise OffrlError(
                f"dataset {info.dataset_id} has no reference scores to turn model.target_return into a return; use a dataset that records them"
            )
        episode_return = info.ref_min_score + target / 100.0 * (info.ref_max_score - info.ref_min_score)
        return torch.tensor([episode_return / horizon], dtype=torch.float32)

    # -- the planner -------------------------------------------------------------------------------------

    def state_inputs(self, observation: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return self.input_normalizer(torch.cat([observation, condition], -1))

    def level_inputs(self, state: torch.Tensor, subgoals: torch.Tensor, level: int) -> torch.Tensor:
        """Inputs of level `level` (== depth for the policy): the state and the `level` coarsest sub-goals."""
        return torch.cat([state, subgoals[:, :level].flatten(1)], -1)

    def normalize_deltas(self, deltas: torch.Tensor) -> torch.Tensor:
        return self.delta_normalizer(deltas.flatten(1)).view_as(deltas)

    def subgoal_log_stds(self) -> torch.Tensor:
        """[depth, obs_dim]: each sub-goal model's learned log-std (in normalised delta units)."""
        return torch.stack([model.log_std.clamp(*model.log_std_bounds) for model in self.subgoal_models])

    def plan_normalized(self, state: torch.Tensor) -> torch.Tensor:
        """[B, depth, obs_dim] predicted sub-goal deltas (normalised), coarse to fine, each from the coarser means."""
        subgoals = state.new_zeros(state.shape[0], 0, self.obs_dim)
        for level, model in enumerate(self.subgoal_models):
            mean = model(self.level_inputs(state, subgoals, level))[0]
            subgoals = torch.cat([subgoals, mean[:, None]], 1)
        return subgoals

    def condition(self, observation: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        if self.goal_conditioned:
            if goal is None:
                raise OffrlError("this RSP planner was trained on a goal dataset: act() needs a goal")
            return goal
        return self.target_condition.expand(observation.shape[0], -1)

    def plan(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        """[B, depth, obs_dim] the planned sub-goal states s + delta (coarse to fine), in observation space."""
        subgoals = self.plan_normalized(self.state_inputs(observation, self.condition(observation, goal)))
        deltas = (subgoals.flatten(1) * self.delta_normalizer.std + self.delta_normalizer.mean).view_as(subgoals)
        return observation[:, None] + deltas

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        state = self.state_inputs(observation, self.condition(observation, goal))
        subgoals = self.plan_normalized(state)
        mean, log_std = self.policy(self.level_inputs(state, subgoals, self.depth))
        action = mean + log_std.exp() * torch.randn_like(mean) if self.hparams.sample_actions else mean
        return clamp_action(action, self.action_low, self.action_high)

    # -- training ----------------------------------------------------------------------------------------

    @property
    def total_steps(self) -> int:
        stages = self.depth + 1 if self.hparams.training == "stagewise" else 1
        return stages * self.hparams.steps_per_stage

    def phase_at(self, update: int) -> int:
        """Stagewise: the level update `update` trains (depth = the policy), one update graph per stage; joint: -1,
        every level at once."""
        if self.hparams.training == "joint":
            return -1
        return min(update // self.hparams.steps_per_stage, self.depth)

    def on_fit_start(self) -> None:
        if self.trainer.max_steps != self.total_steps:
            raise OffrlError(
                f"trainer.max_steps must be {self.total_steps} for {self.hparams.training} training of {self.depth} "
                f"scale(s) with model.steps_per_stage {self.hparams.steps_per_stage}, got {self.trainer.max_steps}"
            )

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        state = self.state_inputs(batch["observation"], batch["condition"])
        targets = self.normalize_deltas(batch["subgoal_deltas"])
        conditioning = noisy_subgoals(targets, self.subgoal_log_stds(), self.hparams.noise_scale)
        outputs = {}
        stage = self.phase
        for level in range(self.depth + 1) if stage < 0 else [stage]:
            model = self.subgoal_models[level] if level < self.depth else self.policy
            outputs[level] = model(self.level_inputs(state, conditioning, level))
        return planner_losses(outputs, targets, batch["action"], self.plan_scales)

    def configure_optimizers(self):
        # One Adam over every parameter: a stage's loss reaches only its own network, and Adam skips parameters
        # without gradients, so each network's moments start fresh at its stage, as with one optimiser per stage.
        optimizer = adam(self.parameters(), lr=self.hparams.lr)
        steps, schedule = self.hparams.steps_per_stage, self.hparams.lr_schedule

        def lr_factor(step: int) -> float:
            if schedule == "constant":
                return 1.0
            progress = (step % steps) / steps if self.hparams.training == "stagewise" else min(step, steps) / steps
            return 0.5 * (1.0 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        saved = checkpoint["state_dict"].get("scales")
        if saved is not None and saved.tolist() != self.plan_scales:
            raise OffrlError(
                f"checkpoint was trained with data.scales {sorted(saved.tolist())} but this run has {sorted(self.plan_scales)}; use the same scales"
            )
