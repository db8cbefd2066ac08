"""D4RL's medium-replay recipe: the whole replay buffer of an online SAC run, stopped once its evaluation return
reaches the medium level (D4RL trained SAC "until the policy reaches the medium level" and kept every sample).

The SAC run is offrl's own (offrl.algos.sac.SAC with OnlineInteraction on a ReplayDataModule); its settings are
the SAC paper's and are recorded in the dataset's metadata. `steps` caps the buffer: a run that has not reached the
medium level by then stops there (the metadata says which happened).
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping
from minari.data_collector import EpisodeBuffer

from offrl.algos.sac import SAC
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.callbacks.online import OnlineInteraction
from offrl.data.generators import GeneratedDataset, Progress
from offrl.data.generators.mujoco import ENV_IDS, mujoco_dataset
from offrl.data.replay import ReplayDataModule
from offrl.errors import OffrlError

# The medium level to stop at: the low edge of D4RL's medium band (DESIGN.md: hopper 45-60, halfcheetah 40-45,
# walker2d 60-80), in normalised score.
MEDIUM_LEVEL = {"hopper": 45.0, "halfcheetah": 40.0, "walker2d": 60.0}
# The SAC paper's settings (256x256, lr 3e-4, batch 256, gamma 0.99, tau 0.005, one update per env step).
SAC_SETTINGS = {"hidden_dims": [256, 256], "actor_lr": 3e-4, "critic_lr": 3e-4, "alpha_lr": 3e-4, "discount": 0.99, "tau": 0.005}
BATCH_SIZE = 256
WARMUP_STEPS = 5000  # uniformly random actions first; at most half of a smaller budget
EVAL_EVERY = 5000  # env steps (= updates) between two evaluations of the stopping rule
EVAL_EPISODES = 10


class ReportProgress(L.Callback):
    """Advances the generator's progress bar by the env steps taken."""

    def __init__(self, progress: Progress):
        self.progress, self.reported = progress, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        size = trainer.datamodule.size
        self.progress(size - self.reported)
        self.reported = size


def replay_episodes(datamodule: ReplayDataModule) -> tuple[list[EpisodeBuffer], list[float]]:
    """The buffer as Minari episodes (the one still running at the end marked truncated) and the returns of the
    episodes that ended in the env."""
    transitions = datamodule.stored().cpu()
    episode = transitions["episode"]
    ends = torch.nonzero(torch.cat([episode[1:] != episode[:-1], torch.tensor([True])])).flatten().tolist()
    episodes, complete_returns, start = [], [], 0
    for end in ends:
        rows = transitions[start : end + 1]
        ended = bool(rows["next", "done"][-1])
        truncations = rows["next", "truncated"].numpy().copy()
        truncations[-1] |= not ended
        rewards = rows["next", "reward"].double().numpy()
        if ended:
            complete_returns.append(float(rewards.sum()))
        episodes.append(
            EpisodeBuffer(
                id=len(episodes),
                observations=np.concatenate([rows["observation"].numpy(), rows["next", "observation"][-1:].numpy()]),
                actions=rows["action"].numpy(),
                rewards=rewards,
                terminations=rows["next", "terminated"].numpy(),
                truncations=truncations,
                infos={},
            )
        )
        start = end + 1
    return episodes, complete_returns


def collect_replay(
    env_id: str,
    max_steps: int,
    target_score: float,
    seed: int,
    progress: Progress,
    eval_every: int = EVAL_EVERY,
    eval_episodes: int = EVAL_EPISODES,
) -> tuple[ReplayDataModule, dict]:
    """Run online SAC in `env_id` until its evaluation normalised score (every `eval_every` updates, over
    `eval_episodes` episodes) exceeds `target_score` or the buffer holds `max_steps` transitions -> (the filled
    replay buffer, facts about the run). The env step that follows an update is taken before its evaluation."""
    warmup = min(WARMUP_STEPS, max_steps // 2)
    updates = max_steps - warmup
    # A budget shorter than one evaluation period (test sizes) runs without evaluating: it cannot stop early.
    evaluates = updates >= eval_every
    datamodule = ReplayDataModule(env_id, BATCH_SIZE, eval_every if evaluates else updates, seed, capacity=max_steps)
    callbacks = [OnlineInteraction(warmup_steps=warmup, updates_per_env_step=1.0, seed=seed), ReportProgress(progress)]
    if evaluates:
        callbacks += [
            EvaluationCallback(num_episodes=eval_episodes, num_envs=eval_episodes, seed=seed + 1),
            EarlyStopping("eval/normalized_score", mode="max", stopping_threshold=target_score, patience=max_steps),
        ]
    trainer = L.Trainer(
        max_steps=updates,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1 if evaluates else 0,
        callbacks=callbacks,
    )
    L.seed_everything(seed, verbose=False)
    trainer.fit(SAC(**SAC_SETTINGS), datamodule)
    final_score = trainer.callback_metrics.get("eval/normalized_score")
    facts = {
        "sac": {**SAC_SETTINGS, "batch_size": BATCH_SIZE, "warmup_steps": warmup, "updates_per_env_step": 1.0},
        "target_normalized_score": target_score,
        "reached_target": final_score is not None and float(final_score) > target_score,
        "final_normalized_score": None if final_score is None else float(final_score),
        "env_steps": datamodule.size,
        "eval_every_steps": eval_every if evaluates else None,
    }
    return datamodule, facts


def generate(env: str, *, steps: int | None, episodes: int | None, seed: int, progress: Progress) -> GeneratedDataset:
    """medium-replay for env in ENV_IDS: at most `steps` transitions (the replay buffer stops earlier at medium)."""
    if env not in ENV_IDS:
        raise OffrlError(f"unknown MuJoCo env {env!r}; choose one of {', '.join(ENV_IDS)}")
    if episodes is not None or steps is None:
        raise OffrlError("medium-replay is sized in env steps: give --steps (the most the SAC run may take)")
    if steps < 4:
        raise OffrlError(f"--steps must be at least 4 for medium-replay (a warm-up and some SAC updates), got {steps}")
    env_id = ENV_IDS[env]
    replay, facts = collect_replay(env_id, steps, MEDIUM_LEVEL[env], seed, progress)
    collected, returns = replay_episodes(replay)
    described = f"replay buffer of online SAC in {env_id} until normalised return {MEDIUM_LEVEL[env]}"
    return mujoco_dataset(env, "medium-replay", collected, returns, described, seed, episodes=len(collected), **facts)
