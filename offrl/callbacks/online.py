"""Online interaction as a Lightning callback: step TorchRL envs with the module's exploration policy and append
every step to the ReplayDataModule's buffer, keeping a fixed ratio of updates to env steps.

Before the first update the envs take `warmup_steps` uniformly random actions. After update u the buffer is filled
to warmup_steps + u / updates_per_env_step transitions, so update u + 1 samples from all the data taken so far
(updates_per_env_step 1 is SAC's one update per env step; ADMPO-ON's 20 takes one env step every 20 updates).
The module provides `explore(observation) -> action` (a sample of its policy, on its device).
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch

from offrl.data.replay import ReplayDataModule
from offrl.envs.factory import make_eval_env
from offrl.errors import OffrlError


class OnlineInteraction(L.Callback):
    def __init__(self, warmup_steps: int = 5000, updates_per_env_step: float = 1.0, seed: int | None = None):
        """
        Args:
            warmup_steps: transitions of uniformly random actions taken before the first update.
            updates_per_env_step: gradient updates per transition collected (the update-to-data ratio).
            seed: seed of the envs and of the warm-up actions (None: the ReplayDataModule's data.seed, which a study's
                `seeds` sets, so each seed of a study meets its own envs).
        """
        if warmup_steps < 0:
            raise OffrlError(f"OnlineInteraction warmup_steps must be non-negative, got {warmup_steps}")
        if updates_per_env_step <= 0:
            raise OffrlError(f"OnlineInteraction updates_per_env_step must be positive, got {updates_per_env_step}")
        self.warmup_steps = warmup_steps
        self.updates_per_env_step = updates_per_env_step
        self.seed = seed
        self.env = None
        self.state = None  # the envs' current root TensorDict
        self.random_actions: torch.Generator | None = None  # draws the warm-up actions
        self.episode_returns: np.ndarray | None = None
        self.finished_returns: list[float] = []

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        if not isinstance(trainer.datamodule, ReplayDataModule):
            raise OffrlError("OnlineInteraction needs data: class_path offrl.data.replay.ReplayDataModule")
        if not hasattr(pl_module, "explore"):
            raise OffrlError(f"{type(pl_module).__name__} cannot act online (no explore()); use offrl.algos.sac.SAC "
                             "or offrl.algos.admpo.ADMPOOnline or offrl.algos.mopo.MBPO")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule: ReplayDataModule = trainer.datamodule
        if datamodule.updates_per_step > 1:  # set by UpdateLoop's setup, which may run after this callback's
            raise OffrlError(
                f"online training takes env steps between updates, so it runs one update per trainer step: set "
                f"performance.updates_per_step 1 (got {datamodule.updates_per_step})"
            )
        datamodule._device_setup(pl_module.device)
        seed = self.seed if self.seed is not None else datamodule.seed
        # A resumed run (a restored buffer) seeds its new envs past the episodes already taken, not from the start.
        env_seed = seed if datamodule.size == 0 else seed + datamodule.next_episode_id
        self.env = make_eval_env(datamodule.info, datamodule.num_envs, env_seed)
        self.state = self.env.reset()
        self.episode_returns = np.zeros(datamodule.num_envs)
        if self.random_actions is None:
            self.random_actions = torch.Generator().manual_seed(seed)
        self.collect(datamodule, pl_module, self.warmup_steps - datamodule.size, explore=False)
        self.collect_for_update(trainer, pl_module)

    def state_dict(self) -> dict:
        return {
            "random_actions": self.random_actions.get_state() if self.random_actions is not None else None,
            "finished_returns": list(self.finished_returns),
        }

    def load_state_dict(self, state_dict: dict) -> None:
        if state_dict.get("random_actions") is not None:
            self.random_actions = torch.Generator()
            self.random_actions.set_state(state_dict["random_actions"])
        self.finished_returns = list(state_dict.get("finished_returns", []))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        if trainer.max_steps < 0 or trainer.global_step < trainer.max_steps:
            self.collect_for_update(trainer, pl_module)
        if trainer.global_step % trainer.log_every_n_steps == 0:
            scalars = {"train/env_steps": float(trainer.datamodule.size)}
            if self.finished_returns:
                scalars["train/episode_return"] = float(np.mean(self.finished_returns))
                self.finished_returns = []
            pl_module.log_now(scalars)

    def collect_for_update(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Fill the buffer to what the next update (number global_step + 1) may see."""
        target = self.warmup_steps + math.ceil((trainer.global_step + 1) / self.updates_per_env_step)
        self.collect(trainer.datamodule, pl_module, target - trainer.datamodule.size, explore=True)

    @torch.no_grad()
    def collect(self, datamodule: ReplayDataModule, pl_module: L.LightningModule, transitions: int, explore: bool) -> None:
        """Step every env until at least `transitions` more are stored (whole env batches)."""
        info = datamodule.info
        low, high = torch.tensor(info.action_low), torch.tensor(info.action_high)
        for _ in range(math.ceil(max(transitions, 0) / datamodule.num_envs)):
            if explore:
                observation = self.state["observation"].to(pl_module.device, torch.float32)
                action = pl_module.explore(observation).cpu()
            else:
                action = low + (high - low) * torch.rand(datamodule.num_envs, info.action_dim, generator=self.random_actions)
            self.state["action"] = action
            step, self.state = self.env.step_and_maybe_reset(self.state)
            done = step["next", "done"].reshape(-1).numpy()
            datamodule.extend(step, done)
            self.episode_returns += step["next", "reward"].reshape(-1).double().numpy()
            self.finished_returns.extend(self.episode_returns[done].tolist())
            self.episode_returns[done] = 0.0

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.env is not None:
            self.env.close()
            self.env = None
