"""Windows of k consecutive steps inside one episode: the training examples of a dynamics model, and the real
history a roll-out starts from. `draw_windows` draws every training batch of windows (the AnyStepDataModule's and
an online refit's); roll-outs find their starts with `window_starts`."""

from __future__ import annotations

import torch
from tensordict import TensorDict

from offrl.errors import OffrlError


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


def window_batch(transitions: TensorDict, first: torch.Tensor, k: int) -> TensorDict:
    """The windows starting at `first` [*S] as a batch: `observation` [*S, obs] (the window's first state),
    `window_actions` [*S, k, act] and `target` [*S, obs + 1] (delta s over the window, last reward)."""
    start_obs, actions, target = window_targets(transitions, first, k)
    return TensorDict({"observation": start_obs, "window_actions": actions, "target": target}, batch_size=first.shape)


def draw_windows(
    transitions: TensorDict,
    train_starts: list[torch.Tensor],
    shape: tuple[int, ...],
    length_generator: torch.Generator,
    start_generator: torch.Generator,
) -> TensorDict:
    """A batch of windows (window_batch) of one length k ~ U{1..len(train_starts)}, drawn on the host from
    `length_generator` (a draw on a device would wait for it at every batch), and `shape` starts drawn uniformly
    from train_starts[k - 1] with `start_generator` (on the starts' device)."""
    k = int(torch.randint(1, len(train_starts) + 1, (), generator=length_generator))
    starts = train_starts[k - 1]
    u = torch.rand(shape, generator=start_generator, device=starts.device)
    return window_batch(transitions, starts[(u * len(starts)).long()], k)


WINDOW_SEED_OFFSET = 0x5EED  # the window-length stream differs from the start stream of the same seed


class WindowGenerators:
    """The two streams draw_windows reads, seeded together: window lengths (host) and window starts (`device`)."""

    def __init__(self, seed: int, device: torch.device | str = "cpu"):
        self.lengths = torch.Generator().manual_seed(WINDOW_SEED_OFFSET + seed)
        self.starts = torch.Generator(device=device).manual_seed(seed)

    def draw(self, transitions: TensorDict, train_starts: list[torch.Tensor], shape: tuple[int, ...]) -> TensorDict:
        return draw_windows(transitions, train_starts, shape, self.lengths, self.starts)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"lengths": self.lengths.get_state(), "starts": self.starts.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.lengths.set_state(state["lengths"])
        self.starts.set_state(state["starts"])


def holdout_start(size: int, holdout_fraction: float, max_holdout: int) -> int:
    """The first row of the hold-out set: the last min(holdout_fraction * size, max_holdout) of `size` transitions."""
    return size - min(int(holdout_fraction * size), max_holdout)


def split_window_starts(
    episode_last: torch.Tensor, max_window: int, holdout_fraction: float, max_holdout: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The first rows of the training and hold-out windows of every k in 1..max_window. The hold-out set is the
    last min(holdout_fraction * N, max_holdout) transitions; no window crosses the split or an episode's end."""
    size = len(episode_last)
    train_end = holdout_start(size, holdout_fraction, max_holdout)
    train = [window_starts(episode_last, k, end=train_end) for k in range(1, max_window + 1)]
    holdout = [s[s >= train_end] for s in (window_starts(episode_last, k) for k in range(1, max_window + 1))]
    if min(len(s) for s in train) == 0 or min(len(s) for s in holdout) == 0:
        raise OffrlError(
            f"the dataset ({size} transitions) has no {max_window}-step windows to train or hold out the model on; "
            "lower the model's max_window or use a larger dataset"
        )
    return train, holdout
