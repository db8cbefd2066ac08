"""Random shapes and dtypes into the D4RL importer and the Minari loader: every input either loads with its content
intact or is refused with OffrlError, never another exception; and both happen (a loader that refused everything,
or took everything, would fail here)."""

from __future__ import annotations

import itertools
from collections import Counter

import h5py
import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import write_synthetic
from offrl.data import minari_io, registry
from offrl.data.d4rl_import import import_d4rl
from offrl.errors import OffrlError

FUZZ = settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.uint8, np.bool_])
ids = itertools.count()
OUTCOMES: dict[str, Counter] = {"d4rl": Counter(), "minari": Counter()}


@st.composite
def d4rl_files(draw):
    """Hopper-shaped D4RL arrays of random dtypes and length, with at most one damage: a key dropped, a row more or
    less, an extra dim, a wrong width, or a NaN."""
    rows = draw(st.integers(0, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    arrays = {
        "observations": (rng.normal(size=(rows, 11)) * 3).astype(draw(DTYPES)),
        "actions": rng.uniform(-1, 1, size=(rows, 3)).astype(draw(DTYPES)),
        "rewards": rng.normal(size=rows).astype(draw(DTYPES)),
        "terminals": (rng.uniform(size=rows) < 0.2).astype(draw(st.sampled_from([np.bool_, np.float32, np.uint8]))),
        "timeouts": (rng.uniform(size=rows) < 0.2).astype(draw(st.sampled_from([np.bool_, np.float32, np.uint8]))),
    }
    if draw(st.booleans()):
        arrays["next_observations"] = (rng.normal(size=(rows, 11)) * 3).astype(draw(DTYPES))
    key = draw(st.sampled_from(sorted(arrays)))
    damage = draw(st.sampled_from([None, None, None, "drop", "more rows", "fewer rows", "extra dim", "wider", "nan"]))
    if damage == "drop":
        del arrays[key]
    elif damage == "nan" and rows and np.issubdtype(arrays[key].dtype, np.floating):
        arrays[key].flat[draw(st.integers(0, arrays[key].size - 1))] = np.nan
    elif damage in ("more rows", "fewer rows", "extra dim", "wider"):
        arrays[key] = mutate(arrays[key], damage)
    return arrays


def test_d4rl_importer_loads_or_refuses(tmp_path_factory):
    OUTCOMES["d4rl"].clear()
    d4rl_importer_loads_or_refuses(tmp_path_factory=tmp_path_factory)
    assert OUTCOMES["d4rl"]["loaded"] >= 5 and OUTCOMES["d4rl"]["refused"] >= 5, OUTCOMES["d4rl"]


@FUZZ
@given(arrays=d4rl_files())
def d4rl_importer_loads_or_refuses(arrays, tmp_path_factory):
    path = tmp_path_factory.mktemp("d4rl") / "file.hdf5"
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value
    dataset_id = f"fuzz/d4rl/file{next(ids)}-v0"
    try:
        import_d4rl(path, dataset_id, "Hopper-v5")
        transitions, _ = registry.load(dataset_id)
    except OffrlError:
        event("refused")
        OUTCOMES["d4rl"]["refused"] += 1
        return
    event("loaded")
    OUTCOMES["d4rl"]["loaded"] += 1
    # Loaded: every stored transition is a row of the file, in order, with its action and reward.
    observations = arrays["observations"].astype(np.float32)
    ends = arrays["terminals"].astype(bool).reshape(-1) | arrays["timeouts"].astype(bool).reshape(-1)
    ends[-1] = True
    kept = np.ones(len(ends), bool) if "next_observations" in arrays else ~ends
    np.testing.assert_array_equal(transitions["observation"].numpy(), observations[kept])
    np.testing.assert_array_equal(transitions["action"].numpy(), arrays["actions"].astype(np.float32).reshape(len(ends), -1)[kept])
    np.testing.assert_array_equal(transitions["next", "reward"].numpy(), arrays["rewards"].astype(np.float32).reshape(-1)[kept])


EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")


@st.composite
def episode_mutations(draw):
    """(episode, key, how) edits of a stored Minari episode: new dtype, a row more or less, an extra dim, or removal."""
    return draw(
        st.lists(
            st.tuples(
                st.integers(0, 1),
                st.sampled_from(EPISODE_KEYS),
                st.one_of(DTYPES, st.sampled_from(["drop", "more rows", "fewer rows", "extra dim", "wider"])),
            ),
            min_size=1,
            max_size=2,
        )
    )


def mutate(array: np.ndarray, how) -> np.ndarray | None:
    if how == "drop":
        return None
    if how == "more rows":
        return np.concatenate([array, array[-1:]])
    if how == "fewer rows":
        return array[:-1]
    if how == "extra dim":
        return array[..., None]
    if how == "wider":
        return np.concatenate([array, array[..., :1]], -1) if array.ndim > 1 else array
    return array.astype(how)


def test_minari_loader_loads_or_refuses():
    OUTCOMES["minari"].clear()
    minari_loader_loads_or_refuses()
    assert OUTCOMES["minari"]["loaded"] >= 5 and OUTCOMES["minari"]["refused"] >= 5, OUTCOMES["minari"]


@FUZZ
@given(mutations=episode_mutations())
def minari_loader_loads_or_refuses(mutations):
    dataset_id = f"fuzz/minari/data{next(ids)}-v0"
    write_synthetic(dataset_id, [3, 4])
    main_file = minari_io.dataset_path(dataset_id) / "data" / "main_data.hdf5"
    with h5py.File(main_file, "r+") as f:
        for episode, key, how in mutations:
            group = f[f"episode_{episode}"]
            if key not in group:
                continue
            changed = mutate(group[key][()], how)
            del group[key]
            if changed is not None:
                group[key] = changed
        stored = {
            (episode, key): f[f"episode_{episode}"][key][()] if key in f[f"episode_{episode}"] else None
            for episode in (0, 1)
            for key in EPISODE_KEYS
        }
    try:
        transitions, _ = registry.load(dataset_id)
    except OffrlError:
        event("refused")
        OUTCOMES["minari"]["refused"] += 1
        return
    event("loaded")
    OUTCOMES["minari"]["loaded"] += 1
    # Loaded: the transitions are the stored arrays, episode after episode.
    first = 0
    for episode in (0, 1):
        actions = stored[episode, "actions"]
        rows = slice(first, first + len(actions))
        np.testing.assert_array_equal(transitions["action"][rows].numpy(), actions.astype(np.float32).reshape(len(actions), -1))
        np.testing.assert_array_equal(transitions["observation"][rows].numpy(), stored[episode, "observations"][:-1].astype(np.float32))
        np.testing.assert_array_equal(transitions["next", "reward"][rows].numpy(), stored[episode, "rewards"].astype(np.float32).reshape(-1))
        first += len(actions)
    assert transitions.batch_size[0] == first
