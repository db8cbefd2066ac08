"""What every offrl LightningModule shares: networks sized from the dataset once it is loaded, `act`, and the
gradient update as one plain-PyTorch function (`update`).

The rules `losses` follows, so that offrl.algos.compiled can compile the update or capture it as a CUDA graph
from outside (and so that the eager update never waits for the device):
- pure: every loss from the batch and the current parameters; no module attribute is set, no buffer written
  (state that changes between updates is the optimisers', or `after_optimizer_step`'s, e.g. target networks);
- no host sync: no `.item()`, no Python branch on a tensor's value, no shape that depends on the data; a choice
  between code paths (TD3's delayed actor, RSP's stage) is the update's `phase`, fixed per phase;
- each loss reaches only its own network's parameters: targets detached, a critic frozen (offrl.nn.mlp.frozen)
  where an actor's loss goes through it, since one backward of their sum trains every network.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable

import lightning as L
import torch
from tensordict import TensorDict

from offrl import lightning_adapter
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError

UpdateFn = Callable[[TensorDict], dict[str, torch.Tensor]]
def apply_gradients(
    losses: dict[str, torch.Tensor],
    optimizers: list[torch.optim.Optimizer],
    before_backward: Callable[[torch.Tensor], None] | None = None,
) -> None:
    """One backward of the summed losses, then every optimiser steps. Each loss must reach only its own network
    (targets detached, critics frozen where another network's loss goes through them)."""
    forget_gradients(optimizers)  # parameters outside this update get no gradient, so no step
    loss = torch.stack(list(losses.values())).sum()
    if before_backward is not None:
        before_backward(loss)
    loss.backward()
    for optimizer in optimizers:
        optimizer.step()


def forget_gradients(optimizers: list[torch.optim.Optimizer]) -> None:
    """optimizer.zero_grad(set_to_none=True) for every optimiser, in a form torch.compile can trace."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None


def cosine_decay(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate times (1 + cos(pi * min(t, steps) / steps)) / 2: down to 0 over `steps` updates, then held
    (optax's cosine_decay_schedule, as IQL uses; torch's CosineAnnealingLR would climb back after `steps`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.5 * (1.0 + math.cos(math.pi * min(t, steps) / steps)))


def check_td_settings(discount: float, tau: float) -> None:
    """The discount and Polyak rate of every temporal-difference learner, each refused in one sentence."""
    if not 0.0 <= discount < 1.0:
        raise OffrlError(f"model.discount must lie in [0, 1), got {discount}")
    if not 0.0 < tau <= 1.0:
        raise OffrlError(f"model.tau must lie in (0, 1], got {tau}")


class OfflineAlgorithm(L.LightningModule):
    """Subclasses build their networks in `build` (called once, from `setup`, when dataset sizes are known),
    return every loss of a batch from `losses`, and implement `act(observation, goal=None) -> action`.

    A training step is `update`: all losses from the current parameters, one backward pass, then every optimiser
    steps and `after_optimizer_step` runs (e.g. target-network averaging). It touches no Lightning machinery, so
    it can be wrapped whole by `torch.compile` or captured as one CUDA graph (`accelerate_update`). Lightning only
    counts the step, steps the learning-rate schedulers and logs the losses; the losses stay on the device and
    are averaged over each logging window, so the training step never waits for the device.
    """

    algorithm_name = "offline"
    progress_bar_loss: str | None = None  # the loss shown in the progress bar
    acts_in_env = True  # a policy: EvaluationCallback rolls it out in the env at every validation

    def __init__(self):
        super().__init__()
        self.built = False
        self.automatic_optimization = False  # `update` steps the optimisers itself
        self.compile_update = False
        self.cuda_graph_update = False
        self._update_fns: dict[Hashable, UpdateFn] = {}
        self._phase: Hashable = None  # the phase of the update being run (set by `update`)
        self._loss_window: dict = {"sums": None, "count": 0, "names": []}  # a dict: no nn.Module setattr per step

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
        if str(self.trainer.precision).startswith("16"):
            # `update` back-propagates without Lightning's gradient scaler, which float16 needs.
            raise OffrlError(f"trainer.precision {self.trainer.precision} is not supported; use bf16-mixed or 32")
        self.build(datamodule.info, datamodule.transitions)
        self.built = True

    def build(self, info: DatasetInfo, transitions) -> None:
        raise NotImplementedError

    def act(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    # -- the update --------------------------------------------------------------------------------------

    def losses(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """Every loss of one update, from the current parameters; they are summed and back-propagated once."""
        raise NotImplementedError

    def prepare_batch(self, batch: TensorDict) -> TensorDict:
        """The batch `update` trains on, made from the DataModule's, outside the (compilable) update; e.g. extra
        batches drawn from parts of the data."""
        return batch

    def after_optimizer_step(self) -> None:
        """Work after every optimiser has stepped, inside the update (e.g. Polyak averaging of target networks)."""

    def update_cadences(self) -> dict[str, int]:
        """The module's own work done every N updates, by config name (UpdateLoop checks N against its K)."""
        return {}

    def phase_at(self, update: int) -> Hashable:
        """The phase of update number `update` (from 0): what it trains, when that changes between updates, e.g. the
        stage of stage-wise training or whether TD3's delayed actor steps. One update graph per phase."""
        return None

    @property
    def phase(self) -> Hashable:
        """The phase of the update being run. `losses` branch on this, not on the step counter: a compiled graph
        would guard on the counter's value and compile again at every update."""
        return self._phase if self._phase is not None else self.phase_at(self.global_step)

    def torch_optimizers(self) -> list[torch.optim.Optimizer]:
        optimizers = self.optimizers(use_pl_optimizer=False)
        return optimizers if isinstance(optimizers, list) else [optimizers]

    def update(
        self,
        batch: TensorDict,
        optimizers: list[torch.optim.Optimizer],
        before_backward: Callable[[torch.Tensor], None] | None = None,
        phase: Hashable = None,
    ) -> dict[str, torch.Tensor]:
        """One gradient update in plain PyTorch; returns the detached losses. `before_backward(loss)` is the
        strategy's hook (DDP readies its gradient all-reduce there; a no-op on one device); `phase` is the
        update's phase_at (None: that of the current update)."""
        self._phase = phase
        losses = self.losses(batch)
        apply_gradients(losses, optimizers, before_backward)
        self.after_optimizer_step()
        return {name: loss.detach() for name, loss in losses.items()}

    def accelerate_update(self, compile: bool = False, cuda_graphs: bool = False) -> None:
        """Opt in to `torch.compile` of the whole update and/or its capture as one CUDA graph (fixed batch shapes),
        both by offrl.algos.compiled; an algorithm whose update cannot be captured refuses here."""
        self.compile_update, self.cuda_graph_update = compile, cuda_graphs
        self._update_fns = {}

    def update_fn(self) -> UpdateFn:
        """This update phase's function: `update` itself, or its compiled / graphed form (offrl.algos.compiled)."""
        phase = self.phase_at(self.global_step)
        if phase not in self._update_fns:
            optimizers, before_backward = self.torch_optimizers(), self.trainer.strategy.pre_backward
            if self.compile_update or self.cuda_graph_update:
                from offrl.algos.compiled import accelerated

                update = accelerated(self, optimizers, phase, self.compile_update, self.cuda_graph_update, before_backward)
            else:
                update = self.eager_update(optimizers, phase, before_backward)
            self._update_fns[phase] = update
        return self._update_fns[phase]

    def eager_update(
        self, optimizers: list[torch.optim.Optimizer], phase: Hashable, before_backward: Callable[[torch.Tensor], None] | None = None,
    ) -> UpdateFn:
        """`update` of one phase as a function of the batch alone."""
        return functools.partial(self.update, optimizers=optimizers, before_backward=before_backward, phase=phase)

    def training_step(self, batch: TensorDict | list[TensorDict], batch_idx: int) -> dict[str, torch.Tensor]:
        """One update per batch; the DataModule hands over a list of `updates_per_step` batches (UpdateLoop) to
        spread the trainer's per-step work over several updates. Returns the last update's losses."""
        losses, updates = {}, 0
        for one_batch in batch if isinstance(batch, list) else [batch]:
            if self.global_step >= self.trainer.max_steps > 0:
                break
            losses = self.update_fn()(self.prepare_batch(one_batch))
            self._count_update()
            schedulers = self.lr_schedulers()
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
                scheduler.step()
            self.accumulate_losses(losses)
            updates += 1
        # Lightning's logging step counts trainer steps; count updates instead, so that log_every_n_steps and the
        # x-axis of every curve mean updates whatever performance.updates_per_step is.
        lightning_adapter.add_logging_steps(self.trainer, max(updates - 1, 0))
        self.log_losses()
        return losses

    def _count_update(self) -> None:
        # Manual optimisation counts a global step per LightningOptimizer.step; `update` steps the torch
        # optimisers directly (a graph cannot call back into Lightning), so count the update here, once.
        optimizer = self.optimizers()
        lightning_adapter.count_update(optimizer[0] if isinstance(optimizer, list) else optimizer)

    def accumulate_losses(self, losses: dict[str, torch.Tensor]) -> None:
        """Sum the losses on the device (no host sync); `log_losses` logs their window means."""
        stacked = torch.stack(list(losses.values()))
        window = self._loss_window
        window["sums"] = stacked if window["count"] == 0 else window["sums"].to(stacked.device) + stacked  # restored on the CPU
        window["count"] += 1
        window["names"] = list(losses)

    def log_losses(self) -> None:
        """Log `train/<name>` as the mean over the logging window, on the steps where Lightning writes logs."""
        window = self._loss_window
        if window["count"] == 0 or not lightning_adapter.logs_due(self.trainer):
            return  # Lightning would drop values logged on other steps; logging costs host work every time
        means = dict(zip((f"train/{name}" for name in window["names"]), (window["sums"] / window["count"]).unbind()))
        self.log_now(means, prog_bar=f"train/{self.progress_bar_loss}")
        window["count"] = 0

    def log_now(self, scalars: dict[str, torch.Tensor | float], prog_bar: str | None = None) -> None:
        """Write training scalars to the loggers at once, at Lightning's step, and `self.log` them for the progress
        bar and callbacks. Lightning writes `self.log` values only after on_train_batch_end, where ModelCheckpoint
        saves, so a run killed between the two would resume from a checkpoint past a point that never reached the
        event file."""
        for name, value in scalars.items():
            self.log(name, value, prog_bar=name == prog_bar, logger=False)
        values = {name: float(value) for name, value in scalars.items()}
        for logger in self.loggers:
            logger.log_metrics(values, step=lightning_adapter.logging_step(self.trainer))
            logger.save()  # flushes the event file, as Lightning does after every write

    # -- evaluation and checkpoints ----------------------------------------------------------------------

    def validation_step(self, batch, batch_idx) -> None:
        """Evaluation is environment roll-outs, run by EvaluationCallback."""

    def test_step(self, batch, batch_idx) -> None:
        """Evaluation is environment roll-outs, run by EvaluationCallback."""

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The open logging window is training state: a resumed run logs the same window means.
        checkpoint["loss_window"] = dict(self._loss_window)
        # What made the checkpoint, so that a run of another algorithm or dataset refuses it (offrl.cli).
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        info = getattr(datamodule, "info", None)
        spec = (info.eval_env_spec or info.env_spec) if info is not None else None
        checkpoint["offrl"] = {
            "algorithm": f"{type(self).__module__}.{type(self).__qualname__}",
            "dataset_id": getattr(datamodule, "dataset_id", None),
            "env_id": spec.id if spec is not None else None,  # an online run may start from a model fitted on its env's data
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.checkpoint_updates = int(checkpoint.get("global_step", 0))  # what `offrl test` reports its scores against
        if "loss_window" in checkpoint:
            self._loss_window = dict(checkpoint["loss_window"])
        # A checkpoint from another dataset fails here in one sentence instead of a size-mismatch traceback.
        own = self.state_dict()
        for name, tensor in checkpoint["state_dict"].items():
            if name in own and own[name].shape != tensor.shape:
                raise OffrlError(
                    f"checkpoint parameter {name} has shape {tuple(tensor.shape)} but this config and dataset build "
                    f"{tuple(own[name].shape)}; use the run's own config (its config.yaml) and dataset"
                )
        # ... and a checkpoint of an older offrl (other tensor names) instead of a missing-keys traceback.
        missing, unexpected = sorted(own.keys() - checkpoint["state_dict"].keys()), sorted(checkpoint["state_dict"].keys() - own.keys())
        if missing or unexpected:
            raise OffrlError(
                f"checkpoint tensors do not match this model (missing {missing[:3]}, unexpected {unexpected[:3]}): it was "
                "made by another version of offrl or with other settings; train again, or use the version that made it"
            )
