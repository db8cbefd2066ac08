"""Soft actor-critic losses (Haarnoja et al. 2018, with the learned temperature of "SAC: Algorithms and Applications").

Same conventions as offrl.objectives.value: plain float32 tensors, values batch-last ([B]), critics stacked in
front ([E, B]); the twin-critic reduction is the minimum over E.
"""

from __future__ import annotations

import torch

from offrl.objectives.value import q_regression_loss, td_target


def sac_critic_loss(
    q: torch.Tensor,
    reward: torch.Tensor,
    discount: float | torch.Tensor,
    terminated: torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """Σ_critics E[(Q_i(s, a) − y)²], y = r + γ(1 − d)(min_E Q̄(s', a') − α log π(a' | s')), a' ~ π(s').

    q: [E, B]; next_q: target critics at (s', a') [E, B]; reward, terminated, next_log_prob: [B]. y is detached.
    """
    soft_next_value = next_q.min(0).values - alpha * next_log_prob
    return q_regression_loss(q, td_target(reward, discount, terminated, soft_next_value))


def sac_actor_loss(q_pi: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """E[α log π(a | s) − min_E Q(s, a)], a ~ π(s) reparameterised; q_pi [E, B], log_prob [B]; α is detached."""
    return (alpha.detach() * log_prob - q_pi.min(0).values).mean()


def sac_temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """−E[log α · (log π(a | s) + H̄)]: raises α when the policy's entropy −log π falls below the target H̄."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()
