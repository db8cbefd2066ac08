"""Goal-conditioned BC learns PointMaze UMaze from a small generated dataset: it must beat a random policy."""

from __future__ import annotations

import lightning as L

from offrl.algos.bc import BC
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.data.datamodules import HindsightDataModule

DATASET = "offrl/pointmaze/umaze-v0"
EPISODES = 30

from conftest import random_policy_success


def test_goal_conditioned_bc_beats_random_on_umaze(in_tmp_dir):
    L.seed_everything(0)
    datamodule = HindsightDataModule(DATASET, batch_size=256, steps_per_epoch=1500, generate_steps=30_000)
    model = BC(hidden_dims=[128, 128], lr=1e-3, normalize_observations=False)
    # 6000 updates: at lr 1e-3 the success of 3000 dips on some seeds (seeds 0-7, 30 episodes, 3000: 0.10-1.00,
    # 6000: 0.87-1.00), so the float rounding of one optimiser could decide the test.
    trainer = L.Trainer(
        max_steps=6000,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        num_sanity_val_steps=0,
        callbacks=[EvaluationCallback(num_episodes=EPISODES, num_envs=10)],
    )
    trainer.fit(model, datamodule)
    bc_success = trainer.callback_metrics["eval/success"].item()

    random_success = random_policy_success(datamodule.info, EPISODES)
    print(f"umaze success over {EPISODES} episodes: BC {bc_success:.2f}, random {random_success:.2f}")
    assert bc_success >= random_success + 0.3
