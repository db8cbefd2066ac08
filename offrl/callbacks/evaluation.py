"""Evaluation roll-outs as a Lightning callback: at every validation (each epoch of updates) and at `test`.

A periodic checkpoint on an epoch's last update is written before that epoch's evaluation, and Lightning resumes
from it into the next epoch: the evaluation it missed runs at the resumed run's start, so a run that was killed
there logs (and draws random numbers) as one that never stopped.
"""

from __future__ import annotations

import lightning as L
import torch

from offrl import lightning_adapter
from offrl.callbacks.test_time import improved_act
from offrl.envs.evaluation import evaluate
from offrl.envs.factory import make_eval_env
from offrl.errors import OffrlError


class EvaluationCallback(L.Callback):
    def __init__(
        self,
        num_episodes: int = 10,
        num_envs: int = 10,
        seed: int = 12345,
        success_threshold: float = 0.45,
        parallel: bool = False,
        test_seed: int | None = None,
    ):
        """
        Args:
            num_episodes: episodes per evaluation.
            num_envs: environments stepped together (batched policy calls).
            seed: environment seed; every evaluation starts from the same initial states.
            success_threshold: goal distance that counts as success on goal tasks (PointMaze: 0.45).
            parallel: step each env in its own process (ParallelEnv) instead of one after the other in this one;
                only for slow envs on free cores (benchmarks/eval_throughput.py).
            test_seed: environment seed of `offrl test` (default seed + 1): episodes the evaluations during
                training, which picked the checkpoint, never saw.
        """
        for name, value in (("num_episodes", num_episodes), ("num_envs", num_envs)):
            if value < 1:
                raise OffrlError(f"evaluation.{name} must be a positive integer, got {value}; set trainer.limit_val_batches 0 to train without evaluating")
        self.num_episodes = num_episodes
        self.num_envs = min(num_envs, num_episodes)
        self.seed = seed
        self.success_threshold = success_threshold
        self.parallel = parallel
        self.test_seed = seed + 1 if test_seed is None else test_seed
        self.env = None
        self.evaluated_at = 0  # the update of the last evaluation during fit (none is due at 0)

    def evaluation_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        """One evaluation's metrics, on rank 0 (empty on the others)."""
        metrics: dict[str, float] = {}
        if trainer.is_global_zero:
            info = trainer.datamodule.info
            if self.env is None:
                self.env = make_eval_env(info, self.num_envs, self.seed, self.parallel)
            self.env.set_seed(self.test_seed if trainer.state.fn == "test" else self.seed)
            was_training = pl_module.training
            pl_module.eval()
            with improved_act(trainer, pl_module) as act:  # OPEX / TTT callbacks, when configured
                metrics = evaluate(act, self.env, info, self.num_episodes, pl_module.device, self.success_threshold)
            pl_module.train(was_training)
        return metrics

    def _run(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not acts_in_env(pl_module):
            return
        for name, value in self.evaluation_metrics(trainer, pl_module).items():
            pl_module.log(name, torch.tensor(value), rank_zero_only=True)
        if trainer.training or trainer.state.fn == "fit":
            self.evaluated_at = trainer.global_step

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        # After every on_train_start (the RNG states are restored there), before the first update of the epoch
        # (Lightning resumes such a checkpoint as the middle of an epoch: no on_train_epoch_start).
        if not acts_in_env(pl_module):
            return
        step, every = trainer.global_step, trainer.datamodule.steps_per_epoch
        due = step % every == 0 and (step // every) % (trainer.check_val_every_n_epoch or 1) == 0
        if self.evaluated_at < step and due and trainer.limit_val_batches != 0:
            metrics = self.evaluation_metrics(trainer, pl_module)
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=lightning_adapter.logging_step(trainer) - 1)
            self.evaluated_at = step

    def state_dict(self) -> dict[str, int]:
        return {"evaluated_at": self.evaluated_at}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.evaluated_at = int(state_dict.get("evaluated_at", 0))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Build the env before the first update: a dataset that cannot be evaluated fails now, not an epoch later.
        if trainer.is_global_zero and trainer.limit_val_batches != 0 and self.env is None and acts_in_env(pl_module):
            self.env = make_eval_env(trainer.datamodule.info, self.num_envs, self.seed, self.parallel)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._run(trainer, pl_module)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None


def acts_in_env(pl_module: L.LightningModule) -> bool:
    """Whether the module is a policy to evaluate in the env (a dynamics fit validates on hold-out data instead)."""
    return getattr(pl_module, "acts_in_env", True)
