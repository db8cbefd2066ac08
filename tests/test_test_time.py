"""Test-time improvement: OPEX raises the critic's value of the actions taken, TTT moves the actor towards higher Q
on the states it meets while the critic stays bit-identical, both restore nothing-changed afterwards, and both are
switched on from the command line at `offrl test`."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import yaml

from offrl.algos.value_policy import ValuePolicy
from offrl.callbacks.test_time import OPEX, TTT
from offrl.data.datamodules import TransitionDataModule
from offrl.errors import OffrlError

from conftest import write_synthetic
from test_cli import offrl
from conftest import trainer

HOPPER = "offrl/mujoco/hopper/random-v0"


def trained(value: str, extraction: str) -> ValuePolicy:
    L.seed_everything(0)
    datamodule = TransitionDataModule(HOPPER, batch_size=128, steps_per_epoch=150, generate_steps=5000)
    model = ValuePolicy(value, extraction, hidden_dims=[32, 32], lr=1e-3, discount=0.9, sfbc_num_samples=8)
    trainer(max_steps=150).fit(model, datamodule)
    return model.eval()


@pytest.fixture(scope="module")
def states():
    L.seed_everything(1)
    datamodule = TransitionDataModule(HOPPER, generate_steps=5000)
    datamodule.setup()
    return datamodule.sample(64)["observation"]


@pytest.mark.parametrize("value,extraction", [("iql", "awr"), ("sarsa", "sfbc"), ("td3", "ddpgbc")])
def test_opex_raises_the_q_of_the_actions_taken(in_tmp_dir, states, value, extraction):
    model = trained(value, extraction)
    with torch.inference_mode():  # as in Lightning's evaluation loop
        torch.manual_seed(0)
        plain = model.act(states)
        with OPEX(step_size=0.05, steps=3).improving(model, model.act) as act:
            torch.manual_seed(0)  # SfBC samples: the same candidates with and without OPEX
            improved = act(states)
        q_plain, q_improved = model.action_value(states, None, plain), model.action_value(states, None, improved)
    assert not torch.equal(plain, improved)
    assert (improved >= model.action_low).all() and (improved <= model.action_high).all()
    assert q_improved.mean() > q_plain.mean() + 1e-4, (q_plain.mean(), q_improved.mean())


def policy_q(model: ValuePolicy, states: torch.Tensor) -> torch.Tensor:
    obs, _ = model.normalized_inputs(states, None)
    return model.q_value(obs, None, model.policy_action(obs)).mean()


@pytest.mark.parametrize("value,extraction", [("iql", "ddpgbc"), ("sarsa", "awr")])
def test_ttt_updates_the_actor_against_a_frozen_critic_and_restores_it(in_tmp_dir, states, value, extraction):
    model = trained(value, extraction)
    critic_before = {name: p.clone() for name, p in model.critic.state_dict().items()}
    actor_before = {name: p.clone() for name, p in model.actor.state_dict().items()}
    with torch.inference_mode():
        q_before = policy_q(model, states)
        with TTT(lr=1e-3, steps=5, alpha=0.1).improving(model, model.act) as act:
            for _ in range(4):
                act(states)
            q_during = policy_q(model, states)
            actor_changed = any(not torch.equal(p, actor_before[n]) for n, p in model.actor.state_dict().items())
        q_after = policy_q(model, states)
    assert actor_changed
    assert q_during > q_before, (q_before, q_during)
    assert all(torch.equal(p, critic_before[n]) for n, p in model.critic.state_dict().items())
    assert all(torch.equal(p, actor_before[n]) for n, p in model.actor.state_dict().items())
    assert torch.equal(q_after, q_before)


def test_test_time_improvement_refuses_models_without_a_critic():
    from offrl.algos.bc import BC

    from offrl.algos.value_policy import ValuePolicy

    with pytest.raises(OffrlError, match="ValuePolicy"):
        OPEX().setup(None, BC(), "test")
    TTT().setup(None, ValuePolicy(), "test")  # the protocol (ImprovablePolicy) accepts a policy with a critic


@pytest.mark.parametrize("bad", [{"step_size": 0.0}, {"steps": 0}])
def test_opex_rejects_bad_settings(bad):
    with pytest.raises(OffrlError, match="OPEX"):
        OPEX(**bad)


def test_opex_and_ttt_switch_on_from_the_command_line_at_test(tmp_path):
    dataset = "test/test_time/hopper-v0"
    write_synthetic(dataset, [50] * 20)
    config = {
        "model": {
            "class_path": "offrl.algos.value_policy.ValuePolicy",
            "init_args": {"value": "td3", "extraction": "ddpgbc", "actor": "deterministic", "hidden_dims": [16]},
        },
        "data": {
            "class_path": "offrl.data.datamodules.TransitionDataModule",
            "init_args": {"dataset_id": dataset, "batch_size": 64, "steps_per_epoch": 20},
        },
        "trainer": {"max_steps": 20, "accelerator": "cpu", "enable_progress_bar": False},
        "evaluation": {"num_episodes": 2, "num_envs": 2},
    }
    path = tmp_path / "td3bc.yaml"
    path.write_text(yaml.safe_dump(config))
    assert offrl("fit", "--config", str(path), cwd=tmp_path).returncode == 0
    checkpoint = tmp_path / "logs" / "td3_ddpgbc" / "test_time-hopper" / "version_0" / "checkpoints" / "last.ckpt"
    for callback, option in (("OPEX", "--trainer.callbacks.step_size=0.1"), ("TTT", "--trainer.callbacks.steps=2")):
        result = offrl(
            "test", "--config", str(path), "--ckpt_path", str(checkpoint),
            f"--trainer.callbacks+=offrl.callbacks.test_time.{callback}", option, cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "eval/return" in result.stdout
    # The callback really is built from the command line: its own check rejects a bad step size.
    result = offrl(
        "test", "--config", str(path), "--ckpt_path", str(checkpoint),
        "--trainer.callbacks+=offrl.callbacks.test_time.OPEX", "--trainer.callbacks.step_size=0", cwd=tmp_path,
    )
    assert result.returncode != 0 and "OPEX step_size must be positive" in result.stderr, result.stderr
