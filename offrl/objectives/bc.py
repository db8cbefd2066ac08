"""Behaviour cloning losses, and the Gaussian log-likelihood every stochastic policy uses."""

import math

import torch


def gaussian_log_prob(mean: torch.Tensor, log_std: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, diag(exp(log_std)^2)), summed over the last dimension: [..., D] -> [...]."""
    return -(0.5 * ((x - mean) / log_std.exp()) ** 2 + log_std + 0.5 * math.log(2 * math.pi)).sum(-1)


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -log N(target; mean, exp(log_std)^2), summed over dimensions."""
    return (-gaussian_log_prob(mean, log_std, target)).mean()


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the squared error summed over dimensions."""
    return ((prediction - target) ** 2).sum(-1).mean()
