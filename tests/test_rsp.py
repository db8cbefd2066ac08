"""RSP: sub-goal targets, return-to-go conditions, the coarse-to-fine recursion, both training modes,
exact checkpoint restore, and a planner that learns PointMaze UMaze."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from conftest import random_policy_success, write_synthetic
from conftest import trainer as quiet_trainer

from offrl.algos.rsp import RSP
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.data.datamodules import SkipStepDataModule
from offrl.errors import OffrlError

LENGTHS = [5, 17, 1, 30, 9, 40]
MAZE = "offrl/pointmaze/umaze-v0"  # the same id and size as test_bc, so a session generates it once
MAZE_STEPS = 30_000


@pytest.fixture(scope="module")
def reward_data():
    episodes = write_synthetic("test/rsp/hopper-v0", LENGTHS)
    return "test/rsp/hopper-v0", episodes


@pytest.fixture(scope="module")
def goal_data():
    write_synthetic("test/rsp/maze-v0", LENGTHS, goal=True, seed=2)
    return "test/rsp/maze-v0"


def ready(module: SkipStepDataModule) -> SkipStepDataModule:
    module.setup("fit")
    module._device_setup(torch.device("cpu"))
    return module


def fit(model: RSP, datamodule: SkipStepDataModule, max_steps: int, callbacks=()) -> L.Trainer:
    trainer = quiet_trainer(max_steps, callbacks, evaluate=False)
    trainer.fit(model, datamodule)
    return trainer


# -- data ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("goal", [False, True])
def test_subgoal_targets_are_true_future_deltas_clamped_at_the_episode_end(reward_data, goal_data, goal):
    dataset_id = goal_data if goal else reward_data[0]
    module = ready(SkipStepDataModule(dataset_id, batch_size=4096, scales=[1, 4, 8], seed=5))
    assert module.plan_scales == [8, 4, 1]
    batch = module.sample(4096)
    transitions = module.transitions
    deltas, index = batch["subgoal_deltas"], batch["index"]
    assert deltas.shape == (4096, 3, transitions["observation"].shape[-1])
    # Synthetic observations hold (episode id, step t): a delta keeps the episode and moves min(k, T - t) steps,
    # T the episode's length, whose final next-observation is the last state.
    episode_length = (transitions["episode_last"] - transitions["index"] + transitions["step"] + 1)[index]
    for row, k in enumerate(module.plan_scales):
        assert (deltas[:, row, 0] == 0).all()
        expected_steps = torch.minimum(torch.full_like(index, k), episode_length - transitions["step"][index])
        assert (deltas[:, row, 1] == expected_steps.float()).all()
        future = torch.minimum(index + k - 1, transitions["episode_last"][index])
        torch.testing.assert_close(deltas[:, row], transitions["next", "observation"][future] - batch["observation"], rtol=0, atol=0)
    # Both the clamped and unclamped cases occur, as do episode ends themselves.
    assert (deltas[:, 0, 1] < 8).any() and (deltas[:, 0, 1] == 8).any()
    assert batch["condition"].shape == ((4096, 2) if goal else (4096, 1))


def test_average_return_to_go_follows_rvs(reward_data):
    dataset_id, episodes = reward_data
    module = ready(SkipStepDataModule(dataset_id, batch_size=64))
    assert module.rtg_horizon == 1000  # Hopper-v5's time limit
    rows = []
    for episode in episodes:
        rewards = np.asarray(episode.rewards, dtype=np.float64)
        to_go = rewards[::-1].cumsum()[::-1]
        rows.append(to_go / (1000 - np.arange(len(rewards))))
    np.testing.assert_allclose(module.transitions["average_rtg"][:, 0].numpy(), np.concatenate(rows), rtol=1e-5, atol=1e-6)
    with pytest.raises(OffrlError, match="rtg_horizon 20 is shorter than the longest episode"):
        ready(SkipStepDataModule(dataset_id, rtg_horizon=20))


def test_bad_values_are_refused(reward_data):
    for scales in ([32, 16], [8, 8], [0, 4], []):
        with pytest.raises(OffrlError, match="data.scales must be"):
            SkipStepDataModule("offrl/pointmaze/umaze-v0", scales=scales)
    for kwargs, message in (
        ({"lr": 0}, "model.lr must be positive"),
        ({"training": "sequential"}, "model.training must be one of"),
        ({"steps_per_stage": 0}, "model.steps_per_stage"),
        ({"lr_schedule": "linear"}, "model.lr_schedule"),
    ):
        with pytest.raises(OffrlError, match=message):
            RSP(**kwargs)
    data = SkipStepDataModule(reward_data[0], batch_size=32)
    with pytest.raises(OffrlError, match="model.target_return must be set"):
        fit(RSP(hidden_dims=[8], steps_per_stage=2), data, 4)
    with pytest.raises(OffrlError, match="trainer.max_steps must be 6"):
        fit(RSP(hidden_dims=[8], steps_per_stage=3, target_return=90), data, 5)


# -- the planner ---------------------------------------------------------------------------------------


def test_each_level_is_fed_the_coarser_predictions(goal_data):
    model = RSP(hidden_dims=[16, 16], steps_per_stage=2)
    fit(model, SkipStepDataModule(goal_data, batch_size=32, scales=[2, 5]), 6)
    coarse, fine = model.subgoal_models
    # (s, goal) = 4 + 2; each finer level adds one 4-dim sub-goal.
    assert [coarse.net[0].in_features, fine.net[0].in_features, model.policy.net[0].in_features] == [6, 10, 14]

    seen = {}
    hooks = [
        module.register_forward_hook(lambda mod, args, out, name=name: seen.update({name: (args[0], out[0])}))
        for name, module in (("coarse", coarse), ("fine", fine), ("policy", model.policy))
    ]
    observation, goal = torch.randn(7, 4), torch.randn(7, 2)
    model.act(observation, goal)
    for hook in hooks:
        hook.remove()
    state = seen["coarse"][0]
    assert state.shape == (7, 6)
    torch.testing.assert_close(seen["fine"][0], torch.cat([state, seen["coarse"][1]], -1), rtol=0, atol=0)
    torch.testing.assert_close(
        seen["policy"][0], torch.cat([state, seen["coarse"][1], seen["fine"][1]], -1), rtol=0, atol=0
    )
    # A different coarse prediction changes the finer sub-goal and the action, not the other way round.
    plan = model.plan(observation, goal)
    with torch.no_grad():
        coarse.net[-1].bias += 1.0
    moved = model.plan(observation, goal)
    # (The action may sit at the clipped bound, so the policy's dependence is checked by its inputs above.)
    assert not torch.allclose(moved[:, 1], plan[:, 1])
    with torch.no_grad():
        coarse.net[-1].bias -= 1.0
        fine.net[-1].bias += 1.0
    torch.testing.assert_close(model.plan(observation, goal)[:, 0], plan[:, 0])


class LossRecorder(L.Callback):
    def __init__(self):
        self.losses: list[dict[str, float]] = []
        self.params_at: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(self, pl_module):
        return {name: p.detach().clone() for name, p in pl_module.named_parameters()}

    def on_train_start(self, trainer, pl_module):
        self.params_at[0] = self.snapshot(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append({f"train/{k}": v.item() for k, v in outputs.items()})  # the step's losses
        self.params_at[trainer.global_step] = self.snapshot(pl_module)


def falls(values: list[float], window: int = 25) -> bool:
    return float(np.mean(values[-window:])) < float(np.mean(values[:window])) - 0.1


def test_depth_two_trains_stage_by_stage_and_each_stage_lowers_its_loss(in_tmp_dir):
    steps = 150
    recorder = LossRecorder()
    model = RSP(hidden_dims=[64, 64], steps_per_stage=steps, normalize_observations=False)
    data = SkipStepDataModule(MAZE, batch_size=256, steps_per_epoch=3 * steps, scales=[8, 16], generate_steps=MAZE_STEPS)
    fit(model, data, 3 * steps, [recorder])
    for stage, name in enumerate(["train/subgoal_nll_k16", "train/subgoal_nll_k8", "train/policy_nll"]):
        assert falls([row[name] for row in recorder.losses[stage * steps : (stage + 1) * steps]]), name
    # A stage updates only its own network (the noise scales it reads from coarser levels are detached).
    for stage, owner in enumerate(["subgoal_models.0.", "subgoal_models.1.", "policy."]):
        start, end = recorder.params_at[stage * steps], recorder.params_at[(stage + 1) * steps]
        for name in start:
            assert (not torch.equal(start[name], end[name])) == name.startswith(owner), (stage, name)


def test_joint_training_lowers_every_loss(in_tmp_dir):
    steps = 150
    recorder = LossRecorder()
    model = RSP(hidden_dims=[64, 64], steps_per_stage=steps, training="joint", normalize_observations=False)
    data = SkipStepDataModule(MAZE, batch_size=256, steps_per_epoch=steps, scales=[8, 16], generate_steps=MAZE_STEPS)
    fit(model, data, steps, [recorder])
    for name in ["train/subgoal_nll_k16", "train/subgoal_nll_k8", "train/policy_nll"]:
        assert falls([row[name] for row in recorder.losses]), name


def test_a_checkpoint_restores_the_planner_exactly(reward_data, tmp_path):
    dataset_id = reward_data[0]
    model = RSP(hidden_dims=[32, 32], steps_per_stage=5, target_return=90.0)
    trainer = fit(model, SkipStepDataModule(dataset_id, batch_size=64, scales=[2, 4]), 15)
    trainer.save_checkpoint(tmp_path / "rsp.ckpt")
    # Restore against a data module with another horizon: the planner's own buffers must win.
    restored = RSP(hidden_dims=[32, 32], steps_per_stage=5, target_return=90.0)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        restored, SkipStepDataModule(dataset_id, batch_size=64, scales=[2, 4], rtg_horizon=2000), ckpt_path=tmp_path / "rsp.ckpt", verbose=False
    )
    assert model.target_condition.item() == pytest.approx(0.9 / 1000)  # synthetic reference scores 0..1, Hopper-v5 horizon
    observation = torch.randn(9, 11)
    assert torch.equal(model.act(observation), restored.act(observation))
    assert torch.equal(model.plan(observation), restored.plan(observation))
    assert not torch.equal(model.input_normalizer.std, torch.ones(12))  # the z-scoring is part of what was restored
    with pytest.raises(OffrlError, match="trained with data.scales"):
        L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False).test(
            RSP(hidden_dims=[32, 32], steps_per_stage=5, target_return=90.0),
            SkipStepDataModule(dataset_id, batch_size=64, scales=[3, 4]),
            ckpt_path=tmp_path / "rsp.ckpt",
            verbose=False,
        )


# -- learning ------------------------------------------------------------------------------------------


def test_rsp_learns_umaze_far_better_than_random(in_tmp_dir):
    episodes = 30
    L.seed_everything(0)
    steps = 1000
    data = SkipStepDataModule(MAZE, batch_size=256, steps_per_epoch=2 * steps, scales=[32], generate_steps=MAZE_STEPS)
    # At this budget the state-independent log-stds (Adam moves them ~lr per step from 0, and the cosine schedule
    # stops them early) still overstate the sub-goal model's error, so the official noise swamps the sub-goal:
    # success 0.6-0.87 with it, 1.0 without over seeds 0-2. At the paper's 20k steps per stage they converge.
    model = RSP(hidden_dims=[128, 128], steps_per_stage=steps, normalize_observations=False, noise_scale=0.0)
    trainer = quiet_trainer(2 * steps, [EvaluationCallback(num_episodes=episodes, num_envs=10)])
    trainer.fit(model, data)
    rsp_success = trainer.callback_metrics["eval/success"].item()

    random_success = random_policy_success(data.info, episodes)
    print(f"umaze success over {episodes} episodes: RSP {rsp_success:.2f}, random {random_success:.2f}")
    assert rsp_success >= random_success + 0.5
