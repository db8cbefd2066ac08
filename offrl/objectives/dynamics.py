"""Losses and uncertainty penalties of learned dynamics models (ADM, MOPO)."""

from __future__ import annotations

import torch

PENALTY_FORMS = ("official", "eq4")


def dynamics_nll(
    mean: torch.Tensor,
    logvar: torch.Tensor,
    target: torch.Tensor,
    min_logvar: torch.Tensor,
    max_logvar: torch.Tensor,
    bound_weight: float = 0.01,
) -> torch.Tensor:
    """Gaussian NLL (up to constants and the factor 1/2, as the official ADMPO and MOPO code) averaged over the
    batch and dimensions, summed over any leading ensemble dimension, plus bound_weight * (sum max_logvar -
    sum min_logvar), which keeps the learned log-variance bounds tight.

    mean, logvar, target: [..., B, D].
    """
    nll = ((mean - target) ** 2 * torch.exp(-logvar) + logvar).mean((-2, -1)).sum()
    return nll + bound_weight * (max_logvar.sum() - min_logvar.sum())


def layer_weight_decay(weights: list[torch.Tensor], decays: list[float]) -> torch.Tensor:
    """MBPO's and MOPO's per-layer L2 on the model: sum over layers of decay_l * ||W_l||^2 / 2 (TensorFlow's
    l2_loss; biases are not decayed)."""
    return sum(decay * 0.5 * weight.square().sum() for weight, decay in zip(weights, decays, strict=True))


def any_step_penalty(means: torch.Tensor, logvars: torch.Tensor, form: str = "official") -> torch.Tensor:
    """ADMPO's uncertainty: how much the predictions of s_{t+1} for k = 1..K disagree.

    means, logvars: [K, B, obs] (next-state part only).
    - "official" (HxLyn3/ADMPO): sqrt(mean over dims of the variance over k of the means).
    - "eq4" (the paper's Eq. 4): the variance of the mixture of the K Gaussians, i.e. the predicted variances
      (averaged over k) are added to the spread of the means before the root.
    Returns [B].
    """
    spread = means.var(0, unbiased=False)
    if form == "eq4":
        spread = spread + logvars.exp().mean(0)
    return spread.mean(-1).sqrt()


def ensemble_penalty(logvar: torch.Tensor) -> torch.Tensor:
    """MOPO's uncertainty: the largest predicted std norm over the members. logvar [E, B, D] -> [B]."""
    return (0.5 * logvar).exp().norm(dim=-1).amax(0)
