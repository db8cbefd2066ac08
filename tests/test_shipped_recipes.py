"""The shipped configs are the references' recipes: each test builds a run from a config a user runs (only the
network width, the data and the budget shrunk) and checks the behaviour the reference has.

- SfBC samples its candidates from a fitted behaviour policy: its std is learned, whatever `learned_std` says.
- TD3+BC (and the td3 value) update the actor and both targets every second critic update only.
- IQL's MuJoCo recipe scales rewards by 1000 / (max - min episode return) and decays the actor's lr by a cosine
  over the recipe's 1M updates, whatever trainer.max_steps a reduced budget sets; the value x extraction recipes
  take IQL's reward scale (their AWR temperature is IQL's) and keep the paper code's constant lr.
- TD3+BC's actor maximises the first critic, as TD3+BC does (the twins' minimum is for the target only).
- IQL's actor is the official policy, Normal(tanh(out), std); the value x extraction recipes keep OGBench's
  Gaussian, whose mean is the MLP's output.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import write_synthetic
from offrl.cli.fit import run_lightning
from offrl.data.returns import episode_returns

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DATASET = "test/recipes/hopper-v0"
REWARD_RECIPES = ["value_extraction/hopper-medium", "value_extraction/halfcheetah-medium", "value_extraction/pen-expert"]


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [40, 60, 80, 100, 120])
    return DATASET


def built_run(config: str, dataset_id: str, *overrides: str, max_steps: int = 8):
    """The CLI's model, datamodule and trainer for a shipped config, with tiny networks, on `dataset_id`."""
    args = [
        "--config", str(CONFIGS / f"{config}.yaml"),
        f"--data.dataset_id={dataset_id}", "--data.batch_size=32", "--data.steps_per_epoch=10",
        "--model.hidden_dims=[16, 16]", f"--trainer.max_steps={max_steps}", "--trainer.accelerator=cpu",
        "--trainer.logger=false", "--trainer.limit_val_batches=0", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--checkpoint.save_last=false", "--performance.updates_per_step=1",
        *overrides,
    ]
    return run_lightning(args, run=False)


def fitted(config: str, dataset_id: str, *overrides: str, max_steps: int = 8):
    cli = built_run(config, dataset_id, *overrides, max_steps=max_steps)
    cli.trainer.fit(cli.model, cli.datamodule)
    return cli


@pytest.mark.parametrize("config", REWARD_RECIPES)
def test_sfbc_learns_the_std_of_the_behaviour_policy_it_samples_from(config, dataset, in_tmp_dir):
    cli = fitted(config, dataset, "--model.extraction=sfbc", "--model.lr=0.01", max_steps=60)
    actor = cli.model.actor
    assert actor.log_std.requires_grad
    # The synthetic actions are uniform on [-1, 1] (std 0.58): the fitted std moves there from its initial 1.
    assert (actor.log_std.exp() < 0.9).all(), actor.log_std.exp()


@pytest.mark.parametrize("config,overrides", [("td3bc/hopper-medium", ()), ("value_extraction/hopper-medium", ("--model.value=td3",))])
def test_td3_updates_actor_and_targets_every_second_update(config, overrides, dataset, in_tmp_dir):
    cli = built_run(config, dataset, *overrides, max_steps=4)
    model, trainer = cli.model, cli.trainer
    snapshots = []

    def snapshot(*_):
        snapshots.append(
            {name: torch.cat([p.detach().flatten().clone() for p in getattr(model, name).parameters()])
             for name in ("actor", "target_actor", "critic", "target_critic")}
        )

    class Snapshots(__import__("lightning").Callback):
        on_train_start = on_train_batch_end = snapshot

    trainer.callbacks.append(Snapshots())
    trainer.fit(model, cli.datamodule)
    changed = [
        {name: not torch.equal(before[name], after[name]) for name in before}
        for before, after in zip(snapshots, snapshots[1:])
    ]
    assert [step["critic"] for step in changed] == [True] * 4
    for name in ("actor", "target_actor", "target_critic"):
        assert [step[name] for step in changed] == [False, True, False, True], name


@pytest.mark.parametrize("config", ["iql/hopper-medium", "value_extraction/hopper-medium", "value_extraction/halfcheetah-medium"])
def test_iql_mujoco_recipes_normalise_rewards_and_decay_only_iqls_actor_lr(config, dataset, in_tmp_dir):
    cli = fitted(config, dataset, "--model.value=iql", "--model.extraction=awr", max_steps=10)
    model = cli.model
    returns = episode_returns(cli.datamodule.transitions.cpu())
    assert float(model.reward_factor) == pytest.approx(1000.0 / float(returns.max() - returns.min()))
    batch = cli.datamodule.sample(8)
    reward, _ = model.reward_and_termination(batch)
    assert torch.allclose(reward, batch["next", "reward"] * model.reward_factor)
    actor_lr = float(cli.trainer.optimizers[-1].param_groups[0]["lr"])
    if config.startswith("iql/"):
        # 10 updates of the 1M-update cosine: still ~ the full lr, not decayed to 0 by the shortened max_steps.
        assert actor_lr == pytest.approx(3e-4 * 0.5 * (1 + math.cos(math.pi * 10 / 1_000_000)), rel=1e-9)
        assert actor_lr < 3e-4
    else:
        assert actor_lr == 3e-4 and not cli.trainer.lr_scheduler_configs
    critic_lr = float(cli.trainer.optimizers[0].param_groups[0]["lr"])
    assert critic_lr == pytest.approx(3e-4)


@pytest.mark.parametrize("config", ["iql/hopper-medium", "value_extraction/hopper-medium"])
def test_iql_recipe_acts_with_the_official_tanh_mean_and_the_study_with_the_raw_mean(config, dataset, in_tmp_dir):
    model = fitted(config, dataset, "--model.value=iql", "--model.extraction=awr", max_steps=2).model
    obs = torch.randn(64, model.observation_normalizer.mean.shape[0]) * 100
    with torch.no_grad():
        raw = model.actor.net(obs)
        assert raw.abs().max() > 2
        mean, _ = model.actor(obs)
        expected = torch.tanh(raw) if config.startswith("iql/") else raw
        torch.testing.assert_close(mean, expected)
        torch.testing.assert_close(model.policy_action(obs), expected.clamp(-1.0, 1.0))


def test_actor_cosine_holds_at_zero_after_its_horizon(dataset, in_tmp_dir):
    cli = fitted("iql/hopper-medium", dataset, "--model.actor_cosine_steps=4", max_steps=8)
    (scheduler,) = cli.trainer.lr_scheduler_configs
    assert float(scheduler.scheduler.optimizer.param_groups[0]["lr"]) == pytest.approx(0.0, abs=1e-12)


def test_td3bc_actor_follows_the_first_critic_only(dataset, in_tmp_dir):
    from offrl.algos.value_policy import ddpgbc_actor_loss

    cli = built_run("td3bc/hopper-medium", dataset, max_steps=2)
    cli.trainer.fit(cli.model, cli.datamodule)
    model, batch = cli.model, cli.datamodule.sample(16)
    obs, goal = model.normalized_inputs(batch["observation"], None)
    before = ddpgbc_actor_loss(model, obs, goal, batch["action"], None, None)
    with torch.no_grad():
        for parameter in model.critic.parameters():
            parameter[1].mul_(-3.0)  # the second twin only (ensemble members are the leading dimension)
    assert torch.equal(ddpgbc_actor_loss(model, obs, goal, batch["action"], None, None), before)


def test_every_shipped_config_cites_its_source_and_nothing_is_recalled():
    for path in sorted(CONFIGS.glob("*/*.yaml")):
        header = [line for line in path.read_text().splitlines() if line.startswith("#")]
        assert any(line.startswith("# Source: ") for line in header), path
        assert "recalled" not in path.read_text(), path
