"""LightningDataModules that sample batches on the training device from one device-resident TensorDict.

The DataLoader only yields step numbers; `on_after_batch_transfer` (which runs on the device) turns each one
into a batch by indexing the resident transitions with a per-rank seeded generator. So no transition crosses
the host-device boundary after the first copy, and every rank's sampler state is part of every checkpoint, as is
the loader's position in the epoch (a resumed epoch runs only its remaining steps).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import lightning as L
import torch
from tensordict import TensorDict
from torch.utils.data import DataLoader, IterableDataset

from offrl.data import registry
from offrl.data.windows import WINDOW_SEED_OFFSET, draw_windows, split_window_starts, window_batch
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError
from offrl.processes import gather_ranks, own_rank


class StepCounter(IterableDataset):
    """`length` placeholders per epoch (the real batch is drawn on the device). `position` is how many steps of the
    current epoch were trained on; an epoch started from a restored position yields only the steps left."""

    def __init__(self, length: int):
        self.length = length
        self.position = 0

    def __iter__(self):
        if self.position >= self.length:  # the last epoch ran to its end: a new one starts
            self.position = 0
        return iter(range(self.position, self.length))

    def __len__(self) -> int:
        return self.length


class StepLoader(DataLoader):
    """The loader of a StepCounter, resumable by Lightning (state_dict / load_state_dict: the epoch position).

    It has a generator of its own: each new iterator draws a seed from it, and a draw from the global RNG would
    shift every later random number of an algorithm by one at each epoch start, so that a run resumed from an
    end-of-epoch checkpoint (which skips the pending validation and its loader) would draw differently.
    """

    def __init__(self, steps: StepCounter):
        super().__init__(steps, batch_size=None, generator=torch.Generator())

    def state_dict(self) -> dict[str, int]:
        return {"position": self.dataset.position}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.dataset.position = int(state_dict["position"])


class TransitionDataModule(L.LightningDataModule):
    """Uniformly sampled transitions (s, a, r, s', terminated)."""

    def __init__(
        self,
        dataset_id: str,
        batch_size: int = 256,
        steps_per_epoch: int = 5000,
        seed: int = 0,
        env_id: str | None = None,
        generate_steps: int | None = None,
        generate_episodes: int | None = None,
    ):
        """
        Args:
            dataset_id: a Minari id; `offrl/` ids are generated when missing.
            batch_size: transitions per update.
            steps_per_epoch: updates between two evaluations (one Lightning epoch).
            seed: sampler seed; rank r samples with seed + r.
            env_id: Gymnasium env id for evaluation when the dataset recorded none.
            generate_steps: size of a missing `offrl/` dataset (default: the recipe's full size).
            generate_episodes: the same, in episodes.
        """
        super().__init__()
        for name, value in (("batch_size", batch_size), ("steps_per_epoch", steps_per_epoch)):
            if value <= 0:
                raise OffrlError(f"data.{name} must be a positive integer, got {value}")
        self.save_hyperparameters()
        self.dataset_id = dataset_id
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.updates_per_step = 1  # batches handed to each training step (set by the UpdateLoop callback)
        self.seed = seed
        self.env_id = env_id
        self.transitions: TensorDict | None = None
        self._resident = False  # transitions copied to the training device
        self.info: DatasetInfo | None = None
        self.generator: torch.Generator | None = None
        self._generator_state: torch.Tensor | None = None  # restored before the device is known
        self.train_steps: StepCounter | None = None  # the training loader's epoch position

    # -- loading -----------------------------------------------------------------------------------------

    def prepare_data(self) -> None:
        # Runs on one process: generate a missing offrl/ dataset once, before the ranks load it.
        if self.dataset_id.startswith("offrl/") and not registry.minari_io.dataset_path(self.dataset_id).exists():
            registry.generate(
                self.dataset_id, steps=self.hparams.generate_steps, episodes=self.hparams.generate_episodes, seed=self.seed
            )

    def setup(self, stage: str | None = None) -> None:
        if self.transitions is not None:
            return
        self.transitions, self.info = registry.load(
            self.dataset_id, self.hparams.generate_steps, self.hparams.generate_episodes, self.seed
        )
        if self.env_id is not None:
            import gymnasium as gym

            try:
                self.info.eval_env_spec = gym.spec(self.env_id)
            except gym.error.Error as err:
                raise OffrlError(f"data.env_id {self.env_id!r} is not a registered Gymnasium env ({err})") from None
        rows = self.transitions.batch_size[0]
        if self.batch_size > rows:
            self.say(
                f"data.batch_size {self.batch_size} is larger than the {rows} transitions of {self.dataset_id}, so every "
                "batch repeats transitions (they are drawn with replacement); a smaller batch is the usual choice"
            )
        self.say_actions_outside_the_box()
        self.prepare_transitions(self.transitions)

    def say_actions_outside_the_box(self) -> None:
        """Data from elsewhere may hold actions the env would clip: policies bounded to the box (tanh) cannot
        reproduce them, so the user hears of it once, with how far they reach."""
        actions = self.transitions["action"]
        low = torch.tensor(self.info.action_low, dtype=actions.dtype).reshape(1, -1)
        high = torch.tensor(self.info.action_high, dtype=actions.dtype).reshape(1, -1)
        if low.shape[-1] != actions.shape[-1]:
            return
        beyond = torch.maximum(low - actions, actions - high).amax(-1)  # > 0 where a row leaves the box
        outside = int((beyond > 1e-6).sum())
        if outside:
            self.say(
                f"{outside} of the {len(actions)} actions of {self.dataset_id} lie outside the env's action box "
                f"(by up to {float(beyond.max()):.3g}); training uses them as they are, while offrl's policies act inside it"
            )

    def say(self, sentence: str) -> None:
        """One line to the user, from the first process only."""
        if self.trainer is None or self.trainer.is_global_zero:
            print(f"offrl: {sentence}", file=sys.stderr)

    def prepare_transitions(self, transitions: TensorDict) -> None:
        """Per-module precomputation on the CPU transitions (indices, returns); none for plain transitions."""

    # -- sampling ----------------------------------------------------------------------------------------

    def train_dataloader(self) -> DataLoader:
        self.train_steps = StepCounter(self.steps_per_epoch // self.updates_per_step)
        return StepLoader(self.train_steps)

    def val_dataloader(self) -> DataLoader:
        # Evaluation is environment roll-outs (EvaluationCallback); the loop needs one placeholder batch.
        return StepLoader(StepCounter(1))

    test_dataloader = val_dataloader

    def _device_setup(self, device: torch.device) -> None:
        if self.transitions.device != device or not self._resident:
            # On the CPU too a plain in-memory copy: memory-mapped tensors index through a slow Python override.
            self.transitions = self.transitions.to(device) if self.transitions.device != device else self.transitions.clone()
            self._resident = True
        if self.generator is None or self.generator.device != device:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(self.seed + rank)
            if self._generator_state is not None:
                self.generator.set_state(self._generator_state)
                self._generator_state = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and not self.trainer.training:
            return batch
        if isinstance(batch, int) and self.train_steps is not None:
            self.train_steps.position = batch + 1  # this step of the epoch is being trained on
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        self._device_setup(device)
        if self.updates_per_step == 1:
            return self.sample(self.batch_size)
        return [self.sample(self.batch_size) for _ in range(self.updates_per_step)]

    def random_indices(self, size: int, high: int | torch.Tensor) -> torch.Tensor:
        """Uniform integers in [0, high) on the device (high may be a tensor of per-row bounds)."""
        device = self.transitions.device
        u = torch.rand(size, generator=self.generator, device=device)
        return (u * high).long()

    def sample(self, batch_size: int, num_transitions: int | None = None) -> TensorDict:
        """A uniform batch; from the first `num_transitions` transitions only when given (a data subset)."""
        return self.transitions[self.random_indices(batch_size, num_transitions or self.transitions.batch_size[0])]

    # -- checkpointing -----------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        # Each rank samples its own stream; a state restored but not yet applied (no batch since) is still the state.
        state = self.generator.get_state() if self.generator is not None else self._generator_state
        return {"generators": gather_ranks(state)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict.get("generators") or {"world_size": 1, "ranks": [state_dict.get("generator")]}
        fitting = self.trainer is None or self.trainer.state.fn == "fit"
        # Only training samples: validate / test on another number of processes need no sampler state.
        self._generator_state = own_rank(saved, self.trainer) if fitting else None
        self.generator = None


@dataclass(frozen=True)
class GoalMix:
    """Where relabelled goals come from: shares drawn from the future of the same episode (uniformly, or at an offset
    ~ Geometric(1 - geometric_discount)), from any state of the dataset, and the next state itself."""

    future: float
    random: float
    current: float
    geometric_discount: float | None

    def check(self, prefix: str) -> GoalMix:
        shares = (self.future, self.random, self.current)
        if min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-6:
            raise OffrlError(
                f"data.{prefix}future_goal_prob + {prefix}random_goal_prob + {prefix}current_goal_prob must be non-negative and sum to 1, got {shares}"
            )
        if self.geometric_discount is not None and not 0.0 < self.geometric_discount < 1.0:
            raise OffrlError(f"data.{prefix}geometric_discount must lie in (0, 1), got {self.geometric_discount}")
        return self


class HindsightDataModule(TransitionDataModule):
    """Transitions with a relabelled goal: a future state of the same episode, a random state, or the current one.

    Goals live in the dataset's achieved-goal space (the observation itself on datasets without goals).
    `goal_reached` marks the goal being the very next state, the sparse reward of goal-conditioned RL.

    Batch keys: `goal` (the value goal), `goal_index`, ("next", "goal_reached"); with an actor goal mix of its own
    (actor_future_goal_prob given), also `actor_goal`, which an actor reads instead of `goal` (OGBench's GCDataset
    draws value and actor goals apart).
    """

    def __init__(
        self,
        dataset_id: str,
        future_goal_prob: float = 1.0,
        random_goal_prob: float = 0.0,
        current_goal_prob: float = 0.0,
        geometric_discount: float | None = None,
        actor_future_goal_prob: float | None = None,
        actor_random_goal_prob: float = 0.0,
        actor_current_goal_prob: float = 0.0,
        actor_geometric_discount: float | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            dataset_id, **kwargs: TransitionDataModule's (batch_size, steps_per_epoch, seed, env_id, generate_*).
            future_goal_prob: share of goals drawn from the future of the same episode.
            random_goal_prob: share drawn from any state of the dataset.
            current_goal_prob: share equal to the next state itself.
            geometric_discount: draw future goals at offset ~ Geometric(1 - discount) instead of uniformly.
            actor_future_goal_prob, actor_random_goal_prob, actor_current_goal_prob, actor_geometric_discount: the
                actor goals' own mix (`actor_goal`); None: the actor is trained on the value goals.
        """
        super().__init__(dataset_id, **kwargs)
        self.goal_mix = GoalMix(future_goal_prob, random_goal_prob, current_goal_prob, geometric_discount).check("")
        self.actor_goal_mix = None
        if actor_future_goal_prob is not None:
            self.actor_goal_mix = GoalMix(actor_future_goal_prob, actor_random_goal_prob, actor_current_goal_prob,
                                          actor_geometric_discount).check("actor_")

    @property
    def goal_key(self) -> tuple[str, str]:
        return ("next", "achieved_goal") if "achieved_goal" in self.transitions.keys() else ("next", "observation")

    def prepare_transitions(self, transitions: TensorDict) -> None:
        # A goal-conditioned policy needs the evaluation env's goal: refused at setup, not at the first evaluation.
        if "desired_goal" not in transitions.keys():
            raise OffrlError(
                f"data {type(self).__name__} trains goal-conditioned policies, but {self.dataset_id} has no goals "
                "(no achieved_goal / desired_goal); use offrl.data.datamodules.TransitionDataModule for a reward dataset"
            )

    def sample_goal_indices(self, indices: torch.Tensor, num_transitions: int | None = None, mix: GoalMix | None = None) -> torch.Tensor:
        """For each transition index, the index whose next state is its goal, drawn by `mix` (default: the value
        goals'); random goals from the first `num_transitions` transitions when given."""
        mix = mix or self.goal_mix
        last = self.transitions["episode_last"][indices]
        remaining = last - indices + 1  # future states i..last, counted by the transition that reaches them
        if mix.geometric_discount is None:
            future = indices + self.random_indices(len(indices), remaining)
        else:
            u = torch.rand(len(indices), generator=self.generator, device=indices.device).clamp_min(1e-12)
            offset = torch.floor(torch.log(u) / math.log(mix.geometric_discount)).long()
            future = indices + torch.minimum(offset, remaining - 1)
        random = self.random_indices(len(indices), num_transitions or self.transitions.batch_size[0])
        choice = torch.rand(len(indices), generator=self.generator, device=indices.device)
        goal_indices = torch.where(choice < mix.future, future, indices)
        return torch.where((choice >= mix.future) & (choice < mix.future + mix.random), random, goal_indices)

    def sample(self, batch_size: int, num_transitions: int | None = None) -> TensorDict:
        indices = self.random_indices(batch_size, num_transitions or self.transitions.batch_size[0])
        goal_indices = self.sample_goal_indices(indices, num_transitions)
        batch = self.transitions[indices]
        batch["goal"] = self.transitions[self.goal_key][goal_indices]
        batch["goal_index"] = goal_indices
        batch["next", "goal_reached"] = goal_indices == indices
        if self.actor_goal_mix is not None:
            batch["actor_goal"] = self.transitions[self.goal_key][self.sample_goal_indices(indices, num_transitions, self.actor_goal_mix)]
        return batch


class SkipStepDataModule(HindsightDataModule):
    """Batches for recursive skip-step planning (RSP): hindsight goals or returns-to-go, plus sub-goal targets.

    `scales` are the skip steps k, strictly increasing (e.g. [16, 32]); the planner predicts them coarse to fine,
    so every per-scale row of a batch is ordered by `plan_scales` (largest k first). Extra keys in a batch:

        subgoal_deltas  [B, depth, obs_dim]  s_{min(t+k, T)} - s_t, clamped to the episode's last state s_T
                                             (the final next-observation of the episode); row d is plan_scales[d]
        subgoal_index   [B, depth]           flat index i whose ("next", "observation") is that future state
        condition       [B, C]               what the planner is conditioned on: on goal datasets the relabelled
                                             goal (= batch["goal"]), on reward datasets batch["average_rtg"]

    The transitions gain `index` [N] (each row's own flat index, so a batch knows where its rows came from).
    Reward datasets (no achieved_goal) also carry `average_rtg` [N, 1] in the transitions: the RvS average
    return-to-go RTG_t / (H - t), t the 0-based step, RTG_t the return from step t to the episode's end and H
    the horizon (the evaluation env's time limit, else the longest episode), as RSP_JAX and RvS define it.
    Their batches are uniform transitions (no relabelling: the condition belongs to the transition).
    """

    def __init__(
        self,
        dataset_id: str,
        scales: Sequence[int] = (32,),
        rtg_horizon: int | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            dataset_id, **kwargs: HindsightDataModule's (goal relabelling) and TransitionDataModule's.
            scales: skip steps k of the planner's levels, strictly increasing (depth = len(scales)).
            rtg_horizon: H of the average return-to-go on reward datasets; default the evaluation env's
                time limit, else the longest episode of the dataset.
        """
        super().__init__(dataset_id, **kwargs)
        scales = [int(k) for k in scales]
        if not scales or min(scales) < 1 or any(b <= a for a, b in pairwise(scales)):
            raise OffrlError(f"data.scales must be a non-empty list of strictly increasing positive integers, got {scales}")
        if rtg_horizon is not None and rtg_horizon < 1:
            raise OffrlError(f"data.rtg_horizon must be a positive integer, got {rtg_horizon}")
        self.scales = scales
        self.plan_scales = sorted(scales, reverse=True)  # coarse to fine: the order of every per-scale row
        self.rtg_horizon = rtg_horizon
        self.plan_offsets = torch.tensor(self.plan_scales) - 1  # s_{t+k} is the next observation of row t+k-1

    @property
    def goal_conditioned(self) -> bool:
        return "achieved_goal" in self.transitions.keys()

    @property
    def condition_key(self) -> str | tuple[str, str]:
        """The transitions' key the condition comes from (relabelled on goal datasets)."""
        return self.goal_key if self.goal_conditioned else "average_rtg"

    @property
    def condition_dim(self) -> int:
        return self.transitions[self.condition_key].shape[-1]

    def prepare_transitions(self, transitions: TensorDict) -> None:
        transitions["index"] = torch.arange(transitions.batch_size[0])  # lets a batch find its rows' futures
        lengths = (transitions["step"][transitions["episode_last"].unique()] + 1)
        short = int((lengths < self.plan_scales[0]).sum())
        if 2 * short > len(lengths):
            self.say(
                f"{short} of the {len(lengths)} episodes of {self.dataset_id} are shorter than the largest skip step "
                f"{self.plan_scales[0]} of data.scales, so most of its sub-goal targets are an episode's last state; "
                "smaller scales suit this data better"
            )
        if "achieved_goal" in transitions.keys():
            return
        step, last = transitions["step"], transitions["episode_last"]
        longest = int((step + 1).max())
        if self.rtg_horizon is None:
            spec = self.info.eval_env_spec
            limit = spec.max_episode_steps if spec is not None else None
            self.rtg_horizon = limit if limit is not None and limit >= longest else longest
        if self.rtg_horizon < longest:
            raise OffrlError(
                f"data.rtg_horizon {self.rtg_horizon} is shorter than the longest episode of {self.dataset_id} "
                f"({longest} steps); set it to at least {longest}"
            )
        # RTG_t = sum of rewards from t to the episode's last step, from one cumulative sum (float64 for 2M steps).
        cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), transitions["next", "reward"].double().cumsum(0)])
        return_to_go = cumulative[last + 1] - cumulative[transitions["index"]]
        transitions["average_rtg"] = (return_to_go / (self.rtg_horizon - step)).float().unsqueeze(-1)

    def subgoal_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """[n, depth]: for each transition and each k in plan_scales, the index whose next observation is s_{min(t+k, T)}."""
        last = self.transitions["episode_last"][indices]
        return torch.minimum(indices[:, None] + self.plan_offsets.to(indices.device), last[:, None])

    def subgoal_deltas(self, indices: torch.Tensor) -> torch.Tensor:
        """[n, depth, obs_dim]: s_{min(t+k, T)} - s_t for each k in plan_scales."""
        future = self.transitions["next", "observation"][self.subgoal_indices(indices)]
        return future - self.transitions["observation"][indices][:, None]

    def sample(self, batch_size: int) -> TensorDict:
        if self.goal_conditioned:
            batch = super().sample(batch_size)
            batch["condition"] = batch["goal"]
        else:
            batch = self.transitions[self.random_indices(batch_size, self.transitions.batch_size[0])]
            batch["condition"] = batch["average_rtg"]
        future = self.subgoal_indices(batch["index"])
        batch["subgoal_index"] = future
        batch["subgoal_deltas"] = self.transitions["next", "observation"][future] - batch["observation"][:, None]
        return batch

    def _device_setup(self, device: torch.device) -> None:
        super()._device_setup(device)
        self.plan_offsets = self.plan_offsets.to(device)


class AnyStepDataModule(TransitionDataModule):
    """Windows of k consecutive steps inside one episode, for fitting a dynamics model: ADM's any-step GRU
    (k in 1..max_window) or a one-step ensemble (max_window 1). Each batch has one k ~ U{1..max_window}, as
    the official ADMPO code draws it. A batch (offrl.data.windows.window_batch), shape [batch_size] or
    [members, batch_size] (one independent batch per ensemble member):

        observation     [*, obs_dim]          s_i, the window's first state
        window_actions  [*, k, action_dim]    a_i .. a_{i+k-1}
        target          [*, obs_dim + 1]      (s_{i+k} - s_i, r_{i+k-1})

    The hold-out set is the last min(holdout_fraction * N, max_holdout) transitions (no training window reaches
    into it). Validation yields, for each k in turn, every hold-out window of that k. Training epochs have
    steps_per_epoch updates (default N_train / batch_size * max_window, the official epoch).
    """

    def __init__(
        self,
        dataset_id: str,
        max_window: int = 1,
        members: int = 1,
        holdout_fraction: float = 0.2,
        max_holdout: int = 1000,
        batch_size: int = 256,
        steps_per_epoch: int | None = None,
        **kwargs: Any,
    ):
        """
        Args:
            dataset_id, batch_size, **kwargs: TransitionDataModule's (seed, env_id, generate_*).
            max_window: m, the longest window; k is drawn from 1..m for each batch.
            members: independent batches per update, one per ensemble member (1: a single model).
            holdout_fraction, max_holdout: the hold-out set, the last min(fraction * N, max) transitions.
            steps_per_epoch: updates per epoch (None: N_train / batch_size * max_window).
        """
        for name, value in (("max_window", max_window), ("members", members), ("max_holdout", max_holdout)):
            if value < 1:
                raise OffrlError(f"data.{name} must be a positive integer, got {value}")
        if not 0.0 < holdout_fraction < 1.0:
            raise OffrlError(f"data.holdout_fraction must lie in (0, 1), got {holdout_fraction}")
        super().__init__(dataset_id, batch_size=batch_size, steps_per_epoch=steps_per_epoch or 1, **kwargs)
        self.steps_per_epoch = steps_per_epoch  # None until the data is known
        self.max_window, self.members = max_window, members
        self.holdout_fraction, self.max_holdout = holdout_fraction, max_holdout
        self.train_starts: list[torch.Tensor] = []
        self.holdout_starts: list[torch.Tensor] = []
        # k is drawn on the host (a device draw would wait for the device at every batch), from its own stream.
        self.window_generator: torch.Generator | None = None
        self._window_generator_state: torch.Tensor | None = None

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return (self.members, self.batch_size) if self.members > 1 else (self.batch_size,)

    def prepare_transitions(self, transitions: TensorDict) -> None:
        self.train_starts, self.holdout_starts = split_window_starts(
            transitions["episode_last"], self.max_window, self.holdout_fraction, self.max_holdout
        )
        if self.steps_per_epoch is None:
            self.steps_per_epoch = max(len(self.train_starts[0]) // self.batch_size, 1) * self.max_window

    def val_dataloader(self) -> DataLoader:
        return StepLoader(StepCounter(self.max_window))  # step i: the hold-out windows of k = i + 1

    def _device_setup(self, device: torch.device) -> None:
        super()._device_setup(device)
        if self.train_starts[0].device != device:
            self.train_starts = [starts.to(device) for starts in self.train_starts]
            self.holdout_starts = [starts.to(device) for starts in self.holdout_starts]
        if self.window_generator is None:
            rank = self.trainer.global_rank if self.trainer is not None else 0
            self.window_generator = torch.Generator().manual_seed(WINDOW_SEED_OFFSET + self.seed + rank)
            if self._window_generator_state is not None:
                self.window_generator.set_state(self._window_generator_state)
                self._window_generator_state = None

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.trainer is not None and (self.trainer.validating or self.trainer.sanity_checking):
            self._device_setup(self.trainer.strategy.root_device)
            k = int(batch) + 1
            return window_batch(self.transitions, self.holdout_starts[k - 1], k)
        return super().on_after_batch_transfer(batch, dataloader_idx)

    def sample(self, batch_size: int) -> TensorDict:
        shape = (self.members, batch_size) if self.members > 1 else (batch_size,)
        return draw_windows(self.transitions, self.train_starts, shape, self.window_generator, self.generator)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        window_state = self.window_generator.get_state() if self.window_generator is not None else self._window_generator_state
        state["window_generators"] = gather_ranks(window_state)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        fitting = self.trainer is None or self.trainer.state.fn == "fit"
        saved = state_dict.get("window_generators")
        self._window_generator_state = own_rank(saved, self.trainer) if fitting and saved else None
        self.window_generator = None

