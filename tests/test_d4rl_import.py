"""The D4RL HDF5 importer: terminals and timeouts stay apart, both file layouts, and bad files are refused."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from offrl.data import registry
from offrl.data.d4rl_import import import_d4rl
from offrl.errors import OffrlError


def d4rl_arrays(ends: dict[int, str], length: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Hopper-shaped D4RL arrays; `ends` maps a row to 'terminal' or 'timeout'. Row r has observation[0] = r."""
    rng = np.random.default_rng(seed)
    observations = rng.normal(size=(length, 11)).astype(np.float32)
    observations[:, 0] = np.arange(length)
    terminals = np.zeros(length, dtype=bool)
    timeouts = np.zeros(length, dtype=bool)
    for row, kind in ends.items():
        (terminals if kind == "terminal" else timeouts)[row] = True
    # As in D4RL: inside an episode the next observation is the following row; at an end it is its own state.
    next_observations = np.concatenate([observations[1:], observations[-1:] + 0.5])
    episode_ends = sorted(ends) + [length - 1]
    next_observations[episode_ends] = observations[episode_ends] + 0.5
    return {
        "observations": observations,
        "next_observations": next_observations,
        "actions": rng.uniform(-1, 1, size=(length, 3)).astype(np.float32),
        "rewards": rng.normal(size=length).astype(np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
    }


def write_hdf5(path, arrays, drop=()):
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            if key not in drop:
                f[key] = value
    return path


ENDS = {9: "terminal", 19: "timeout", 29: "terminal"}


def test_terminals_and_timeouts_stay_apart(tmp_path):
    arrays = d4rl_arrays(ENDS)
    import_d4rl(write_hdf5(tmp_path / "a.hdf5", arrays), "imported/hopper/apart-v0", "Hopper-v5")
    td, info = registry.load("imported/hopper/apart-v0")
    assert td.batch_size[0] == 40 and info.num_episodes == 4
    assert td["next", "terminated"].nonzero().squeeze(-1).tolist() == [9, 29]
    # The file's own timeout, plus the cut-off tail that ends the file.
    assert td["next", "truncated"].nonzero().squeeze(-1).tolist() == [19, 39]
    np.testing.assert_array_equal(td["next", "observation"].numpy(), arrays["next_observations"])
    np.testing.assert_allclose(td["next", "reward"].numpy(), arrays["rewards"])
    assert info.ref_min_score == pytest.approx(-20.272305)


def test_layout_without_next_observations_drops_each_final_step(tmp_path):
    arrays = d4rl_arrays(ENDS)
    import_d4rl(write_hdf5(tmp_path / "b.hdf5", arrays, drop=("next_observations",)), "imported/hopper/nonext-v0", "Hopper-v5")
    td, _ = registry.load("imported/hopper/nonext-v0")
    # Four episodes of 10 rows keep 9 transitions each; the next observation is the following row.
    assert td.batch_size[0] == 36
    np.testing.assert_array_equal(td["next", "observation"][:, 0].numpy(), td["observation"][:, 0].numpy() + 1)
    assert td["next", "terminated"].nonzero().squeeze(-1).tolist() == [8, 26]
    assert td["next", "truncated"].nonzero().squeeze(-1).tolist() == [17, 35]


def test_missing_keys_are_named(tmp_path):
    path = write_hdf5(tmp_path / "c.hdf5", d4rl_arrays(ENDS), drop=("timeouts",))
    with pytest.raises(OffrlError, match=r"missing the D4RL keys \['timeouts'\]"):
        import_d4rl(path, "imported/hopper/missing-v0", "Hopper-v5")


def test_truncated_file_is_refused(tmp_path):
    path = write_hdf5(tmp_path / "d.hdf5", d4rl_arrays(ENDS, length=4000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(OffrlError, match="truncated or corrupt"):
        import_d4rl(path, "imported/hopper/truncated-v0", "Hopper-v5")
    with pytest.raises(OffrlError, match="does not exist"):
        import_d4rl(tmp_path / "absent.hdf5", "imported/hopper/absent-v0", "Hopper-v5")


def test_wrong_env_and_nan_rows_are_refused(tmp_path):
    path = write_hdf5(tmp_path / "e.hdf5", d4rl_arrays(ENDS))
    with pytest.raises(OffrlError, match=r"shape \(11,\) but Walker2d-v5 gives \(17,\)"):
        import_d4rl(path, "imported/hopper/wrongenv-v0", "Walker2d-v5")
    arrays = d4rl_arrays(ENDS)
    arrays["rewards"][[5, 7]] = np.nan
    with pytest.raises(OffrlError, match=r"rewards holds 2 NaN/inf values \(first at row 5\)"):
        import_d4rl(write_hdf5(tmp_path / "f.hdf5", arrays), "imported/hopper/nan-v0", "Hopper-v5")


def test_a_second_import_of_an_id_being_written_is_refused_at_once(tmp_path, monkeypatch):
    import os

    from offrl.data import d4rl_import, minari_io

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    path = tmp_path / "hopper.hdf5"
    write_hdf5(path, d4rl_arrays({19: "terminal", 39: "timeout"}))
    (tmp_path / "store").mkdir()
    lock = tmp_path / "store" / ".offrl-lock-local--concurrent--hopper-v0"
    lock.write_text(str(os.getppid()))  # a live process is importing it
    converted = []
    monkeypatch.setattr(d4rl_import, "read_d4rl_arrays", lambda *args: converted.append(args))
    with pytest.raises(OffrlError, match=r"dataset local/concurrent/hopper-v0 is being written by another offrl process"):
        import_d4rl(path, "local/concurrent/hopper-v0", "Hopper-v5")
    assert not converted and not minari_io.dataset_path("local/concurrent/hopper-v0").exists()
    lock.unlink()
    monkeypatch.undo()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    import_d4rl(path, "local/concurrent/hopper-v0", "Hopper-v5")
    assert minari_io.dataset_path("local/concurrent/hopper-v0").exists() and not lock.exists()
