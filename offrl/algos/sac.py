"""Soft actor-critic (Haarnoja et al. 2018): the agent every SAC-based algorithm shares, and online SAC.

`SACAgent` holds the networks and computes the three losses from one batch; the LightningModules that use it
(online SAC here; MOPO, MBPO and ADMPO through offrl/algos/model_based_sac.py) own the optimisers, learning rates
and data.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import nn

from offrl.algos.base import OfflineAlgorithm, check_td_settings
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError
from offrl.nn.action_bounds import from_unit_box, register_action_bounds, to_unit_box
from offrl.nn.ensemble import ensemble_mlp
from offrl.nn.mlp import GaussianMLP, frozen
from offrl.nn.optim import adam, polyak_update
from offrl.objectives.bc import gaussian_log_prob
from offrl.objectives.sac import sac_actor_loss, sac_critic_loss, sac_temperature_loss

# The log-std range of CORL's and OfflineRL-Kit's SAC actors (ADMPO's official code builds on OfflineRL-Kit).
LOG_STD_BOUNDS = (-5.0, 2.0)


class TanhGaussianActor(nn.Module):
    """obs -> (mean, state-dependent log-std) -> a = tanh(mean + std * eps) in [-1, 1]^A, with its log-likelihood."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dims: Sequence[int]):
        super().__init__()
        self.net = GaussianMLP(obs_dim, hidden_dims, action_dim, state_dependent_std=True, log_std_bounds=LOG_STD_BOUNDS)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample in [-1, 1]^A [B, A] and its log-probability [B]."""
        mean, log_std = self.net(observation)
        pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
        gaussian = gaussian_log_prob(mean, log_std, pre_tanh)
        # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)), the numerically stable form of log(1 - tanh(u)^2).
        log_det = (2.0 * (math.log(2.0) - pre_tanh - nn.functional.softplus(-2.0 * pre_tanh))).sum(-1)
        return torch.tanh(pre_tanh), gaussian - log_det

    def mode(self, observation: torch.Tensor) -> torch.Tensor:
        """The deterministic action tanh(mean)."""
        return torch.tanh(self.net(observation)[0])


class SACAgent(nn.Module):
    """Tanh-Gaussian actor, an ensemble of critics with a Polyak-averaged target, and a learned temperature.

    Actions are handled in [-1, 1] by the networks and mapped affinely to the env's [low, high] at the edges
    (`act`, and `losses` maps the batch's actions back), so the critics see unit-box actions.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        action_low: Sequence[float] | torch.Tensor,
        action_high: Sequence[float] | torch.Tensor,
        hidden_dims: Sequence[int] = (256, 256),
        discount: float = 0.99,
        tau: float = 0.005,
        target_entropy: float | None = None,
        init_alpha: float = 1.0,
        learn_alpha: bool = True,
        num_critics: int = 2,
    ):
        super().__init__()
        self.discount, self.tau, self.learn_alpha = discount, tau, learn_alpha
        self.target_entropy = float(-action_dim if target_entropy is None else target_entropy)
        self.actor = TanhGaussianActor(obs_dim, action_dim, hidden_dims)
        self.critic = ensemble_mlp(num_critics, obs_dim + action_dim, hidden_dims, 1)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(init_alpha)), requires_grad=learn_alpha)
        register_action_bounds(self, action_low, action_high)

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.exp()

    def q_values(self, critic: nn.Module, observation: torch.Tensor, unit_action: torch.Tensor) -> torch.Tensor:
        """Q(s, a) of every critic, [E, B]; a in the unit box."""
        return critic(torch.cat([observation, unit_action], -1)).squeeze(-1)

    def to_env_action(self, unit_action: torch.Tensor) -> torch.Tensor:
        return from_unit_box(unit_action, self.action_low, self.action_high)

    def to_unit_action(self, action: torch.Tensor) -> torch.Tensor:
        return to_unit_box(action, self.action_low, self.action_high)

    def act(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """An action in [low, high]: tanh(mean) when deterministic, else a sample of the policy."""
        unit = self.actor.mode(observation) if deterministic else self.actor(observation)[0]
        return self.to_env_action(unit)

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """critic_loss, actor_loss and alpha_loss of one batch, all from the current parameters.

        The actor loss flows through a frozen critic and the temperature loss through a detached log-prob, so one
        backward of their sum gives each network only its own gradient.
        """
        observation, action = batch["observation"], self.to_unit_action(batch["action"])
        alpha = self.alpha.detach()
        with torch.no_grad():
            next_action, next_log_prob = self.actor(batch["next", "observation"])
            next_q = self.q_values(self.target_critic, batch["next", "observation"], next_action)
        critic_loss = sac_critic_loss(
            self.q_values(self.critic, observation, action),
            batch["next", "reward"], self.discount, batch["next", "terminated"], next_q, next_log_prob, alpha,
        )
        policy_action, log_prob = self.actor(observation)
        with frozen(self.critic):
            q_pi = self.q_values(self.critic, observation, policy_action)
        return {
            "critic_loss": critic_loss,
            "actor_loss": sac_actor_loss(q_pi, log_prob, alpha),
            "alpha_loss": sac_temperature_loss(self.log_alpha, log_prob, self.target_entropy),
        }

    def update_target(self) -> None:
        polyak_update(self.target_critic.parameters(), self.critic.parameters(), self.tau)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimiser: "actor", "critic", "alpha" (empty when the temperature is fixed)."""
        return {
            "actor": list(self.actor.parameters()),
            "critic": list(self.critic.parameters()),
            "alpha": [self.log_alpha] if self.learn_alpha else [],
        }


class SACUpdates:
    """OfflineAlgorithm's generic update for a module with a SAC agent (`self.agent`) and the optimisers of
    agent.parameter_groups(): one backward of the three losses, every network steps on its own loss, then the
    target critics follow; the temperature is logged with the losses."""

    agent: SACAgent

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        return self.agent.losses(batch)

    def after_optimizer_step(self) -> None:
        self.agent.update_target()

    def accumulate_losses(self, losses: dict[str, torch.Tensor]) -> None:
        super().accumulate_losses(losses | {"alpha": self.agent.alpha.detach()})


class SAC(SACUpdates, OfflineAlgorithm):
    """Online SAC: updates on a ReplayDataModule that offrl.callbacks.online.OnlineInteraction fills."""

    algorithm_name = "sac"

    def __init__(
        self,
        hidden_dims: Sequence[int] = (256, 256),
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        discount: float = 0.99,
        tau: float = 0.005,
        target_entropy: float | None = None,
        init_alpha: float = 1.0,
        learn_alpha: bool = True,
        num_critics: int = 2,
    ):
        """
        Args:
            hidden_dims: widths of the actor and critic MLPs.
            actor_lr, critic_lr, alpha_lr: Adam learning rates of the actor, the critics and log alpha.
            discount: gamma.
            tau: Polyak rate of the target critics.
            target_entropy: the temperature's entropy target (default -action_dim).
            init_alpha: initial temperature.
            learn_alpha: tune the temperature; false keeps init_alpha.
            num_critics: critics in the ensemble (min over them in every target).
        """
        super().__init__()
        for name, value in (("actor_lr", actor_lr), ("critic_lr", critic_lr), ("alpha_lr", alpha_lr), ("init_alpha", init_alpha)):
            if value <= 0:
                raise OffrlError(f"model.{name} must be positive, got {value}")
        check_td_settings(discount, tau)
        if num_critics < 1:
            raise OffrlError(f"model.num_critics must be a positive integer, got {num_critics}")
        self.save_hyperparameters()

    def build(self, info: DatasetInfo, transitions: TensorDict) -> None:
        hp = self.hparams
        self.agent = SACAgent(
            info.observation_dim, info.action_dim, info.action_low, info.action_high, hp.hidden_dims, hp.discount,
            hp.tau, hp.target_entropy, hp.init_alpha, hp.learn_alpha, hp.num_critics,
        )

    def configure_optimizers(self):
        groups = self.agent.parameter_groups()
        learning_rates = {"critic": self.hparams.critic_lr, "alpha": self.hparams.alpha_lr, "actor": self.hparams.actor_lr}
        # One optimiser per network; OfflineAlgorithm.update steps them all after one backward.
        return [adam(groups[name], lr=lr) for name, lr in learning_rates.items() if groups[name]]

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        return self.agent.act(observation, deterministic=True)

    def explore(self, observation: torch.Tensor) -> torch.Tensor:
        """The behaviour policy of online interaction: a sample of the policy."""
        return self.agent.act(observation, deterministic=False)
