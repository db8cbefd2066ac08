"""Windows of k consecutive steps inside one episode: the training examples of a dynamics model, and the real
history a roll-out starts from."""

from __future__ import annotations

import torch
from tensordict import TensorDict


def window_starts(episode_last: torch.Tensor, window: int, end: int | None = None) -> torch.Tensor:
    """Every index i whose window i..i+window-1 stays inside its episode (and before `end`, when given)."""
    index = torch.arange(len(episode_last), device=episode_last.device)
    last = episode_last if end is None else episode_last.clamp_max(end - 1)
    return index[index + window - 1 <= last]


def window_targets(transitions: TensorDict, first: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For windows starting at `first` (any shape [...]): s_first [..., obs], the k actions [..., k, act] and the
    target (s_{first+k} - s_first, r_{first+k-1}) [..., obs + 1]."""
    steps = first[..., None] + torch.arange(k, device=first.device)
    final = steps[..., -1]
    start_obs = transitions["observation"][first]
    target = torch.cat(
        [transitions["next", "observation"][final] - start_obs, transitions["next", "reward"][final][..., None]], -1
    )
    return start_obs, transitions["action"][steps], target
