"""ADM, the any-step dynamics model (Lin et al., arXiv 2405.17031; official code HxLyn3/ADMPO): a GRU reads the
state at the start of a window and the k actions in it, any k in 1..m, and predicts the state after the window.
Its uncertainty is how much the predictions of the same next state from windows of different k disagree."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from offrl.models.dynamics import join_chunks, rollout_chunk_rows
from offrl.nn.dynamics import LogVarBounds, ResidualBlock
from offrl.nn.mlp import Normalizer
from offrl.objectives.dynamics import any_step_penalty, dynamics_nll


@dataclass
class WindowMemory:
    """What an ADM roll-out carries from step to step for a chunk of its rows: their last n <= m states and
    actions [N, n, *] and, when penalised, the GRU state [layers, n, N, hidden] of the window starting at each of
    those states, having read that window's actions. Each step then extends the n windows by one action (n GRU
    steps per row) instead of reading every window anew (1 + 2 + ... + n), with the same predictions."""

    observations: torch.Tensor
    actions: torch.Tensor
    hidden: torch.Tensor | None


class AnyStepModel(nn.Module):
    """From s_{t-k+1} and the k actions a_{t-k+1..t}, a Gaussian over (s_{t+1} - s_{t-k+1}, r_t).

    Every GRU step sees concat(norm(s_{t-k+1}), norm(a_i)): the start state repeated beside each action.
    The GRU's last output goes through residual blocks to the mean and log-variance.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        max_window: int = 5,
        hidden_dim: int = 200,
        gru_layers: int = 3,
        residual_blocks: int = 4,
        dropout: float = 0.1,
        penalty_form: str = "official",
    ):
        super().__init__()
        self.obs_dim, self.action_dim, self.max_window, self.penalty_form = obs_dim, action_dim, max_window, penalty_form
        self.obs_normalizer = Normalizer(obs_dim)
        self.action_normalizer = Normalizer(action_dim)
        self.gru = nn.GRU(obs_dim + action_dim, hidden_dim, gru_layers, batch_first=True)
        self.head = nn.Sequential(
            *[ResidualBlock(hidden_dim, dropout) for _ in range(residual_blocks)], nn.Linear(hidden_dim, 2 * (obs_dim + 1))
        )
        self.bounds = LogVarBounds(obs_dim + 1)

    def fit_normalizers(self, observations: torch.Tensor, actions: torch.Tensor) -> None:
        self.obs_normalizer.fit(observations)
        self.action_normalizer.fit(actions)

    def forward(self, start_obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """start_obs [B, obs], actions [B, k, act] -> mean, log-variance [B, obs + 1] of (delta s, r)."""
        obs = self.obs_normalizer(start_obs)[:, None].expand(-1, actions.shape[1], -1)
        output, _ = self.gru(torch.cat([obs, self.action_normalizer(actions)], -1))
        return self.gaussian(output[:, -1])

    def gaussian(self, gru_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The GRU's last output [..., hidden] -> mean, bounded log-variance [..., obs + 1]."""
        mean, logvar = self.head(gru_output).chunk(2, -1)
        return mean, self.bounds(logvar)

    # -- fitting ----------------------------------------------------------------------------------------

    def window_draw_shape(self, batch_size: int) -> tuple[int, ...]:
        return (batch_size,)

    def predict_window(self, start_obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(start_obs, actions)

    def loss(self, mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return dynamics_nll(mean, logvar, target, self.bounds.min_logvar, self.bounds.max_logvar)

    def member_state_names(self) -> list[str]:
        return []  # one model: its best parameters are kept whole

    def after_fit(self, holdout_scores: torch.Tensor) -> None:
        """Nothing to choose: ADM has no members."""

    # -- roll-outs --------------------------------------------------------------------------------------

    def predict_from_history(
        self, observations: torch.Tensor, actions: torch.Tensor, k: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """From histories s_{..t} [B, L, obs] and a_{..t} [B, L, act] (aligned), the k-step prediction of
        (s_{t+1}, r_t): absolute next-state mean and log-variance [B, obs + 1]."""
        start = observations[:, -k]
        mean, logvar = self(start, actions[:, -k:])
        return torch.cat([mean[:, :-1] + start, mean[:, -1:]], -1), logvar

    def predict_every_k(self, observations: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """predict_from_history for every k in 1..L: absolute means, log-variances [L, B, obs + 1] (row k-1: k).
        One GRU call per window length: on a CPU that is faster than one packed call over all L windows (which
        sorts, permutes and steps a shrinking batch), with the same numbers."""
        predictions = [self.predict_from_history(observations, actions, k) for k in range(1, observations.shape[1] + 1)]
        return torch.stack([mean for mean, _ in predictions]), torch.stack([logvar for _, logvar in predictions])

    def start_rollout(self, history_obs: torch.Tensor, history_actions: torch.Tensor, penalized: bool) -> list[WindowMemory]:
        """The memory of a roll-out after the real history s, a [N, h, *], in chunks of rows (see WindowMemory)."""
        rows = rollout_chunk_rows(history_obs)
        chunks = []
        for obs, actions in zip(history_obs.split(rows), history_actions.split(rows)):
            hidden = obs.new_zeros(self.gru.num_layers, 0, obs.shape[0], self.gru.hidden_size) if penalized else None
            memory = WindowMemory(obs[:, :0], actions[:, :0], hidden)
            for step in range(obs.shape[1]):
                memory, _ = self.remember(memory, obs[:, step], actions[:, step])
            chunks.append(memory)
        return chunks

    def remember(
        self, memory: WindowMemory, observation: torch.Tensor, action: torch.Tensor
    ) -> tuple[WindowMemory, torch.Tensor | None]:
        """Append (s_t, a_t) [N, *] to the memory (its last m steps kept). With GRU states, a new window opens at
        s_t and every window reads a_t: one batched GRU step; returns its outputs [n, N, hidden], oldest start
        (k = n) first."""
        observations = torch.cat([memory.observations, observation[:, None]], 1)[:, -self.max_window :]
        actions = torch.cat([memory.actions, action[:, None]], 1)[:, -self.max_window :]
        if memory.hidden is None:
            return WindowMemory(observations, actions, None), None
        layers, _, batch, width = memory.hidden.shape
        windows = observations.shape[1]
        opened = memory.hidden.new_zeros(layers, 1, batch, width)
        hidden = torch.cat([memory.hidden, opened], 1)[:, -self.max_window :].reshape(layers, windows * batch, width)
        starts = self.obs_normalizer(observations).transpose(0, 1)  # [n, N, obs]
        step_input = torch.cat([starts, self.action_normalizer(action).expand(windows, -1, -1)], -1)
        output, hidden = self.gru(step_input.reshape(windows * batch, 1, -1), hidden)
        memory = WindowMemory(observations, actions, hidden.view(layers, windows, batch, width))
        return memory, output.view(windows, batch, width)

    def rollout_step(
        self, memory: list[WindowMemory], observation: torch.Tensor, action: torch.Tensor, penalized: bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, list[WindowMemory]]:
        """k ~ U{1..min(history, m)} picks the prediction to sample. The penalty needs every k's prediction, read
        from the windows the memory carries; an unpenalised roll-out (ADMPO-ON) predicts only the drawn k, from
        the stored history, as the official code does."""
        k = int(torch.randint(min(memory[0].observations.shape[1] + 1, self.max_window), ())) + 1
        chunks, predictions = [], []
        rows = [chunk.observations.shape[0] for chunk in memory]
        for chunk, obs, act in zip(memory, observation.split(rows), action.split(rows)):
            chunk, output = self.remember(chunk, obs, act)
            chunks.append(chunk)
            if not penalized:
                predictions.append((*self.predict_from_history(chunk.observations, chunk.actions, k), None))
                continue
            mean, logvar = self.gaussian(output.flip(0))  # row k - 1: the window of k steps
            means = torch.cat([mean[..., :-1] + chunk.observations.flip(1).transpose(0, 1), mean[..., -1:]], -1)
            penalty = any_step_penalty(means[..., :-1], logvar[..., :-1], self.penalty_form)
            predictions.append((means[k - 1], logvar[k - 1], penalty))
        return *join_chunks(predictions), chunks
