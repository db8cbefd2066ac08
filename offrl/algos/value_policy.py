"""Value learning x policy extraction (Park et al., "Is Value Learning Really the Main Bottleneck in Offline RL?",
arXiv 2406.09329). No official code exists; OGBench's agents by the same author (gciql, crl) are followed.

Value objectives (`value`):
- "sarsa": in-sample Q(s, a) <- r + gamma * Qbar(s', a'), a' the dataset's next action (the behaviour's Q).
- "iql": V by expectile regression on Qbar(s, a); Q(s, a) <- r + gamma * V(s').
- "crl": contrastive critic f(s, a, g) = phi(s, a)^T psi(g) / sqrt(d), binary NCE over the batch's goals.
  Goal tasks only.
- "td3": off-policy Q(s, a) <- r + gamma * min Qbar(s', a'), a' = the target actor's action plus clipped noise
  (TD3's target policy smoothing; with extraction "ddpgbc" and a deterministic actor this is TD3+BC).
Policy extraction (`extraction`):
- "awr": maximise exp(temperature * A(s, a)) * log pi(a | s) on dataset actions, A = Q - V.
- "ddpgbc": maximise Q(s, pi(s)) / sg(mean |Q|) minus alpha times a BC term (-log pi(a | s), or ||pi(s) - a||^2
  for a deterministic actor, which with alpha = 0.4 / action_dim is TD3+BC).
- "sfbc": fit pi by BC (a Gaussian whose std is always learned: it is the behaviour distribution the candidates
  are drawn from); act with the argmax-Q of N actions sampled from it.

Value and policy data can differ (the paper's data-scaling matrices): `value_data_fraction` and
`policy_data_fraction` train the critic/value and the actor on the first fraction of the dataset's episodes.

Goal tasks (the datamodule adds a relabelled `goal`): every network also sees the goal, and the reward is
OGBench's gc_negative convention, r = 0 when the goal is reached (the next state is the goal) and -1 otherwise,
with the bootstrap cut at the goal. Reward tasks use the dataset's reward and terminations.

All losses are computed from the same parameters and back-propagated once (OGBench's single update), then the
critic, value and actor optimisers step and the target critic follows by Polyak averaging. With value "td3" the
actor and both targets update only every `td3_policy_delay` updates, as TD3 and TD3+BC do.

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
from offrl.dataset_info import DatasetInfo
from offrl.data.returns import return_range_factor
from offrl.errors import OffrlError
from offrl.nn.ensemble import ensemble_mlp
from offrl.nn.mlp import GaussianMLP, Normalizer, frozen, joined, mlp
from offrl.objectives.bc import gaussian_nll, mse
from offrl.objectives.extraction import awr_loss, ddpgbc_loss, sfbc_select
from offrl.objectives.value import (
    contrastive_critic_loss,
    contrastive_critic_value,
    iql_q_loss,
    iql_value_loss,
    polyak_update,
    sarsa_q_loss,
    smoothed_target_action,
)

VALUE_OBJECTIVES = ("sarsa", "iql", "crl", "td3")
EXTRACTIONS = ("awr", "ddpgbc", "sfbc")
ACTOR_KINDS = ("gaussian", "deterministic")
REWARD_NORMALIZATIONS = ("none", "return_range")
NUM_CRITICS = 2


class ContrastiveCritic(nn.Module):
    """f(x, g) = phi(x)^T psi(g) / sqrt(d) for an ensemble of encoder pairs; x is (s, a) for Q, s alone for V."""

    def __init__(self, num_members: int, in_dim: int, goal_dim: int, hidden_dims: Sequence[int], repr_dim: int, layer_norm: bool):
        super().__init__()
        self.phi = ensemble_mlp(num_members, in_dim, hidden_dims, repr_dim, layer_norm)
        self.psi = ensemble_mlp(num_members, goal_dim, hidden_dims, repr_dim, layer_norm)

    def representations(self, x: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """phi(x), psi(g): [E, B, d] each."""
        return self.phi(x), self.psi(goal)

    def forward(self, x: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        """Matched-pair values [E, B]."""
        return contrastive_critic_value(*self.representations(x, goal))


def next_actions(transitions: TensorDict) -> torch.Tensor:
    """a' for every transition: the episode's next action, or the same action on an episode's last step.

    After a termination a' is never bootstrapped from; after a time-limit truncation the true a' was not recorded
    and the last action stands in for it.
    """
    index = torch.arange(transitions.batch_size[0])
    following = torch.where(index < transitions["episode_last"], index + 1, index)
    return transitions["action"][following]


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
            ddpgbc_alpha: weight of the BC term in DDPG+BC.
            normalize_q: divide the DDPG+BC Q term by sg(mean |Q|) (TD3+BC's normalisation).
            sfbc_num_samples: N, behaviour actions sampled per state by SfBC at act time.
            actor: "gaussian" (state-independent std) or "deterministic" (tanh-bounded; DDPG+BC only).
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
            raise OffrlError(f"model.value must be one of {VALUE_OBJECTIVES}, got {value!r}")
        if extraction not in EXTRACTIONS:
            raise OffrlError(f"model.extraction must be one of {EXTRACTIONS}, got {extraction!r}")
        if actor not in ACTOR_KINDS:
            raise OffrlError(f"model.actor must be one of {ACTOR_KINDS}, got {actor!r}")
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

    @property
    def algorithm_name(self) -> str:
        return self.hparams.name or f"{self.hparams.value}_{self.hparams.extraction}"

    @property
    def needs_state_value(self) -> bool:
        """IQL always learns V; the others need it only for AWR's advantage."""
        return self.hparams.value == "iql" or self.hparams.extraction == "awr"

    # -- networks ----------------------------------------------------------------------------------------

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        hp = self.hparams
        goal_dim = self.goal_dim()
        if hp.value == "crl" and not goal_dim:
            raise OffrlError("model.value crl is goal-conditioned only: use a HindsightDataModule on a goal dataset")
        obs_dim, action_dim, hidden = info.observation_dim, info.action_dim, list(hp.hidden_dims)

        self.observation_normalizer = Normalizer(obs_dim)
        self.goal_normalizer = Normalizer(goal_dim) if goal_dim else None
        if hp.normalize_observations:
            self.observation_normalizer.fit(transitions["observation"])
            if goal_dim:
                self.goal_normalizer.fit(transitions[self.datamodule.goal_key])

        if hp.value == "crl":
            self.critic = ContrastiveCritic(NUM_CRITICS, obs_dim + action_dim, goal_dim, hidden, hp.repr_dim, hp.layer_norm)
        else:
            self.critic = ensemble_mlp(NUM_CRITICS, obs_dim + goal_dim + action_dim, hidden, 1, hp.layer_norm)
            self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        if hp.value == "sarsa":
            transitions["next", "action"] = next_actions(transitions)
        reward_factor = hp.reward_scale
        if hp.reward_normalization == "return_range" and not goal_dim:
            reward_factor *= return_range_factor(transitions)
        self.register_buffer("reward_factor", torch.tensor(reward_factor, dtype=torch.float32))
        self.value_data_size = episode_prefix_size(transitions, hp.value_data_fraction)
        self.policy_data_size = episode_prefix_size(transitions, hp.policy_data_fraction)

        self.value_net = None
        if self.needs_state_value:
            if hp.value == "crl":
                self.value_net = ContrastiveCritic(1, obs_dim, goal_dim, hidden, hp.repr_dim, hp.layer_norm)
            else:
                self.value_net = mlp(obs_dim + goal_dim, hidden, 1, hp.layer_norm)

        if hp.actor == "gaussian":
            self.actor = GaussianMLP(obs_dim + goal_dim, hidden, action_dim, hp.layer_norm)
            self.actor.log_std.requires_grad_(hp.learned_std or hp.extraction == "sfbc")
        else:
            self.actor = mlp(obs_dim + goal_dim, hidden, action_dim, hp.layer_norm)
        if hp.value == "td3":
            self.target_actor = copy.deepcopy(self.actor).requires_grad_(False)
        self.register_buffer("action_low", torch.tensor(info.action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.tensor(info.action_high, dtype=torch.float32))

    def configure_optimizers(self):
        networks = [self.critic, self.value_net, self.actor] if self.value_net is not None else [self.critic, self.actor]
        optimizers = [torch.optim.Adam(network.parameters(), lr=self.hparams.lr) for network in networks]
        if self.hparams.actor_cosine_steps is None:
            return optimizers
        return optimizers, [cosine_decay(optimizers[-1], self.hparams.actor_cosine_steps)]

    # -- values ------------------------------------------------------------------------------------------

    def q_values(self, critic: nn.Module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a[, g]) of every ensemble member: [E, B]."""
        if self.hparams.value == "crl":
            return critic(joined(obs, action), goal)
        return critic(joined(obs, goal, action)).squeeze(-1)

    def q_value(self, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """min over the twin critics: [B]."""
        return self.q_values(self.critic, obs, goal, action).min(0).values

    def action_value(self, observation: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a[, g]) from raw (unnormalised) observations and goals, min over the twins: [B]."""
        return self.q_value(*self.normalized_inputs(observation, goal), action)

    def state_value(self, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """V(s[, g]): [B]."""
        if self.hparams.value == "crl":
            return self.value_net(obs, goal).squeeze(0)
        return self.value_net(joined(obs, goal)).squeeze(-1)

    def reward_and_termination(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        if batch.get("goal") is not None:
            reached = batch["next", "goal_reached"].float()
            return reached - 1.0, reached
        return batch["next", "reward"] * self.reward_factor, batch["next", "terminated"]

    # -- actions -----------------------------------------------------------------------------------------

    def clip_action(self, action: torch.Tensor) -> torch.Tensor:
        return torch.clamp(action, self.action_low, self.action_high)

    def policy_action(self, actor_input: torch.Tensor, actor: nn.Module | None = None) -> torch.Tensor:
        """The deterministic action of `actor` (default: the actor): the Gaussian mean clipped to the bounds, or
        the tanh-bounded output."""
        actor = self.actor if actor is None else actor
        if self.hparams.actor == "gaussian":
            return self.clip_action(actor(actor_input)[0])
        unit = torch.tanh(actor(actor_input))
        return self.action_low + (unit + 1.0) * 0.5 * (self.action_high - self.action_low)

    def sfbc_action(self, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """argmax-Q among N actions sampled from the BC policy."""
        num_samples = self.hparams.sfbc_num_samples
        mean, log_std = self.actor(joined(obs, goal))
        noise = torch.randn(mean.shape[0], num_samples, mean.shape[1], device=mean.device)
        candidates = self.clip_action(mean.unsqueeze(1) + log_std.exp().unsqueeze(1) * noise)  # [B, N, A]
        repeated_goal = None if goal is None else goal.repeat_interleave(num_samples, 0)
        q = self.q_value(obs.repeat_interleave(num_samples, 0), repeated_goal, candidates.flatten(0, 1))
        return sfbc_select(candidates, q.view(-1, num_samples))

    def normalized_inputs(self, observation: torch.Tensor, goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.observation_normalizer(observation), None if goal is None else self.goal_normalizer(goal)

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        obs, goal = self.normalized_inputs(observation, goal)
        if self.hparams.extraction == "sfbc":
            return self.sfbc_action(obs, goal)
        return self.policy_action(joined(obs, goal))

    # -- training ----------------------------------------------------------------------------------------

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Every loss of one update, all from the current parameters; with value/policy data fractions the
        critic and the actor each train on a batch of their own share of the data."""
        batch, policy_batch = self.training_batches(batch)
        obs, goal = self.normalized_inputs(batch["observation"], batch.get("goal"))
        losses = {"critic_loss": self.critic_loss(batch, obs, goal)}
        if self.value_net is not None:
            losses["value_loss"] = self.value_loss(obs, goal, batch["action"])
        if not self.policy_step():
            return losses
        if policy_batch is not None:
            batch = policy_batch
            obs, goal = self.normalized_inputs(batch["observation"], batch.get("goal"))
        losses["actor_loss"] = self.actor_loss(obs, goal, batch["action"])
        return losses

    def policy_step(self) -> bool:
        """Whether this update trains the actor (and moves the targets): always, except between TD3's delayed ones."""
        delay = self.hparams.td3_policy_delay if self.hparams.value == "td3" else 1
        return (self.global_step + 1) % delay == 0  # TD3 counts its iterations from 1

    def update_variant(self) -> bool:
        return self.policy_step()  # one update graph with the actor's loss, one without

    def critic_loss(self, batch: TensorDict, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        hp, action = self.hparams, batch["action"]
        if hp.value == "crl":
            return contrastive_critic_loss(*self.critic.representations(joined(obs, action), goal))
        next_obs = self.observation_normalizer(batch["next", "observation"])
        reward, terminated = self.reward_and_termination(batch)
        q = self.q_values(self.critic, obs, goal, action)
        if hp.value == "iql":
            return iql_q_loss(q, reward, hp.discount, terminated, self.state_value(next_obs, goal))
        with torch.no_grad():
            if hp.value == "td3":
                next_action = smoothed_target_action(
                    self.policy_action(joined(next_obs, goal), self.target_actor),
                    hp.target_noise, hp.target_noise_clip, self.action_low, self.action_high,
                )
            else:
                next_action = batch["next", "action"]
            q_next = self.q_values(self.target_critic, next_obs, goal, next_action)
        return sarsa_q_loss(q, reward, hp.discount, terminated, q_next)

    def value_loss(self, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        if self.hparams.value == "crl":
            return contrastive_critic_loss(*self.value_net.representations(obs, goal))
        with torch.no_grad():
            q_target = self.q_values(self.target_critic, obs, goal, action)
        expectile = self.hparams.expectile if self.hparams.value == "iql" else 0.5
        return iql_value_loss(self.state_value(obs, goal), q_target, expectile)

    def actor_loss(self, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        hp, actor_input = self.hparams, joined(obs, goal)
        if hp.extraction == "sfbc":
            return gaussian_nll(*self.actor(actor_input), action)
        if hp.extraction == "awr":
            mean, log_std = self.actor(actor_input)
            log_prob = torch.distributions.Normal(mean, log_std.exp()).log_prob(action).sum(-1)
            with torch.no_grad():
                advantage = self.q_value(obs, goal, action) - self.state_value(obs, goal)
            return awr_loss(log_prob, advantage, hp.awr_temperature, hp.awr_max_weight)
        if hp.actor == "gaussian":
            mean, log_std = self.actor(actor_input)
            policy_action, bc_term = self.clip_action(mean), gaussian_nll(mean, log_std, action)
        else:
            policy_action = self.policy_action(actor_input)
            bc_term = mse(policy_action, action)
        with frozen(self.critic):
            q_pi = self.q_values(self.critic, obs, goal, policy_action)
        # TD3 (and TD3+BC) ascend the first critic; the others the twins' minimum.
        q_pi = q_pi[0] if hp.value == "td3" else q_pi.min(0).values
        return ddpgbc_loss(q_pi, bc_term, hp.ddpgbc_alpha, hp.normalize_q)

    def training_batches(self, batch: TensorDict) -> tuple[TensorDict, TensorDict | None]:
        """(value batch, policy batch or None when the actor trains on the same one)."""
        if self.value_data_size == self.policy_data_size == len(self.datamodule.transitions):
            return batch, None
        sample = self.datamodule.sample
        return sample(len(batch), self.value_data_size), sample(len(batch), self.policy_data_size)

    def after_optimizer_step(self) -> None:
        if not self.policy_step():
            return
        if self.hparams.value != "crl":
            polyak_update(self.target_critic.parameters(), self.critic.parameters(), self.hparams.tau)
        if self.hparams.value == "td3":
            polyak_update(self.target_actor.parameters(), self.actor.parameters(), self.hparams.tau)
