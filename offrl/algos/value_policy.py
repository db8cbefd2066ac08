"""Value learning x policy extraction (Park et al., "Is Value Learning Really the Main Bottleneck in Offline RL?",
arXiv 2406.09329). No official code exists; OGBench's agents by the same author (gciql, crl) are followed.

Value objectives (`value`): "sarsa", "iql", "crl" (goal tasks only), "td3"; one class each in
offrl.algos.value_objectives.
Policy extraction (`extraction`):
- "awr": maximise exp(temperature * A(s, a)) * log pi(a | s) on dataset actions, A = Q - V, with Q from the current
  critic (OGBench's gciql, `awr_critic: current`) or its Polyak target (IQL's official code and CORL,
  `awr_critic: target`).
- "ddpgbc": maximise Q(s, pi(s)) / sg(mean |Q|) minus alpha times a BC term (-log pi(a | s), or ||pi(s) - a||^2
  for a deterministic actor, which with alpha = 0.4 / action_dim is TD3+BC).
- "sfbc": fit pi by BC (a Gaussian whose std is always learned: it is the behaviour distribution the candidates
  are drawn from); act with the argmax-Q of N actions sampled from it.

Value and policy data can differ (the paper's data-scaling matrices): `value_data_fraction` and
`policy_data_fraction` train the critic/value and the actor on the first fraction of the dataset's episodes.

Goal tasks (the datamodule adds a relabelled `goal`, and `actor_goal` when the actor's goals have a mix of their
own, OGBench's split): every network also sees the goal (the actor its `actor_goal` when there is one), and the reward is
OGBench's gc_negative convention, r = 0 when the goal is reached (the next state is the goal) and -1 otherwise,
with the bootstrap cut at the goal. Reward tasks use the dataset's reward and terminations.

All losses are computed from the same parameters and back-propagated once (OGBench's single update), then the
critic, value and actor optimisers step and the target networks follow by Polyak averaging. The value objective
sets how often the actor and the targets update (TD3: every `td3_policy_delay` updates, as TD3 and TD3+BC do).

Reward tasks can take IQL's reward normalisation (`reward_normalization: return_range`: rewards times
1000 / (max - min episode return), as the IQL paper's and CORL's MuJoCo runs) and IQL's cosine decay of the actor
learning rate (`actor_cosine_steps`).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import nn

from offrl.algos.base import OfflineAlgorithm, check_td_settings, cosine_decay
from offrl.algos.value_objectives import VALUE_OBJECTIVES
from offrl.data.returns import return_range_factor
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError
from offrl.nn.action_bounds import clamp_action, from_unit_box, register_action_bounds
from offrl.nn.mlp import GaussianMLP, Normalizer, frozen, joined, mlp
from offrl.nn.optim import adam
from offrl.objectives.bc import gaussian_log_prob, gaussian_nll, mse
from offrl.objectives.extraction import awr_loss, ddpgbc_loss, sfbc_select

ACTOR_KINDS = ("gaussian", "tanh_mean_gaussian", "deterministic")
AWR_CRITICS = ("current", "target")
REWARD_NORMALIZATIONS = ("none", "return_range")


def episode_prefix_size(transitions: TensorDict, fraction: float) -> int:
    """Transitions in the smallest prefix of whole episodes that holds at least `fraction` of the dataset."""
    wanted = max(1, math.ceil(fraction * transitions.batch_size[0]))
    return int(transitions["episode_last"][wanted - 1]) + 1


class ValuePolicy(OfflineAlgorithm):
    progress_bar_loss = "critic_loss"

    def __init__(
        self,
        value: str = "iql",
        extraction: str = "ddpgbc",
        hidden_dims: Sequence[int] = (256, 256),
        layer_norm: bool = False,
        lr: float = 3e-4,
        discount: float = 0.99,
        tau: float = 0.005,
        expectile: float = 0.7,
        awr_temperature: float = 3.0,
        awr_max_weight: float = 100.0,
        awr_critic: str = "current",
        ddpgbc_alpha: float = 0.3,
        normalize_q: bool = True,
        sfbc_num_samples: int = 32,
        actor: str = "gaussian",
        learned_std: bool = True,
        repr_dim: int = 512,
        reward_scale: float = 1.0,
        reward_normalization: str = "none",
        normalize_observations: bool = True,
        target_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        td3_policy_delay: int = 2,
        actor_cosine_steps: int | None = None,
        value_data_fraction: float = 1.0,
        policy_data_fraction: float = 1.0,
        name: str | None = None,
    ):
        """
        Args:
            value: value objective, "sarsa", "iql", "crl" (goal tasks only) or "td3" (off-policy, target actor).
            extraction: policy extraction, "awr", "ddpgbc" or "sfbc".
            hidden_dims: widths of every MLP (critics, value, actor, CRL encoders).
            layer_norm: LayerNorm after every hidden layer (OGBench: on for goal tasks).
            lr: Adam learning rate of every network.
            discount: gamma.
            tau: Polyak rate of the target critic (SARSA, IQL, TD3) and target actor (TD3).
            expectile: IQL's expectile for V (SARSA's V, needed by AWR, uses 0.5: the behaviour's value).
            awr_temperature: AWR inverse temperature alpha in exp(alpha * A).
            awr_max_weight: cap on the AWR weights.
            awr_critic: the critic whose Q (min over the twins) AWR's advantage Q - V uses: "current" (OGBench's
                gciql) or "target", the Polyak-averaged one (IQL's official actor.py and CORL's iql.py).
            ddpgbc_alpha: weight of the BC term in DDPG+BC.
            normalize_q: divide the DDPG+BC Q term by sg(mean |Q|) (TD3+BC's normalisation).
            sfbc_num_samples: N, behaviour actions sampled per state by SfBC at act time.
            actor: "gaussian" (state-independent std; the mean is the MLP's output, clipped to the action
                bounds when acting: OGBench's actors), "tanh_mean_gaussian" (the same with the mean tanh-bounded
                inside the action box: IQL's official policy) or "deterministic" (tanh-bounded; DDPG+BC only).
            learned_std: learn the AWR / DDPG+BC Gaussian actor's std; false fixes it at 1 (OGBench's const_std),
                which makes the log-likelihood BC term a plain squared error on the mean. SfBC's behaviour policy
                always learns its std: its candidates are sampled from it.
            repr_dim: CRL representation size d.
            reward_scale: multiplies dataset rewards on reward tasks (after reward_normalization).
            reward_normalization: "none", or "return_range": multiply rewards by 1000 / (max - min episode return
                of the dataset), IQL's MuJoCo normalisation.
            normalize_observations: z-score observations and goals with dataset statistics (off on mazes).
            target_noise: TD3's target smoothing noise std, in units of the action half-range.
            target_noise_clip: TD3's clip on that noise, same units.
            td3_policy_delay: with value "td3", the actor and the target networks update every this many updates
                (TD3's policy delay d; 1 updates them at every critic update).
            actor_cosine_steps: decay the actor's learning rate to 0 by a cosine over this many updates, then hold
                it there (IQL); None keeps it constant. Set it explicitly: a shortened trainer.max_steps leaves it.
            value_data_fraction: share of the dataset's episodes (a prefix) the critic and value train on.
            policy_data_fraction: share of the dataset's episodes (a prefix) the actor trains on.
            name: run name for logs/<name>/<dataset>/ (default "<value>_<extraction>", e.g. "iql_ddpgbc").
        """
        super().__init__()
        if value not in VALUE_OBJECTIVES:
            raise OffrlError(f"model.value must be one of {tuple(VALUE_OBJECTIVES)}, got {value!r}")
        if extraction not in EXTRACTIONS:
            raise OffrlError(f"model.extraction must be one of {tuple(EXTRACTIONS)}, got {extraction!r}")
        if actor not in ACTOR_KINDS:
            raise OffrlError(f"model.actor must be one of {ACTOR_KINDS}, got {actor!r}")
        if awr_critic not in AWR_CRITICS:
            raise OffrlError(f"model.awr_critic must be one of {AWR_CRITICS}, got {awr_critic!r}")
        if actor == "deterministic" and extraction != "ddpgbc":
            raise OffrlError(f"model.extraction {extraction!r} needs action likelihoods; use model.actor gaussian")
        if lr <= 0:
            raise OffrlError(f"model.lr must be positive, got {lr}")
        check_td_settings(discount, tau)
        if not 0.0 < expectile < 1.0:
            raise OffrlError(f"model.expectile must lie in (0, 1), got {expectile}")
        for key, fraction in (("value_data_fraction", value_data_fraction), ("policy_data_fraction", policy_data_fraction)):
            if not 0.0 < fraction <= 1.0:
                raise OffrlError(f"model.{key} must lie in (0, 1], got {fraction}")
        if sfbc_num_samples < 1:
            raise OffrlError(f"model.sfbc_num_samples must be a positive integer, got {sfbc_num_samples}")
        if reward_normalization not in REWARD_NORMALIZATIONS:
            raise OffrlError(f"model.reward_normalization must be one of {REWARD_NORMALIZATIONS}, got {reward_normalization!r}")
        if td3_policy_delay < 1:
            raise OffrlError(f"model.td3_policy_delay must be a positive integer, got {td3_policy_delay}")
        if actor_cosine_steps is not None and actor_cosine_steps < 1:
            raise OffrlError(f"model.actor_cosine_steps must be a positive integer or null, got {actor_cosine_steps}")
        self.save_hyperparameters()
        self.value_objective = VALUE_OBJECTIVES[value](self.hparams)
        if extraction == "awr" and awr_critic == "target" and not self.value_objective.has_target_critic:
            raise OffrlError(f"model.awr_critic target needs a target critic and value {value!r} has none; use awr_critic current")

    @property
    def algorithm_name(self) -> str:
        return self.hparams.name or f"{self.hparams.value}_{self.hparams.extraction}"

    @property
    def needs_state_value(self) -> bool:
        """IQL always learns V; the others need it only for AWR's advantage."""
        return self.value_objective.learns_state_value or self.hparams.extraction == "awr"

    # -- networks ----------------------------------------------------------------------------------------

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        hp, objective = self.hparams, self.value_objective
        goal_dim = self.goal_dim()
        if objective.goals_only and not goal_dim:
            raise OffrlError("model.value crl is goal-conditioned only: use a HindsightDataModule on a goal dataset")
        obs_dim, action_dim, hidden = info.observation_dim, info.action_dim, list(hp.hidden_dims)

        self.observation_normalizer = Normalizer(obs_dim)
        self.goal_normalizer = Normalizer(goal_dim) if goal_dim else None
        if hp.normalize_observations:
            self.observation_normalizer.fit(transitions["observation"])
            if goal_dim:
                self.goal_normalizer.fit(transitions[self.datamodule.goal_key])

        self.critic, target_critic = objective.build_critic(obs_dim, goal_dim, action_dim, hidden)
        if target_critic is not None:
            self.target_critic = target_critic
        objective.prepare(transitions)
        reward_factor = hp.reward_scale
        if hp.reward_normalization == "return_range" and not goal_dim:
            reward_factor *= return_range_factor(transitions)
        self.register_buffer("reward_factor", torch.tensor(reward_factor, dtype=torch.float32))
        self.value_data_size = episode_prefix_size(transitions, hp.value_data_fraction)
        self.policy_data_size = episode_prefix_size(transitions, hp.policy_data_fraction)

        self.value_net = objective.build_value(obs_dim, goal_dim, hidden) if self.needs_state_value else None

        if hp.actor != "deterministic":
            mean_box = (info.action_low, info.action_high) if hp.actor == "tanh_mean_gaussian" else None
            self.actor = GaussianMLP(obs_dim + goal_dim, hidden, action_dim, hp.layer_norm, mean_box=mean_box)
            self.actor.log_std.requires_grad_(hp.learned_std or hp.extraction == "sfbc")
        else:
            self.actor = mlp(obs_dim + goal_dim, hidden, action_dim, hp.layer_norm)
        if objective.has_target_actor:
            self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        register_action_bounds(self, info.action_low, info.action_high)

    def configure_optimizers(self):
        networks = [self.critic, self.value_net, self.actor] if self.value_net is not None else [self.critic, self.actor]
        optimizers = [adam(network.parameters(), lr=self.hparams.lr) for network in networks]
        if self.hparams.actor_cosine_steps is None:
            return optimizers
        return optimizers, [cosine_decay(optimizers[-1], self.hparams.actor_cosine_steps)]

    # -- values ------------------------------------------------------------------------------------------

    def q_values(self, critic: nn.Module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a[, g]) of every ensemble member: [E, B]."""
        return self.value_objective.q_values(critic, obs, goal, action)

    def q_value(self, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """min over the twin critics: [B]."""
        return self.q_values(self.critic, obs, goal, action).min(0).values

    def action_value(self, observation: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a[, g]) from raw (unnormalised) observations and goals, min over the twins: [B]."""
        return self.q_value(*self.normalized_inputs(observation, goal), action)

    def state_value(self, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """V(s[, g]): [B]."""
        return self.value_objective.state_value(self.value_net, obs, goal)

    def reward_and_termination(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.get("goal") is not None:
            reached = batch["next", "goal_reached"].float()
            return reached - 1.0, reached
        return batch["next", "reward"] * self.reward_factor, batch["next", "terminated"]

    # -- actions -----------------------------------------------------------------------------------------

    def clip_action(self, action: torch.Tensor) -> torch.Tensor:
        return clamp_action(action, self.action_low, self.action_high)

    def policy_action(self, actor_input: torch.Tensor, actor: nn.Module | None = None) -> torch.Tensor:
        """The deterministic action of `actor` (default: the actor): the Gaussian mean clipped to the bounds, or
        the deterministic actor's tanh-bounded output."""
        actor = self.actor if actor is None else actor
        if self.hparams.actor != "deterministic":
            return self.clip_action(actor(actor_input)[0])
        unit = torch.tanh(actor(actor_input))
        return from_unit_box(unit, self.action_low, self.action_high)

    def normalized_inputs(self, observation: torch.Tensor, goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.observation_normalizer(observation), None if goal is None else self.goal_normalizer(goal)

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        obs, goal = self.normalized_inputs(observation, goal)
        if self.hparams.extraction == "sfbc":
            return sfbc_action(self, obs, goal)
        return self.policy_action(joined(obs, goal))

    # -- training ----------------------------------------------------------------------------------------

    def prepare_batch(self, batch: TensorDict) -> TensorDict:
        """With value/policy data fractions, the critic and the actor each train on a batch of their own share of
        the data: the value batch, with the policy batch under "policy" (drawn here, outside the update)."""
        if self.value_data_size == self.policy_data_size == len(self.datamodule.transitions):
            return batch
        sample = self.datamodule.sample
        value_batch = sample(len(batch), self.value_data_size)
        value_batch["policy"] = sample(len(batch), self.policy_data_size)
        return value_batch

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Every loss of one update, all from the current parameters."""
        objective = self.value_objective
        obs, goal = self.normalized_inputs(batch["observation"], batch.get("goal"))
        critic_loss, q = objective.critic_loss(self, batch, obs, goal)
        losses, v, target_q = {"critic_loss": critic_loss}, None, None
        if self.value_net is not None:
            losses["value_loss"], v, target_q = objective.value_loss(self, obs, goal, batch["action"])
        if not self.phase:
            return losses
        q = target_q if self.hparams.awr_critic == "target" else q
        if "policy" in batch.keys():  # the actor's own share of the data: no value of it is computed yet
            batch, q, v = batch["policy"], None, None
            obs, goal = self.normalized_inputs(batch["observation"], batch.get("goal"))
        if "actor_goal" in batch.keys():  # goals of the actor's own mix: its Q and V are taken at them
            obs, goal = self.normalized_inputs(batch["observation"], batch["actor_goal"])
            q, v = None, None
        losses["actor_loss"] = EXTRACTIONS[self.hparams.extraction](self, obs, goal, batch["action"], q, v)
        return losses

    def phase_at(self, update: int) -> bool:
        """Whether update `update` trains the actor (and moves the targets): always, except between TD3's delayed
        ones. One update graph with the actor's loss, one without."""
        return (update + 1) % self.value_objective.policy_delay() == 0  # TD3 counts its iterations from 1

    def after_optimizer_step(self) -> None:
        if self.phase:
            self.value_objective.update_targets(self)


# -- policy extraction: the actor's loss of each method, and SfBC's action ------------------------------------
# Each takes the actor's batch and, when the value losses ran on the same batch, what they computed of it: q, the
# Q(s, a[, g]) of every twin [E, B] of the critic AWR reads (model.awr_critic), and v, V(s[, g]) [B], detached (else
# None).


def awr_actor_loss(
    module: ValuePolicy, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor,
    q: torch.Tensor | None, v: torch.Tensor | None,
) -> torch.Tensor:
    """Advantage-weighted regression: maximise exp(temperature * (Q - V)) log pi(a | s) on dataset actions, Q from
    the critic `model.awr_critic` names, V the current value."""
    hp = module.hparams
    mean, log_std = module.actor(joined(obs, goal))
    log_prob = gaussian_log_prob(mean, log_std, action)
    with torch.no_grad():
        if q is None:
            critic = module.target_critic if hp.awr_critic == "target" else module.critic
            q = module.q_values(critic, obs, goal, action)
        v = module.state_value(obs, goal) if v is None else v
        advantage = q.min(0).values - v
    return awr_loss(log_prob, advantage, hp.awr_temperature, hp.awr_max_weight)


def ddpgbc_actor_loss(
    module: ValuePolicy, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor,
    q: torch.Tensor | None, v: torch.Tensor | None,
) -> torch.Tensor:
    """DDPG+BC: maximise Q(s, pi(s)) / sg(mean |Q|) minus alpha times a BC term (the Gaussian's -log pi(a | s), or
    a deterministic actor's ||pi(s) - a||^2), through a frozen critic."""
    hp, actor_input = module.hparams, joined(obs, goal)
    if hp.actor != "deterministic":
        mean, log_std = module.actor(actor_input)
        policy_action, bc_term = module.clip_action(mean), gaussian_nll(mean, log_std, action)
    else:
        policy_action = module.policy_action(actor_input)
        bc_term = mse(policy_action, action)
    with frozen(module.critic):
        q_pi = module.value_objective.actor_q(module, obs, goal, policy_action)
    return ddpgbc_loss(q_pi, bc_term, hp.ddpgbc_alpha, hp.normalize_q)


def sfbc_actor_loss(
    module: ValuePolicy, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor,
    q: torch.Tensor | None, v: torch.Tensor | None,
) -> torch.Tensor:
    """SfBC trains its behaviour policy by BC; the critic acts only at act time (sfbc_action)."""
    return gaussian_nll(*module.actor(joined(obs, goal)), action)


def sfbc_action(module: ValuePolicy, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
    """argmax-Q among N actions sampled from the BC policy."""
    num_samples = module.hparams.sfbc_num_samples
    mean, log_std = module.actor(joined(obs, goal))
    noise = torch.randn(mean.shape[0], num_samples, mean.shape[1], device=mean.device)
    candidates = module.clip_action(mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * noise)  # [B, N, A]
    repeated_goal = None if goal is None else goal.repeat_interleave(num_samples, 0)
    q = module.q_value(obs.repeat_interleave(num_samples, 0), repeated_goal, candidates.flatten(0, 1))
    return sfbc_select(candidates, q.view(-1, num_samples))


EXTRACTIONS = {"awr": awr_actor_loss, "ddpgbc": ddpgbc_actor_loss, "sfbc": sfbc_actor_loss}
