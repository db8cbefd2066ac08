"""Evaluation roll-outs as a Lightning callback: at every validation (each epoch of updates) and at `test`."""

from __future__ import annotations

import lightning as L
import torch

from offrl.callbacks.test_time import improved_act
from offrl.envs.evaluation import evaluate
from offrl.envs.factory import make_eval_env


class EvaluationCallback(L.Callback):
    def __init__(
        self, num_episodes: int = 10, num_envs: int = 10, seed: int = 12345, success_threshold: float = 0.45, parallel: bool = False
    ):
        """
        Args:
            num_episodes: episodes per evaluation.
            num_envs: environments stepped together (batched policy calls).
            seed: environment seed; every evaluation starts from the same initial states.
            success_threshold: goal distance that counts as success on goal tasks (PointMaze: 0.45).
            parallel: step each env in its own process (ParallelEnv) instead of one after the other in this one;
                only for slow envs on free cores (benchmarks/eval_throughput.py).
        """
        self.num_episodes = num_episodes
        self.num_envs = min(num_envs, num_episodes)
        self.seed = seed
        self.success_threshold = success_threshold
        self.parallel = parallel
        self.env = None

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics: dict[str, float] = {}
        if trainer.is_global_zero:
            info = trainer.datamodule.info
            if self.env is None:
                self.env = make_eval_env(info, self.num_envs, self.seed, self.parallel)
            self.env.set_seed(self.seed)
            was_training = pl_module.training
            pl_module.eval()
            with improved_act(trainer, pl_module) as act:  # OPEX / TTT callbacks, when configured
                metrics = evaluate(act, self.env, info, self.num_episodes, pl_module.device, self.success_threshold)
            pl_module.train(was_training)
        for name, value in metrics.items():
            pl_module.log(name, torch.tensor(value), rank_zero_only=True)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Build the env before the first update: a dataset that cannot be evaluated fails now, not an epoch later.
        if trainer.is_global_zero and trainer.limit_val_batches != 0 and self.env is None:
            self.env = make_eval_env(trainer.datamodule.info, self.num_envs, self.seed)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
