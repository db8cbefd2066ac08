"""Online interaction: the replay buffer holds exactly the env steps taken, in the offline layout, and online SAC
learns a small task it can solve in seconds."""

from __future__ import annotations

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch

from offrl.algos.sac import SAC
from offrl.callbacks.evaluation import EvaluationCallback
from offrl.callbacks.online import OnlineInteraction
from offrl.callbacks.throughput import UpdateLoop
from offrl.data.replay import ReplayDataModule
from offrl.envs.factory import make_eval_env
from offrl.errors import OffrlError

from conftest import REACH_1D, trainer


def test_buffer_holds_exactly_the_env_steps_taken_and_replays_them(in_tmp_dir):
    L.seed_everything(0)
    num_envs, warmup, updates = 2, 420, 30  # Pendulum episodes are 200 steps: each env crosses a reset
    # The interaction seeds its envs with the data seed when it is given none (a study's `seeds` set data.seed).
    datamodule = ReplayDataModule("Pendulum-v1", batch_size=32, steps_per_epoch=updates, capacity=1000, num_envs=num_envs, seed=7)
    interaction = OnlineInteraction(warmup_steps=warmup, updates_per_env_step=2.0)
    fit = trainer(updates, [interaction])
    fit.fit(SAC(hidden_dims=[16]), datamodule)

    # 420 warm-up transitions, then one per two updates for updates 1..30, in whole steps of both envs.
    assert fit.global_step == updates
    expected = warmup + int(np.ceil(updates / 2))
    assert datamodule.size == expected + expected % num_envs
    steps_per_env = datamodule.size // num_envs
    assert datamodule.filled == steps_per_env

    # Replaying the stored actions in freshly seeded envs reproduces every stored transition.
    stored = datamodule.transitions
    rows = [env * datamodule.rows_per_env + torch.arange(steps_per_env) for env in range(num_envs)]
    env = make_eval_env(datamodule.info, num_envs, 7)
    state = env.reset()
    for t in range(steps_per_env):
        state["action"] = torch.stack([stored["action"][r[t]] for r in rows])
        step, state = env.step_and_maybe_reset(state)
        for e, r in enumerate(rows):
            assert torch.allclose(stored["observation"][r[t]], step["observation"][e].float())
            assert torch.allclose(stored["next", "observation"][r[t]], step["next", "observation"][e].float())
            assert torch.isclose(stored["next", "reward"][r[t]], step["next", "reward"][e, 0].float())
            assert stored["next", "truncated"][r[t]] == step["next", "truncated"][e, 0]
    env.close()

    # The offline layout: episode ids, steps within the episode, and episode_last (also of the running episode).
    for e, r in enumerate(rows):
        assert stored["step"][r].tolist() == list(range(200)) + list(range(steps_per_env - 200))
        assert (stored["episode_last"][r[:200]] == r[199]).all() and (stored["episode_last"][r[200:]] == r[-1]).all()
        assert stored["next", "done"][r].nonzero().flatten().tolist() == [199]
        assert stored["episode"][r[0]] != stored["episode"][r[200]]
    assert len(set(stored["episode"][torch.cat(rows)].tolist())) == 4

    # Batches come from the filled rows only.
    batch = datamodule.sample(4096)
    assert batch["observation"].abs().sum(-1).min() > 0 and (batch["episode_last"] >= 0).all()
    assert set(torch.unique(batch["step"]).tolist()) <= set(stored["step"][torch.cat(rows)].tolist())


def test_sac_learns_a_small_reach_task_online(in_tmp_dir):
    L.seed_everything(0)
    datamodule = ReplayDataModule(REACH_1D, batch_size=128, steps_per_epoch=500, capacity=5000)
    evaluation = EvaluationCallback(num_episodes=10, num_envs=10, seed=1)
    model = SAC(hidden_dims=[32, 32], actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3, discount=0.9)
    fit = trainer(500, [OnlineInteraction(warmup_steps=200, updates_per_env_step=1.0, seed=0), evaluation])
    fit.fit(model, datamodule)
    learned = fit.callback_metrics["eval/return"].item()

    # A uniformly random policy on the same evaluation episodes.
    env = make_eval_env(datamodule.info, 10, 1)
    rollout = env.rollout(20, break_when_any_done=False)
    random_return = rollout["next", "reward"].sum(1).mean().item()
    env.close()
    # Walking straight to 0 scores about -3.75; standing still -30; random actions about -25.
    assert learned > -8.0 and learned > random_return + 10, (learned, random_return)


def test_sac_without_interaction_says_what_to_add(in_tmp_dir):
    datamodule = ReplayDataModule("Pendulum-v1", batch_size=8, steps_per_epoch=2, capacity=100)
    with pytest.raises(OffrlError, match="OnlineInteraction"):
        trainer(1, []).fit(SAC(hidden_dims=[8]), datamodule)


def test_a_full_buffer_and_bad_settings_fail_in_one_sentence(in_tmp_dir):
    with pytest.raises(OffrlError, match="capacity"):
        trainer(5, [OnlineInteraction(warmup_steps=200)]).fit(
            SAC(hidden_dims=[8]), ReplayDataModule("Pendulum-v1", batch_size=8, capacity=100)
        )
    with pytest.raises(OffrlError, match="not a registered Gymnasium env"):
        trainer(1, [OnlineInteraction()]).fit(SAC(hidden_dims=[8]), ReplayDataModule("NoSuchEnv-v0"))
    from offrl.algos.bc import BC

    with pytest.raises(OffrlError, match="cannot act online"):
        trainer(1, [OnlineInteraction()]).fit(BC(hidden_dims=[8]), ReplayDataModule("Pendulum-v1"))
    with pytest.raises(OffrlError, match="updates_per_env_step"):
        OnlineInteraction(updates_per_env_step=0)
    with pytest.raises(OffrlError, match="set performance.updates_per_step 1 \\(got 10\\)"):
        trainer(10, [OnlineInteraction(warmup_steps=20), UpdateLoop(updates_per_step=10)], log_every_n_steps=10).fit(
            SAC(hidden_dims=[8]), ReplayDataModule("Pendulum-v1", batch_size=8, steps_per_epoch=10, capacity=100)
        )


def test_shipped_hopper_config_runs_online_from_the_command_line(in_tmp_dir):
    from pathlib import Path

    from test_cli import scalars

    from offrl.cli import main

    config = Path(__file__).parents[1] / "configs" / "sac" / "hopper.yaml"
    main([
        "fit", "--config", str(config), "--trainer.max_steps", "40", "--trainer.log_every_n_steps", "10",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--data.steps_per_epoch", "40",
        "--trainer.callbacks.warmup_steps", "100", "--model.hidden_dims", "[16]",
        "--evaluation.num_episodes", "1", "--evaluation.num_envs", "1",
    ])
    metrics = scalars(in_tmp_dir / "logs" / "sac" / "Hopper" / "version_0")
    # After the 40th and last update: 100 warm-up steps plus one env step per update.
    assert metrics["train/env_steps"][-1] == 100 + 40
    assert {"train/critic_loss", "train/alpha", "eval/return", "eval/normalized_score"} <= set(metrics)


def test_medium_replay_is_the_sac_replay_buffer_and_stops_at_the_target(in_tmp_dir, monkeypatch):
    from offrl.data import registry
    from offrl.recipes import medium_replay

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(in_tmp_dir / "store"))
    registry.generate("offrl/mujoco/hopper/medium-replay-v0", steps=300, seed=0)
    transitions, info = registry.load("offrl/mujoco/hopper/medium-replay-v0")
    assert transitions.batch_size[0] == 300  # a tiny run never reaches medium, so the whole budget is kept
    assert info.metadata["env_steps"] == 300 and info.metadata["reached_target"] is False
    assert info.metadata["target_normalized_score"] == medium_replay.MEDIUM_LEVEL["hopper"]
    # Episodes are whole env trajectories: each step starts where the previous one ended.
    inside = torch.arange(299)[transitions["episode_last"][:-1] > torch.arange(299)]
    assert torch.equal(transitions["observation"][inside + 1], transitions["next", "observation"][inside])
    assert transitions["next", "done"][transitions["episode_last"].unique()].all()

    # With a target any policy meets, the run stops at its first evaluation: 200 warm-up steps, 50 updates, and the
    # env step taken for update 51 before the evaluation.
    replay, facts = medium_replay.collect_replay(
        "Hopper-v5", 400, target_score=-1000.0, seed=0, progress=lambda n: None, eval_every=50, eval_episodes=2
    )
    assert facts["reached_target"] and replay.size == 251


def test_admpo_online_retrains_on_the_data_so_far_on_schedule_with_a_ramped_horizon(in_tmp_dir, monkeypatch):
    from offrl.algos.admpo import ADMPOOnline

    L.seed_everything(0)
    rounds = []  # (env steps, horizon, stored transitions) of every roll-out round
    record = ADMPOOnline.rollout_round

    def recording_round(self, transitions, starts, horizon):
        rounds.append((self.datamodule.size, horizon, transitions.batch_size[0]))
        # Roll-outs start from windows of real data inside one episode of the compact stored layout.
        last = transitions["episode_last"]
        assert (starts + 2 <= last[starts]).all() and torch.equal(last[last], last)
        record(self, transitions, starts, horizon)

    monkeypatch.setattr(ADMPOOnline, "rollout_round", recording_round)

    def run(max_steps: int, ckpt_path=None):
        model = ADMPOOnline(
            max_window=3, dynamics_every=50, rollout_horizon=5, min_rollout_horizon=1, horizon_ramp_start=100,
            horizon_ramp_end=200, dynamics_hidden_dim=16, dynamics_gru_layers=1, dynamics_residual_blocks=1,
            dynamics_max_epochs=2, dynamics_updates_per_epoch=5, hidden_dims=[16], model_rows=24, rollout_batch_size=16,
            retain_rounds=2,
        )
        datamodule = ReplayDataModule("Hopper-v5", batch_size=8, steps_per_epoch=240, capacity=1000, num_envs=2)
        fit = trainer(max_steps, [OnlineInteraction(warmup_steps=100, updates_per_env_step=2.0, seed=0)])
        fit.fit(model, datamodule, ckpt_path=ckpt_path)
        return fit, model, datamodule

    fit, model, datamodule = run(240)

    # Env steps before update u: 100 + ceil(u / 2), rounded up to both envs; a round whenever 50 have been added.
    assert [(steps, horizon) for steps, horizon, _ in rounds] == [(102, 1), (152, 3), (202, 5)]
    assert all(stored == steps for steps, _, stored in rounds)  # the model trains on all the data so far
    assert datamodule.size == 220
    # The model's input statistics are those of the data at the last round: 101 steps of each env.
    stored = datamodule.stored()["observation"]
    at_last_round = torch.cat([stored[:101], stored[110:211]])
    assert torch.allclose(model.dynamics.obs_normalizer.mean, at_last_round.mean(0), atol=1e-5)
    assert not torch.allclose(model.dynamics.obs_normalizer.mean, stored.mean(0), atol=1e-5)
    assert 0 < model.model_buffer.size <= 2 * 16 * 5

    # Resumed, the schedule goes on from the last round (202 env steps): the next is at 252, not at once.
    fit.save_checkpoint(in_tmp_dir / "stop.ckpt")
    rounds.clear()
    _, _, datamodule = run(320, in_tmp_dir / "stop.ckpt")
    assert datamodule.size == 260 and [steps for steps, _, _ in rounds] == [252]


def test_shipped_admpo_online_config_runs_from_the_command_line(in_tmp_dir):
    from pathlib import Path

    from test_cli import scalars

    from offrl.cli import main

    config = Path(__file__).parents[1] / "configs" / "admpo_on" / "hopper.yaml"
    main([
        "fit", "--config", str(config), "--trainer.max_steps", "60", "--trainer.log_every_n_steps", "20",
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", "--data.steps_per_epoch", "60",
        "--trainer.callbacks.warmup_steps", "100", "--model.hidden_dims", "[16]", "--model.dynamics_hidden_dim", "8",
        "--model.dynamics_gru_layers", "1", "--model.dynamics_residual_blocks", "1", "--model.dynamics_updates_per_epoch", "2",
        "--model.dynamics_max_epochs", "1", "--model.rollout_batch_size", "8", "--model.dynamics_every", "2",
        "--evaluation.num_episodes", "1", "--evaluation.num_envs", "1",
    ])
    metrics = scalars(in_tmp_dir / "logs" / "admpo_on" / "Hopper" / "version_0")
    assert metrics["train/env_steps"][-1] == 100 + 60 / 20  # UTD 20
    assert metrics["rollout/horizon"][-1] == 1  # before the ramp starts at the end of the 5k warm-up
    assert {"train/critic_loss", "model/holdout_mse", "eval/return"} <= set(metrics)


def test_shipped_online_hopper_configs_are_the_official_recipes():
    """configs/admpo_on/hopper.yaml against HxLyn3/ADMPO's main4online.py + config/mujoco/Hopper.yml, and the SAC
    baseline against the SAC paper."""
    from pathlib import Path

    import yaml

    root = Path(__file__).parents[1] / "configs"
    admpo = yaml.safe_load((root / "admpo_on" / "hopper.yaml").read_text())
    model, data, interaction = admpo["model"]["init_args"], admpo["data"]["init_args"], admpo["trainer"]["callbacks"][0]["init_args"]
    warmup, utd = interaction["warmup_steps"], interaction["updates_per_env_step"]
    assert (warmup, utd, model["dynamics_every"], model["max_window"]) == (5000, 20.0, 250, 5)
    assert warmup + admpo["trainer"]["max_steps"] / utd == 55000  # n_steps 50k after the warm-up
    assert (model["min_rollout_horizon"], model["rollout_horizon"]) == (1, 15)
    assert (model["horizon_ramp_start"], model["horizon_ramp_end"]) == (warmup, warmup + 50000)
    assert model["target_entropy"] == -1 and model["init_alpha"] == 1.0 and "penalty_coef" not in model  # unpenalised
    assert data["batch_size"] / (data["batch_size"] + model["model_rows"]) == pytest.approx(0.05, abs=0.01)
    assert (model["rollout_batch_size"], model["retain_rounds"], model["dynamics_max_holdout"]) == (100000, 4, 500)
    assert data["steps_per_epoch"] / utd == 1000  # evaluation every 1000 env steps
    sac = yaml.safe_load((root / "sac" / "hopper.yaml").read_text())
    assert sac["model"]["init_args"]["target_entropy"] is None  # -action_dim
    assert sac["trainer"]["callbacks"][0]["init_args"]["warmup_steps"] == warmup


def test_an_online_run_resumes_from_its_checkpointed_replay_buffer(in_tmp_dir):
    """The checkpoint holds the buffer and the warm-up generator: a resumed run keeps every stored step, takes no
    second warm-up, ends the episodes the dead envs were in (truncated) and starts new ones."""
    num_envs, warmup, capacity = 2, 150, 1000  # Pendulum episodes are 200 steps: the stop lands mid-episode

    def run(max_steps: int, ckpt_path=None):
        L.seed_everything(0)
        datamodule = ReplayDataModule("Pendulum-v1", batch_size=32, steps_per_epoch=100, capacity=capacity, num_envs=num_envs)
        fit = trainer(max_steps, [OnlineInteraction(warmup_steps=warmup, updates_per_env_step=1.0, seed=7)], evaluate=False)
        fit.fit(SAC(hidden_dims=[16]), datamodule, ckpt_path=ckpt_path)
        return fit, datamodule

    first, before = run(20)
    first.save_checkpoint(in_tmp_dir / "stop.ckpt")
    kept = before.stored().clone()
    per_env = before.filled
    assert per_env == (warmup + 20) // num_envs

    resumed, after = run(40, in_tmp_dir / "stop.ckpt")
    assert resumed.global_step == 40
    assert after.size == warmup + 40  # no second warm-up
    stored = after.stored()
    for env in range(num_envs):
        old = kept[env * per_env : (env + 1) * per_env]
        new = stored[env * after.filled : env * after.filled + per_env]
        cut = per_env - 1
        assert not old["next", "truncated"][cut] and new["next", "truncated"][cut] and new["next", "done"][cut]
        new["next", "truncated"][cut] = new["next", "done"][cut] = False
        # The same steps; episode_last indexes each stored()'s own compact layout (env blocks of `filled` rows).
        assert torch.equal(new.pop("episode_last") - env * after.filled, old.pop("episode_last") - env * per_env)
        assert (new == old).all()
        continued = stored[env * after.filled + per_env]
        assert continued["step"] == 0 and continued["episode"] > old["episode"].max()


def test_a_replay_buffer_refuses_a_checkpoint_it_cannot_hold():
    small = ReplayDataModule("Pendulum-v1", capacity=100, num_envs=2)
    small.setup()
    state = {"filled": 80, "num_envs": 2, "generator": None}
    with pytest.raises(OffrlError, match=r"data.num_envs=2 and a capacity of at least 160"):
        small.load_state_dict(state)


def test_mbpo_runs_the_online_loop_with_the_ensemble(in_tmp_dir):
    """MBPO (MOPO's ensemble online): model refits on the data so far and unpenalised roll-outs from its elites."""
    from offrl.algos.mopo import MBPO
    from offrl.models.ensemble import EnsembleModel

    L.seed_everything(0)
    model = MBPO(
        dynamics_every=50, rollout_horizon=2, horizon_ramp_start=0, horizon_ramp_end=100, dynamics_hidden_dims=[16],
        dynamics_members=3, dynamics_elites=2, dynamics_max_epochs=2, dynamics_updates_per_epoch=5, hidden_dims=[16],
        model_rows=24, rollout_batch_size=16, retain_rounds=2,
    )
    datamodule = ReplayDataModule("Hopper-v5", batch_size=8, steps_per_epoch=120, capacity=1000)
    trainer(120, [OnlineInteraction(warmup_steps=100, updates_per_env_step=1.0, seed=0)], evaluate=False).fit(model, datamodule)
    assert isinstance(model.dynamics, EnsembleModel) and model.algorithm_name == "mbpo"
    assert model.schedule.model_env_steps == 201 and 0 < model.model_buffer.size <= 2 * 16 * 2
    assert "penalty" not in model.model_buffer.data.keys()
