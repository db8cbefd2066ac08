"""Value x extraction: every pair trains with finite, falling critic losses and bounded actions; CRL refuses reward
tasks; goal-conditioned IQL learns PointMaze UMaze from a small generated dataset and beats a random policy."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from offrl.algos.value_policy import ValuePolicy
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.data.datamodules import HindsightDataModule, TransitionDataModule
from offrl.errors import OffrlError

MAZE = "offrl/pointmaze/umaze-v0"
HOPPER = "offrl/mujoco/hopper/random-v0"
PAIRS = [(value, extraction) for value in ("sarsa", "iql", "crl") for extraction in ("awr", "ddpgbc", "sfbc")]
PAIRS.append(("td3", "ddpgbc"))

from conftest import random_policy_success, trainer


def small_datamodule(goal_conditioned: bool):
    if goal_conditioned:
        return HindsightDataModule(MAZE, batch_size=128, steps_per_epoch=200, generate_steps=30_000, geometric_discount=0.9)
    return TransitionDataModule(HOPPER, batch_size=128, steps_per_epoch=200, generate_steps=5000)


@torch.no_grad()
def mean_losses(model: ValuePolicy, batches: list) -> dict[str, torch.Tensor]:
    totals = [model.losses(batch) for batch in batches]
    return {name: torch.stack([losses[name] for losses in totals]).mean() for name in totals[0]}


@pytest.mark.parametrize("value,extraction", PAIRS)
def test_pair_trains_with_falling_critic_loss_and_bounded_actions(in_tmp_dir, value, extraction):
    L.seed_everything(0)
    datamodule = small_datamodule(goal_conditioned=value == "crl")
    model = ValuePolicy(value, extraction, hidden_dims=[32, 32], repr_dim=16, lr=1e-3, discount=0.9, sfbc_num_samples=8)
    fit = trainer(max_steps=200)
    fit.fit(model, datamodule)
    assert fit.global_step == 200  # one global step per update, however many optimisers
    held_out = [datamodule.sample(256) for _ in range(4)]
    trained = mean_losses(model, held_out)
    untrained_model = ValuePolicy(value, extraction, hidden_dims=[32, 32], repr_dim=16, discount=0.9, sfbc_num_samples=8)
    untrained_model.trainer = fit  # build() reads the datamodule through the trainer
    untrained_model.build(datamodule.info, datamodule.transitions.cpu())
    untrained = mean_losses(untrained_model, held_out)
    assert all(torch.isfinite(loss) for loss in trained.values()), trained
    assert trained["critic_loss"] < untrained["critic_loss"], (trained, untrained)

    batch = held_out[0][:16]
    goal = batch["next", "desired_goal"] if value == "crl" else None
    action = model.act(batch["observation"], goal)
    assert action.shape == batch["action"].shape
    assert (action >= model.action_low).all() and (action <= model.action_high).all()
    if extraction != "sfbc":
        assert torch.equal(action, model.act(batch["observation"], goal))


@pytest.mark.parametrize("value,awr_critic", [("sarsa", "current"), ("iql", "current"), ("crl", "current"), ("sarsa", "target"), ("iql", "target")])
def test_awr_reads_the_value_losses_q_and_v_as_its_own_forward_passes_would(in_tmp_dir, value, awr_critic):
    """AWR's advantage comes from the Q and V the value losses already computed on the batch: the same actor loss
    as forward passes of its own through the critic it names (current or target) and the value, and a different
    one from the other critic."""
    from offrl.algos.value_policy import awr_actor_loss

    L.seed_everything(0)
    datamodule = small_datamodule(goal_conditioned=value == "crl")
    model = ValuePolicy(value, "awr", hidden_dims=[32, 32], repr_dim=16, lr=1e-3, discount=0.9, awr_critic=awr_critic)
    trainer(max_steps=50).fit(model, datamodule)
    batch = datamodule.sample(256)
    with torch.no_grad():
        shared = model.losses(batch)["actor_loss"]
        obs, goal = model.normalized_inputs(batch["observation"], batch.get("goal"))
        fresh = awr_actor_loss(model, obs, goal, batch["action"], None, None)
        torch.testing.assert_close(shared, fresh, rtol=1e-6, atol=0.0)
        if value != "crl":
            model.hparams.awr_critic = "current" if awr_critic == "target" else "target"
            assert not torch.allclose(awr_actor_loss(model, obs, goal, batch["action"], None, None), shared, rtol=1e-4)


def test_awr_from_a_target_critic_is_refused_for_crl_which_has_none():
    with pytest.raises(OffrlError, match="awr_critic target needs a target critic"):
        ValuePolicy("crl", "awr", awr_critic="target")
    with pytest.raises(OffrlError, match="model.awr_critic must be one of"):
        ValuePolicy("iql", "awr", awr_critic="online")


def test_crl_refuses_reward_tasks(in_tmp_dir):
    with pytest.raises(OffrlError, match="goal-conditioned only"):
        trainer(max_steps=1).fit(ValuePolicy("crl", "ddpgbc", hidden_dims=[8]), small_datamodule(goal_conditioned=False))


@pytest.mark.parametrize("extraction", ["awr", "sfbc"])
def test_likelihood_extractions_refuse_deterministic_actors(extraction):
    with pytest.raises(OffrlError, match="gaussian"):
        ValuePolicy("iql", extraction, actor="deterministic")


def test_run_name_is_value_and_extraction():
    assert ValuePolicy("iql", "ddpgbc").algorithm_name == "iql_ddpgbc"
    assert ValuePolicy("sarsa", "ddpgbc", actor="deterministic", name="td3bc").algorithm_name == "td3bc"


def test_goal_conditioned_iql_awr_beats_random_on_umaze(in_tmp_dir):
    L.seed_everything(0)
    episodes = 20
    datamodule = HindsightDataModule(
        MAZE,
        batch_size=256,
        steps_per_epoch=1500,
        generate_steps=30_000,
        future_goal_prob=0.5,
        random_goal_prob=0.3,
        current_goal_prob=0.2,
        geometric_discount=0.99,
    )
    model = ValuePolicy(
        "iql", "awr", hidden_dims=[128, 128], layer_norm=True, lr=1e-3, expectile=0.9, awr_temperature=3.0,
        learned_std=False, normalize_observations=False,
    )
    fit = trainer(max_steps=1500, callbacks=[EvaluationCallback(num_episodes=episodes, num_envs=10)])
    fit.fit(model, datamodule)
    success = fit.callback_metrics["eval/success"].item()

    random_success = random_policy_success(datamodule.info, episodes)
    print(f"umaze success over {episodes} episodes: IQL+AWR {success:.2f}, random {random_success:.2f}")
    assert success >= random_success + 0.3


def test_value_and_policy_train_on_their_own_prefix_of_episodes(in_tmp_dir):
    from conftest import write_synthetic

    from offrl.algos.value_policy import episode_prefix_size

    write_synthetic("test/fractions/hopper-v0", [10] * 20)  # observation[:, 0] = episode id
    datamodule = TransitionDataModule("test/fractions/hopper-v0", batch_size=512)
    datamodule.setup()
    assert episode_prefix_size(datamodule.transitions, 0.1) == 20  # two whole episodes
    assert episode_prefix_size(datamodule.transitions, 0.11) == 30  # rounded up to whole episodes
    assert episode_prefix_size(datamodule.transitions, 1.0) == 200

    model = ValuePolicy("iql", "ddpgbc", hidden_dims=[8], value_data_fraction=0.1, policy_data_fraction=0.5)
    fit = trainer(max_steps=1)
    fit.fit(model, datamodule)
    value_batch = model.prepare_batch(datamodule.sample(512))
    assert set(value_batch["observation"][:, 0].tolist()) == {0.0, 1.0}
    assert set(value_batch["policy", "observation"][:, 0].tolist()) == set(map(float, range(10)))
    full = ValuePolicy("iql", "ddpgbc", hidden_dims=[8])
    trainer(max_steps=1).fit(full, datamodule)
    batch = datamodule.sample(8)
    assert full.prepare_batch(batch) is batch


def test_data_fractions_must_lie_in_the_unit_interval():
    with pytest.raises(OffrlError, match="value_data_fraction"):
        ValuePolicy(value_data_fraction=0.0)


def test_tanh_mean_gaussian_keeps_its_mean_inside_any_action_box():
    """Normal(tanh(out), std) mapped into [low, high]: the mean never leaves the box, whatever the MLP outputs, and
    is tanh of the output itself on the unit box (IQL's official policy); the plain Gaussian's mean is the output."""
    from offrl.nn.mlp import GaussianMLP

    torch.manual_seed(0)
    low, high = torch.tensor([0.0, -3.0]), torch.tensor([2.0, -1.0])
    boxed, unit = GaussianMLP(4, [16], 2, mean_box=(low, high)), GaussianMLP(4, [16], 2, mean_box=([-1.0, -1.0], [1.0, 1.0]))
    plain = GaussianMLP(4, [16], 2)
    x = torch.randn(256, 4) * 100  # drives the MLPs' outputs far outside every box
    with torch.no_grad():
        assert boxed.net(x).abs().max() > 5
        mean, log_std = boxed(x)
        assert ((mean >= low) & (mean <= high)).all()  # tanh saturates to +-1 in float32 far out
        torch.testing.assert_close(mean, low + (high - low) * (torch.tanh(boxed.net(x)) + 1) / 2)
        torch.testing.assert_close(unit(x)[0], torch.tanh(unit.net(x)))
        torch.testing.assert_close(plain(x)[0], plain.net(x))
    assert torch.equal(log_std, torch.zeros_like(log_std))  # state-independent std, starting at 1
    assert "mean_low" not in plain.state_dict() and "mean_low" in boxed.state_dict()


@pytest.mark.parametrize("extraction", ["awr", "ddpgbc"])
def test_the_actor_learns_at_its_own_goals_and_the_value_at_the_value_goals(in_tmp_dir, extraction):
    """With an actor goal mix (OGBench's split), the actor's loss is taken at `actor_goal` (its Q and V too) and the
    value losses at `goal`: changing one goal set moves only its own losses."""
    from offrl.algos.value_policy import EXTRACTIONS

    L.seed_everything(0)
    datamodule = HindsightDataModule(MAZE, batch_size=128, steps_per_epoch=50, generate_steps=30_000, geometric_discount=0.9,
                                     future_goal_prob=0.5, random_goal_prob=0.3, current_goal_prob=0.2, actor_future_goal_prob=1.0)
    model = ValuePolicy("iql", extraction, hidden_dims=[32, 32], lr=1e-3, discount=0.9)
    trainer(max_steps=50).fit(model, datamodule)
    batch = datamodule.sample(256)
    assert "actor_goal" in batch.keys()
    with torch.no_grad():
        losses = model.losses(batch)
        obs, actor_goal = model.normalized_inputs(batch["observation"], batch["actor_goal"])
        torch.testing.assert_close(losses["actor_loss"], EXTRACTIONS[extraction](model, obs, actor_goal, batch["action"], None, None))
        moved_value_goals = model.losses(batch.clone().update({"goal": batch["goal"].flip(0)}))
        assert not torch.allclose(moved_value_goals["critic_loss"], losses["critic_loss"])
        torch.testing.assert_close(moved_value_goals["actor_loss"], losses["actor_loss"])
        moved_actor_goals = model.losses(batch.clone().update({"actor_goal": batch["actor_goal"].flip(0)}))
        torch.testing.assert_close(moved_actor_goals["critic_loss"], losses["critic_loss"])
        assert not torch.allclose(moved_actor_goals["actor_loss"], losses["actor_loss"])
