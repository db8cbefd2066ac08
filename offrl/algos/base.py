"""What every offrl LightningModule shares: networks sized from the dataset once it is loaded, and `act`."""

from __future__ import annotations

import lightning as L
import torch

from offrl.data.minari_io import DatasetInfo
from offrl.errors import OffrlError


class OfflineAlgorithm(L.LightningModule):
    """Subclasses build their networks in `build` (called once, from `setup`, when dataset sizes are known)
    and implement `act(observation, goal=None) -> action` for evaluation."""

    algorithm_name = "offline"

    def __init__(self):
        super().__init__()
        self.built = False

    @property
    def datamodule(self):
        return self.trainer.datamodule

    def goal_dim(self) -> int:
        """Size of the goal the policy is conditioned on: 0 unless the datamodule relabels goals."""
        datamodule = self.datamodule
        if not hasattr(datamodule, "goal_key"):
            return 0
        return datamodule.transitions[datamodule.goal_key].shape[-1]

    def setup(self, stage: str) -> None:
        if self.built:
            return
        datamodule = self.datamodule
        if datamodule is None or getattr(datamodule, "info", None) is None:
            raise OffrlError(f"{type(self).__name__} needs an offrl DataModule (set `data:` in the config)")
        self.build(datamodule.info, datamodule.transitions)
        self.built = True

    def build(self, info: DatasetInfo, transitions) -> None:
        raise NotImplementedError

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def step_optimizers(self, losses: dict[str, torch.Tensor]) -> None:
        """One manual update: a single backward of the summed losses, then every optimiser steps.

        Each loss must reach only its own network's parameters (targets detached, critics frozen where another
        network's loss goes through them). Lightning counts every LightningOptimizer.step as a global step, so all
        but the last optimiser step through their plain torch optimisers and trainer.global_step counts updates.
        """
        *others, last = self.optimizers()
        for optimizer in (*others, last):
            optimizer.zero_grad(set_to_none=True)
        self.manual_backward(sum(losses.values()))
        for optimizer in others:
            optimizer.optimizer.step()
        last.step()

    def validation_step(self, batch, batch_idx) -> None:
        """Evaluation is environment roll-outs, run by EvaluationCallback."""

    def test_step(self, batch, batch_idx) -> None:
        """Evaluation is environment roll-outs, run by EvaluationCallback."""

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint from another dataset fails here in one sentence instead of a size-mismatch traceback.
        own = self.state_dict()
        for name, tensor in checkpoint["state_dict"].items():
            if name in own and own[name].shape != tensor.shape:
                raise OffrlError(
                    f"checkpoint parameter {name} has shape {tuple(tensor.shape)} but this dataset needs "
                    f"{tuple(own[name].shape)}; use a checkpoint trained on the same dataset"
                )
