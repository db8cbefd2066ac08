"""The value objectives of the value-learning x policy-extraction study (Park et al., arXiv 2406.09329), one class
each: what critic (and state value) each learns, from which targets, and which target networks follow it.
offrl.algos.value_policy.ValuePolicy builds the networks and calls them; the losses are offrl.objectives.value's.

- SARSA: in-sample Q(s, a) <- r + gamma * Qbar(s', a'), a' the dataset's next action (the behaviour's Q); its V
  (for AWR only) is the expectile-0.5 regression of Qbar, the behaviour's value.
- IQL: V by expectile regression on Qbar(s, a); Q(s, a) <- r + gamma * V(s').
- CRL: a contrastive critic f(s, a, g) = phi(s, a)^T psi(g) / sqrt(d), binary NCE over the batch's goals (goal
  tasks only, no target network).
- TD3: off-policy Q(s, a) <- r + gamma * min Qbar(s', a'), a' the target actor's action plus clipped noise (target
  policy smoothing); the actor and both targets update every `td3_policy_delay` updates, and the actor ascends the
  first critic (with DDPG+BC extraction and a deterministic actor this is TD3+BC).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import nn

from offrl.nn.ensemble import ensemble_member_forward, ensemble_mlp
from offrl.nn.mlp import joined, mlp
from offrl.nn.optim import polyak_update
from offrl.objectives.value import (
    contrastive_critic_loss,
    contrastive_critic_value,
    iql_q_loss,
    iql_value_loss,
    sarsa_q_loss,
    smoothed_target_action,
)

NUM_CRITICS = 2


def next_actions(transitions: TensorDict) -> torch.Tensor:
    """a' for every transition: the episode's next action, or the same action on an episode's last step.

    After a termination a' is never bootstrapped from; after a time-limit truncation the true a' was not recorded
    and the last action stands in for it.
    """
    index = torch.arange(transitions.batch_size[0])
    following = torch.where(index < transitions["episode_last"], index + 1, index)
    return transitions["action"][following]


class SARSA:
    """In-sample TD learning of the behaviour's Q (see the module docstring). `module` is the ValuePolicy."""

    learns_state_value = False  # V is learned only when the extraction needs it (AWR's advantage)
    has_target_critic = True
    has_target_actor = False
    goals_only = False

    def __init__(self, hp):
        self.hp = hp

    # -- networks ----------------------------------------------------------------------------------------

    def build_critic(self, obs_dim: int, goal_dim: int, action_dim: int, hidden: Sequence[int]) -> tuple[nn.Module, nn.Module | None]:
        """The twin critics and their Polyak-averaged target."""
        critic = ensemble_mlp(NUM_CRITICS, obs_dim + goal_dim + action_dim, hidden, 1, self.hp.layer_norm)
        return critic, copy.deepcopy(critic).requires_grad_(False)

    def build_value(self, obs_dim: int, goal_dim: int, hidden: Sequence[int]) -> nn.Module:
        return mlp(obs_dim + goal_dim, hidden, 1, self.hp.layer_norm)

    def prepare(self, transitions: TensorDict) -> None:
        transitions["next", "action"] = next_actions(transitions)

    # -- values ------------------------------------------------------------------------------------------

    def q_values(self, critic: nn.Module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """Q(s, a[, g]) of every twin: [E, B]."""
        return critic(joined(obs, goal, action)).squeeze(-1)

    def state_value(self, value_net: nn.Module, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        """V(s[, g]): [B]."""
        return value_net(joined(obs, goal)).squeeze(-1)

    def actor_q(self, module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """The Q a DDPG+BC actor ascends, [B]: the minimum over the twins."""
        return module.q_value(obs, goal, action)

    def policy_delay(self) -> int:
        return 1

    # -- losses ------------------------------------------------------------------------------------------

    def next_action(self, module, batch: TensorDict, next_obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        return batch["next", "action"]

    def critic_loss(self, module, batch: TensorDict, obs: torch.Tensor, goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The critic's loss, and its Q(s, a[, g]) of every twin on the batch, detached ([E, B]: AWR's advantage
        reads it instead of a second forward pass)."""
        next_obs = module.observation_normalizer(batch["next", "observation"])
        reward, terminated = module.reward_and_termination(batch)
        q = self.q_values(module.critic, obs, goal, batch["action"])
        with torch.no_grad():
            next_action = self.next_action(module, batch, next_obs, goal)
            q_next = self.q_values(module.target_critic, next_obs, goal, next_action)
        return sarsa_q_loss(q, reward, self.hp.discount, terminated, q_next), q.detach()

    def value_expectile(self) -> float:
        return 0.5

    def value_loss(
        self, module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """V's loss, V(s[, g]) on the batch, detached ([B]), and the target critic's Q(s, a[, g]) of every twin it
        regressed on ([E, B]; None without a target critic)."""
        with torch.no_grad():
            q_target = self.q_values(module.target_critic, obs, goal, action)
        v = self.state_value(module.value_net, obs, goal)
        return iql_value_loss(v, q_target, self.value_expectile()), v.detach(), q_target

    def update_targets(self, module) -> None:
        polyak_update(module.target_critic.parameters(), module.critic.parameters(), self.hp.tau)


class IQL(SARSA):
    """Implicit Q-learning: V at the expectile of Qbar, Q toward r + gamma V(s')."""

    learns_state_value = True

    def prepare(self, transitions: TensorDict) -> None:
        """IQL never reads a'."""

    def critic_loss(self, module, batch: TensorDict, obs: torch.Tensor, goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        next_obs = module.observation_normalizer(batch["next", "observation"])
        reward, terminated = module.reward_and_termination(batch)
        q = self.q_values(module.critic, obs, goal, batch["action"])
        with torch.no_grad():
            next_value = self.state_value(module.value_net, next_obs, goal)
        return iql_q_loss(q, reward, self.hp.discount, terminated, next_value), q.detach()

    def value_expectile(self) -> float:
        return self.hp.expectile


class TD3(SARSA):
    """Off-policy Q with target policy smoothing, delayed actor and target updates."""

    has_target_actor = True

    def prepare(self, transitions: TensorDict) -> None:
        """a' comes from the target actor, not the data."""

    def next_action(self, module, batch: TensorDict, next_obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        hp = self.hp
        return smoothed_target_action(
            module.policy_action(joined(next_obs, goal), module.target_actor),
            hp.target_noise, hp.target_noise_clip, module.action_low, module.action_high,
        )

    def actor_q(self, module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        """TD3 (and TD3+BC) ascend the first critic; the second is not evaluated."""
        return ensemble_member_forward(module.critic, joined(obs, goal, action), 0).squeeze(-1)

    def policy_delay(self) -> int:
        return self.hp.td3_policy_delay

    def update_targets(self, module) -> None:
        super().update_targets(module)
        polyak_update(module.target_actor.parameters(), module.actor.parameters(), self.hp.tau)


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


class CRL(SARSA):
    """Contrastive RL: no TD target, no target network; V (for AWR) is a contrastive critic of s alone."""

    goals_only = True
    has_target_critic = False

    def build_critic(self, obs_dim: int, goal_dim: int, action_dim: int, hidden: Sequence[int]) -> tuple[nn.Module, nn.Module | None]:
        hp = self.hp
        return ContrastiveCritic(NUM_CRITICS, obs_dim + action_dim, goal_dim, hidden, hp.repr_dim, hp.layer_norm), None

    def build_value(self, obs_dim: int, goal_dim: int, hidden: Sequence[int]) -> nn.Module:
        return ContrastiveCritic(1, obs_dim, goal_dim, hidden, self.hp.repr_dim, self.hp.layer_norm)

    def prepare(self, transitions: TensorDict) -> None:
        """CRL reads goals, not a'."""

    def q_values(self, critic: nn.Module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor) -> torch.Tensor:
        return critic(joined(obs, action), goal)

    def state_value(self, value_net: nn.Module, obs: torch.Tensor, goal: torch.Tensor | None) -> torch.Tensor:
        return value_net(obs, goal).squeeze(0)

    def critic_loss(self, module, batch: TensorDict, obs: torch.Tensor, goal: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        representations = module.critic.representations(joined(obs, batch["action"]), goal)
        return contrastive_critic_loss(*representations), contrastive_critic_value(*representations).detach()

    def value_loss(
        self, module, obs: torch.Tensor, goal: torch.Tensor | None, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, None]:
        representations = module.value_net.representations(obs, goal)
        return contrastive_critic_loss(*representations), contrastive_critic_value(*representations).squeeze(0).detach(), None

    def update_targets(self, module) -> None:
        """No target network."""


VALUE_OBJECTIVES = {"sarsa": SARSA, "iql": IQL, "crl": CRL, "td3": TD3}
