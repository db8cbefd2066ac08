"""Datasets: Minari round trip, relabelled goals, sampler state, atomic writes, bad ids."""

from __future__ import annotations

import os

import h5py
import minari
import numpy as np
import pytest
import torch

from offrl.data import minari_io, registry
from offrl.data.datamodules import AnyStepDataModule, HindsightDataModule, TransitionDataModule
from offrl.errors import OffrlError

from conftest import write_synthetic

LENGTHS = [5, 17, 1, 30, 9]


@pytest.fixture(scope="module")
def flat_id():
    write_synthetic("test/flat/roundtrip-v0", LENGTHS)
    return "test/flat/roundtrip-v0"


@pytest.fixture(scope="module")
def goal_id():
    write_synthetic("test/goal/roundtrip-v0", LENGTHS, goal=True, seed=1)
    return "test/goal/roundtrip-v0"


def ready(module):
    module.setup("fit")
    module._device_setup(torch.device("cpu"))
    return module


def test_round_trip_keeps_every_transition(flat_id):
    episodes = write_synthetic("test/flat/roundtrip2-v0", LENGTHS)
    assert minari.load_dataset("test/flat/roundtrip2-v0").total_steps == sum(LENGTHS)
    td, info = registry.load("test/flat/roundtrip2-v0")
    assert td.batch_size[0] == sum(LENGTHS)
    assert info.num_episodes == len(LENGTHS) and info.observation_dim == 11 and info.action_dim == 3
    assert info.metadata == {"kind": "synthetic"} and info.env_spec.id == "Hopper-v5"
    row = 0
    for episode in episodes:
        length = len(episode.actions)
        rows = slice(row, row + length)
        np.testing.assert_array_equal(td["observation"][rows].numpy(), episode.observations[:-1])
        np.testing.assert_array_equal(td["next", "observation"][rows].numpy(), episode.observations[1:])
        np.testing.assert_array_equal(td["action"][rows].numpy(), episode.actions)
        np.testing.assert_allclose(td["next", "reward"][rows].numpy(), episode.rewards, rtol=1e-6)
        np.testing.assert_array_equal(td["next", "terminated"][rows].numpy(), episode.terminations)
        np.testing.assert_array_equal(td["next", "truncated"][rows].numpy(), episode.truncations)
        assert (td["episode_last"][rows] == row + length - 1).all()
        assert td["next", "done"][rows].tolist() == [False] * (length - 1) + [True]
        row += length


def test_goal_observations_round_trip(goal_id):
    td, info = registry.load(goal_id)
    assert info.is_goal_conditioned and info.goal_dim == 2
    # The synthetic achieved goal is the observation's first two entries.
    torch.testing.assert_close(td["next", "achieved_goal"], td["next", "observation"][:, :2])
    assert set(td.keys()) >= {"observation", "achieved_goal", "desired_goal", "action"}


def test_relabelled_goals_are_future_states_of_the_same_episode(goal_id):
    module = ready(HindsightDataModule(goal_id, batch_size=4096, seed=3))
    batch = module.sample(4096)
    transitions = module.transitions
    goal_index = batch["goal_index"]
    # observation[:, 0] is the episode id, observation[:, 1] the step: both must agree with the goal's row.
    assert (transitions["observation"][goal_index, 0] == batch["observation"][:, 0]).all()
    assert (transitions["observation"][goal_index, 1] >= batch["observation"][:, 1]).all()
    torch.testing.assert_close(batch["goal"], transitions["next", "achieved_goal"][goal_index])
    # Every future offset is possible, including the last state of an episode.
    assert (goal_index == transitions["episode_last"][goal_index]).any()
    same_step = transitions["observation"][goal_index, 1] == batch["observation"][:, 1]
    assert (batch["next", "goal_reached"] == same_step).all()


def test_goal_mix_follows_the_configured_ratios(goal_id):
    module = ready(HindsightDataModule(goal_id, batch_size=20000, future_goal_prob=0.3, random_goal_prob=0.3, current_goal_prob=0.4))
    batch = module.sample(20000)
    goal_index, episode = batch["goal_index"], batch["observation"][:, 0]
    same_episode = module.transitions["observation"][goal_index, 0] == episode
    # Current goals (0.4) plus the future ones that land on the current step make up at least 0.4.
    current = (batch["next", "goal_reached"]).float().mean().item()
    assert 0.4 <= current <= 0.55
    # Random goals mostly come from other episodes (the longest episode holds 30 of 62 steps).
    assert 0.1 <= (~same_episode).float().mean().item() <= 0.3


def test_actor_goals_have_their_own_mix_and_the_value_goals_keep_theirs(goal_id):
    """OGBench's GCIQL split: value goals 0.2 current / 0.5 future / 0.3 random, actor goals all from the future of
    the same episode. Without an actor mix the batch holds one goal, drawn as before."""
    value_mix = dict(future_goal_prob=0.5, random_goal_prob=0.3, current_goal_prob=0.2, geometric_discount=0.9)
    split = ready(HindsightDataModule(goal_id, batch_size=4096, seed=1, actor_future_goal_prob=1.0, **value_mix))
    batch = split.sample(4096)
    rows = split.transitions["observation"]
    goal_rows = {tuple(row) for row in split.transitions["next", "achieved_goal"].tolist()}
    assert {tuple(goal) for goal in batch["actor_goal"].tolist()} <= goal_rows
    # each actor goal is the achieved goal of a later-or-same step of the transition's own episode
    future = (rows[:, 0][:, None] == batch["observation"][:, 0]) & (rows[:, 1][:, None] >= batch["observation"][:, 1])
    matches = (split.transitions["next", "achieved_goal"][:, None, :] == batch["actor_goal"][None]).all(-1)
    assert (matches & future).any(0).all()
    value_same_episode = (rows[batch["goal_index"], 0] == batch["observation"][:, 0]).float().mean().item()
    assert value_same_episode < 0.9  # the value goals keep their random share
    alone = ready(HindsightDataModule(goal_id, batch_size=4096, seed=1, **value_mix))
    one_goal = alone.sample(4096)
    assert "actor_goal" not in one_goal.keys()
    fresh = ready(HindsightDataModule(goal_id, batch_size=4096, seed=1, actor_future_goal_prob=1.0, **value_mix))
    torch.testing.assert_close(fresh.sample(4096)["goal"], one_goal["goal"])  # the value goals are drawn first, as before


def test_geometric_goals_stay_in_the_episode_and_come_sooner(goal_id):
    def offsets(module):
        batch = module.sample(8192)
        goal_rows = module.transitions["observation"][batch["goal_index"]]
        assert (goal_rows[:, 0] == batch["observation"][:, 0]).all()
        return goal_rows[:, 1] - batch["observation"][:, 1]

    geometric = offsets(ready(HindsightDataModule(goal_id, batch_size=8192, geometric_discount=0.5)))
    uniform = offsets(ready(HindsightDataModule(goal_id, batch_size=8192)))
    assert (geometric >= 0).all()
    # Offsets ~ Geometric(0.5) have mean 1; uniform ones over these episodes average about 5.
    assert geometric.float().mean() < 1.2 < 4 < uniform.float().mean()


def test_sampler_is_seeded_and_resumes_from_its_state(flat_id):
    first = ready(TransitionDataModule(flat_id, batch_size=64, seed=11))
    second = ready(TransitionDataModule(flat_id, batch_size=64, seed=11))
    torch.testing.assert_close(first.sample(64)["action"], second.sample(64)["action"])
    state = first.state_dict()
    expected = first.sample(64)["action"]
    restored = ready(TransitionDataModule(flat_id, batch_size=64, seed=99))
    restored.load_state_dict(state)
    restored._device_setup(torch.device("cpu"))
    torch.testing.assert_close(restored.sample(64)["action"], expected)
    other = ready(TransitionDataModule(flat_id, batch_size=64, seed=12))
    assert not torch.equal(other.sample(64)["action"], second.sample(64)["action"])


def test_unknown_dataset_id_suggests_close_ids():
    with pytest.raises(OffrlError, match=r"offrl/pointmaze/umaze-v0"):
        registry.load("offrl/pointmaze/umaz-v0")
    with pytest.raises(OffrlError, match="namespace/name-vN"):
        registry.load("hopper medium")


def test_a_typo_of_a_known_remote_id_fails_at_once_without_a_download(monkeypatch):
    """Offline, a download of a mistyped id retried for about a minute before failing; a close known id now
    answers at once. An id close to nothing known still goes to Minari."""
    import time

    tried = []

    def offline_download(dataset_id: str, download: bool):
        tried.append(dataset_id)
        raise OffrlError("offline")

    monkeypatch.setattr(registry.minari_io, "load_minari", offline_download)
    start = time.perf_counter()
    with pytest.raises(OffrlError, match=r"did you mean D4RL/pointmaze/umaze-v2\b.*minari download D4RL/pointmaze/umaz-v2"):
        registry.load("D4RL/pointmaze/umaz-v2")
    assert tried == [] and time.perf_counter() - start < 5
    with pytest.raises(OffrlError, match="offline"):
        registry.load("someone/else/dataset-v0")
    assert tried == ["someone/else/dataset-v0"]


def test_existing_dataset_is_never_overwritten(flat_id):
    with pytest.raises(OffrlError, match="already exists"):
        write_synthetic(flat_id, [3])


def test_a_write_that_dies_halfway_leaves_no_dataset(monkeypatch, minari_store):
    def crash(*args, **kwargs):
        # Leave a half-written store behind, as a killed process would.
        os.makedirs(minari_io.dataset_path(kwargs["dataset_id"]) / "data")
        raise KeyboardInterrupt

    monkeypatch.setattr(minari, "create_dataset_from_buffers", crash)
    with pytest.raises(KeyboardInterrupt):
        write_synthetic("test/flat/killed-v0", [4])
    assert not minari_io.dataset_path("test/flat/killed-v0").exists()
    assert not [p for p in minari_store.iterdir() if p.name.startswith(".offrl-tmp-")]


def test_nan_values_are_rejected_with_count_and_index():
    write_synthetic("test/flat/nan-v0", [6, 6])
    main_file = minari_io.dataset_path("test/flat/nan-v0") / "data" / "main_data.hdf5"
    with h5py.File(main_file, "r+") as f:
        f["episode_1/observations"][2, 4] = np.nan
    with pytest.raises(OffrlError, match=r"episode 1 holds 1 NaN/inf values \(first at index \[2, 4\]\)"):
        registry.load("test/flat/nan-v0")


def test_second_load_maps_the_cache_and_a_changed_file_invalidates_it():
    write_synthetic("test/flat/cached-v0", [8, 8])
    first, _ = registry.load("test/flat/cached-v0")
    cache = minari_io.dataset_path("test/flat/cached-v0") / minari_io.CACHE_DIR
    assert (cache / "stamp.json").is_file()
    second, _ = registry.load("test/flat/cached-v0")
    assert (second == first).all()
    main_file = minari_io.dataset_path("test/flat/cached-v0") / "data" / "main_data.hdf5"
    with h5py.File(main_file, "r+") as f:
        f["episode_0/actions"][0, 0] = 0.25
    third, _ = registry.load("test/flat/cached-v0")
    assert third["action"][0, 0] == 0.25 and third["action"][0, 0] != first["action"][0, 0]


def test_bad_datamodule_values_are_refused():
    with pytest.raises(OffrlError, match="batch_size"):
        TransitionDataModule("offrl/pointmaze/umaze-v0", batch_size=0)
    with pytest.raises(OffrlError, match="sum to 1"):
        HindsightDataModule("offrl/pointmaze/umaze-v0", future_goal_prob=0.5)
    with pytest.raises(OffrlError, match=r"data.actor_future_goal_prob \+ actor_random_goal_prob \+ actor_current_goal_prob"):
        HindsightDataModule("offrl/pointmaze/umaze-v0", actor_future_goal_prob=0.5)
    with pytest.raises(OffrlError, match="data.actor_geometric_discount must lie in"):
        HindsightDataModule("offrl/pointmaze/umaze-v0", actor_future_goal_prob=1.0, actor_geometric_discount=1.0)


def test_any_step_windows_stay_in_one_episode_and_out_of_the_hold_out(flat_id):
    """Every window of a batch: consecutive rows of one episode, all before the hold-out set; the target is the
    state change over the window and its last reward; one k per batch, every k in 1..m drawn."""
    module = ready(AnyStepDataModule(flat_id, max_window=4, batch_size=128, max_holdout=10, seed=3))
    transitions = module.transitions
    rows, train_end = transitions.batch_size[0], transitions.batch_size[0] - 10
    ks = set()
    for _ in range(40):
        batch = module.sample(128)
        k = batch["window_actions"].shape[1]
        ks.add(k)
        first = torch.stack([torch.nonzero((transitions["observation"] == obs).all(-1))[0, 0] for obs in batch["observation"][:16]])
        last = first + k - 1
        assert (last <= transitions["episode_last"][first]).all() and (last < train_end).all()
        torch.testing.assert_close(batch["window_actions"][:16], transitions["action"][first[:, None] + torch.arange(k)])
        delta = transitions["next", "observation"][last] - transitions["observation"][first]
        torch.testing.assert_close(batch["target"][:16], torch.cat([delta, transitions["next", "reward"][last][:, None]], -1))
    assert ks == {1, 2, 3, 4}
    assert all((starts >= train_end).all() for starts in module.holdout_starts) and rows == sum(LENGTHS)
    # The official epoch: N_train / batch_size * m updates (at least m).
    assert module.steps_per_epoch == max(len(module.train_starts[0]) // 128, 1) * 4


def test_an_online_refit_draws_its_windows_as_the_datamodule_does_from_streams_its_checkpoint_restores(flat_id):
    """One window sampler: the online refits' streams (model_based_sac.OnlineRollouts) seeded like a datamodule draw
    its batches; restored from the schedule's checkpoint state they continue, whatever the global RNG and seed."""
    from offrl.algos.model_based_sac import OnlineRollouts

    module = ready(AnyStepDataModule(flat_id, max_window=3, batch_size=16, seed=5))
    schedule = OnlineRollouts(horizon=5, dynamics_every=10, min_horizon=1, ramp_start=0, ramp_end=10)
    generators = schedule.refit_generators(5, torch.device("cpu"))
    for _ in range(5):
        want, got = module.sample(16), generators.draw(module.transitions, module.train_starts, (16,))
        assert (got == want).all()
    state = schedule.state_dict()
    expected = [generators.draw(module.transitions, module.train_starts, (16,)) for _ in range(4)]
    restored = OnlineRollouts(horizon=5, dynamics_every=10, min_horizon=1, ramp_start=0, ramp_end=10)
    restored.load_state_dict(state)
    torch.manual_seed(123)
    again = restored.refit_generators(99, torch.device("cpu"))
    assert all((again.draw(module.transitions, module.train_starts, (16,)) == want).all() for want in expected)


def test_any_step_sampler_draws_one_batch_per_member_and_resumes_from_its_state(flat_id):
    first = ready(AnyStepDataModule(flat_id, max_window=3, members=5, batch_size=8, seed=4))
    assert first.sample(8)["observation"].shape == (5, 8, 11)
    state = first.state_dict()
    expected = [first.sample(8) for _ in range(6)]
    restored = ready(AnyStepDataModule(flat_id, max_window=3, members=5, batch_size=8, seed=99))
    restored.load_state_dict(state)
    restored._device_setup(torch.device("cpu"))
    for want in expected:
        got = restored.sample(8)
        assert got["window_actions"].shape == want["window_actions"].shape  # the same k
        torch.testing.assert_close(got["target"], want["target"])
    with pytest.raises(OffrlError, match="data.max_window must be a positive integer, got 0"):
        AnyStepDataModule(flat_id, max_window=0)
    with pytest.raises(OffrlError, match=r"data.holdout_fraction must lie in \(0, 1\), got 1.5"):
        AnyStepDataModule(flat_id, holdout_fraction=1.5)
    with pytest.raises(OffrlError, match="no 31-step windows to train or hold out the model on"):
        ready(AnyStepDataModule(flat_id, max_window=31))
