"""Value-learning losses: expectile (IQL), in-sample SARSA, contrastive (CRL), and the soft target update.

Conventions shared by every function here:
- Inputs are plain float32 tensors with the batch on the last dimension of Q/V values ([B]); twin critics are
  stacked in front ([2, B], or [E, B] for any ensemble size E).
- `terminated` is a bool or 0/1 tensor [B]; only true terminations cut the bootstrap (time-limit truncations do not).
- TD targets are built under stop-gradient inside the loss, so callers may pass live tensors for next values.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2, mean over all elements: |τ − 1(diff < 0)| · diff².

    With diff = target − prediction the minimiser of E[loss] over the prediction is the τ-expectile of the
    target: τ = 0.5 gives the mean, τ → 1 the maximum.
    """
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff**2).mean()


def td_target(
    reward: torch.Tensor, discount: float | torch.Tensor, terminated: torch.Tensor, next_value: torch.Tensor
) -> torch.Tensor:
    """y = r + γ · (1 − terminated) · next_value, detached."""
    return (reward + discount * (1.0 - terminated.to(reward.dtype)) * next_value).detach()


def _min_over_ensemble(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Collapse a leading ensemble dimension with min (clipped double Q); leave un-stacked values alone."""
    return values.min(0).values if values.dim() == like.dim() + 1 else values


def q_regression_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # Mean over the batch, summed over stacked critics: OGBench's ((q1 - y)^2 + (q2 - y)^2).mean().
    return ((q - target) ** 2).mean(-1).sum()


def iql_value_loss(v: torch.Tensor, q_target: torch.Tensor, expectile: float) -> torch.Tensor:
    """IQL value loss: L_V = E[ |τ − 1(Q̄ − V < 0)| · (Q̄(s, a) − V(s))² ] over data actions a.

    v: V(s) [B]. q_target: target-critic Q(s, a) [B], or stacked twins [E, B] (then Q̄ = min over critics).
    Q̄ is detached.
    """
    q = _min_over_ensemble(q_target, v).detach()
    return expectile_loss(q - v, expectile)


def iql_q_loss(
    q: torch.Tensor,
    reward: torch.Tensor,
    discount: float | torch.Tensor,
    terminated: torch.Tensor,
    v_next: torch.Tensor,
) -> torch.Tensor:
    """IQL critic loss: Σ_critics E[ (Q_i(s, a) − (r + γ(1 − d)V(s')))² ].

    q: Q(s, a) [B] or stacked [E, B]; reward, terminated, v_next: [B]. The target is detached.
    """
    return q_regression_loss(q, td_target(reward, discount, terminated, v_next))


def sarsa_q_loss(
    q: torch.Tensor,
    reward: torch.Tensor,
    discount: float | torch.Tensor,
    terminated: torch.Tensor,
    q_next_target: torch.Tensor,
) -> torch.Tensor:
    """In-sample SARSA critic loss: Σ_critics E[ (Q_i(s, a) − (r + γ(1 − d)Q̄(s', a')))² ].

    a' is the dataset's next action, so this evaluates the behaviour policy (the same fixed point as IQL with
    τ = 0.5). q: [B] or [E, B]; q_next_target: target-critic Q(s', a') [B] or [E, B] (then min over critics).
    """
    next_value = _min_over_ensemble(q_next_target, reward)
    return q_regression_loss(q, td_target(reward, discount, terminated, next_value))


def smoothed_target_action(
    target_action: torch.Tensor,
    noise_std: float,
    noise_clip: float,
    action_low: torch.Tensor | float = -1.0,
    action_high: torch.Tensor | float = 1.0,
) -> torch.Tensor:
    """TD3's target policy smoothing: a' = clip(π̄(s') + clip(ε, −c, c), low, high), ε ~ N(0, σ²), detached.

    σ and c are in units of the action half-range (TD3's 0.2 and 0.5 on [−1, 1] actions). With a' from this,
    `sarsa_q_loss` is TD3's clipped double-Q critic loss, r + γ min_i Q̄_i(s', a').
    """
    half_range = (torch.as_tensor(action_high) - torch.as_tensor(action_low)).to(target_action) / 2
    noise = (torch.randn_like(target_action) * noise_std).clamp(-noise_clip, noise_clip) * half_range
    return torch.clamp(target_action.detach() + noise, action_low, action_high)


def contrastive_logits(sa_repr: torch.Tensor, goal_repr: torch.Tensor) -> torch.Tensor:
    """All-pairs critic logits f(s_i, a_i, g_j) = φ(s_i, a_i)ᵀ ψ(g_j) / √d.

    sa_repr, goal_repr: [..., B, d] (leading dimensions are ensembles) -> [..., B, B], row i = state-action i.
    """
    return sa_repr @ goal_repr.transpose(-1, -2) / math.sqrt(sa_repr.shape[-1])


def contrastive_critic_value(sa_repr: torch.Tensor, goal_repr: torch.Tensor) -> torch.Tensor:
    """The critic on matched pairs, Q(s, a, g) = φ(s, a)ᵀ ψ(g) / √d: [..., B, d] x2 -> [..., B].

    This is the logit of the binary classifier, i.e. log of the discounted future-state density ratio up to a
    constant; OGBench's CRL uses it un-exponentiated as Q in DDPG+BC and as Q − V in AWR.
    """
    return (sa_repr * goal_repr).sum(-1) / math.sqrt(sa_repr.shape[-1])


def contrastive_critic_loss(sa_repr: torch.Tensor, goal_repr: torch.Tensor) -> torch.Tensor:
    """Binary NCE over the batch (CRL): mean_{i,j} BCE(σ(f(s_i, a_i, g_j)), 1(i = j)).

    Goal j is a future state of transition j, so the diagonal holds the positives and the other B − 1 goals in
    each row are negatives. sa_repr, goal_repr: [..., B, d]; the mean also runs over ensemble members.
    """
    logits = contrastive_logits(sa_repr, goal_repr)
    labels = torch.eye(logits.shape[-1], dtype=logits.dtype, device=logits.device).expand_as(logits)
    return F.binary_cross_entropy_with_logits(logits, labels)
