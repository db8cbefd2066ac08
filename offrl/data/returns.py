"""Episode returns of a dataset's transitions, and the reward normalisation IQL derives from them."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from offrl.errors import OffrlError


def episode_returns(transitions: TensorDict) -> torch.Tensor:
    """The undiscounted return of every episode [E] (float64), episodes in dataset order."""
    first = transitions["step"] == 0
    episode = first.long().cumsum(0) - 1
    returns = torch.zeros(int(first.sum()), dtype=torch.float64)
    return returns.index_add_(0, episode, transitions["next", "reward"].double())


def return_range_factor(transitions: TensorDict) -> float:
    """1000 / (max - min episode return): the factor by which IQL (and CORL) scale MuJoCo rewards, so that the
    expectile and the AWR temperature mean the same on every dataset."""
    returns = episode_returns(transitions)
    spread = float(returns.max() - returns.min())
    if spread <= 0:
        raise OffrlError(
            f"model.reward_normalization return_range needs episodes of different returns, but all {len(returns)} "
            "episodes return the same; set model.reward_normalization none"
        )
    return 1000.0 / spread
