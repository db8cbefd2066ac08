"""Bad input through the `offrl` command: a non-zero exit, one sentence, no traceback, and nothing already written lost.

(Unknown ids, NaN rows, missing/corrupt HDF5, unknown keys, negative lr and foreign checkpoints: tests/test_cli.py,
tests/test_data.py, tests/test_d4rl_import.py.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import h5py
import minari
import numpy as np
import pytest
import yaml

from conftest import random_episodes, write_synthetic
from offrl.cli import main
from offrl.data import catalog, minari_io, registry

DATASET = "test/errors/hopper-v0"


@pytest.fixture(scope="module")
def dataset():
    write_synthetic(DATASET, [30] * 6)
    return DATASET


def config(path: Path, dataset_id: str, model: dict | None = None, data: dict | None = None) -> Path:
    model = model or {"class_path": "offrl.algos.bc.BC", "init_args": {"hidden_dims": [8]}}
    data = data or {"class_path": "offrl.data.datamodules.TransitionDataModule"}
    path.write_text(
        yaml.safe_dump(
            {
                "model": model,
                "data": {
                    "class_path": data["class_path"],
                    "init_args": {"dataset_id": dataset_id, "batch_size": 16, "steps_per_epoch": 10, **data.get("init_args", {})},
                },
                "trainer": {"max_steps": 10, "accelerator": "cpu", "enable_progress_bar": False, "log_every_n_steps": 5},
                "evaluation": {"num_episodes": 1, "num_envs": 1},
            }
        )
    )
    return path


def offrl(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as stop:
        return stop.code
    return 0


def refused(capsys, *args: str) -> str:
    """Runs the command, which must exit 1 with one `offrl: error:` line; returns that line."""
    assert offrl(*args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("offrl: error:")]
    assert len(lines) == 1
    return lines[0]


def test_dataset_without_env_spec_trains_and_asks_for_an_env_to_evaluate(in_tmp_dir, capsys):
    space = gym.spaces.Box(-np.inf, np.inf, (11,), np.float32)
    minari.create_dataset_from_buffers(
        "test/errors/noenv-v0", random_episodes([30] * 4, 11, 3), env=None, observation_space=space,
        action_space=gym.spaces.Box(-1, 1, (3,), np.float32), algorithm_name="test",
    )
    path = str(config(in_tmp_dir / "noenv.yaml", "test/errors/noenv-v0"))
    message = refused(capsys, "fit", "--config", path)
    assert "recorded no environment" in message and "--data.env_id GYM_ENV_ID" in message
    assert not list(in_tmp_dir.glob("logs/*/*/*/checkpoints/*.ckpt"))  # refused before any update, not an epoch later
    assert offrl("fit", "--config", path, "--trainer.limit_val_batches", "0") == 0
    assert offrl("fit", "--config", path, "--data.env_id", "Hopper-v5") == 0
    assert len(list(in_tmp_dir.glob("logs/bc/errors-noenv/version_*/checkpoints/last.ckpt"))) == 2


def test_empty_dataset_is_refused(in_tmp_dir, capsys):
    write_synthetic("test/errors/empty-v0", [2])
    with h5py.File(minari_io.dataset_path("test/errors/empty-v0") / "data" / "main_data.hdf5", "r+") as f:
        episode = f["episode_0"]
        first_observation = episode["observations"][:1]
        del episode["observations"]
        episode["observations"] = first_observation  # an episode of no steps: its first observation only
        for key, shape in (("actions", (0, 3)), ("rewards", (0,)), ("terminations", (0,)), ("truncations", (0,))):
            dtype = episode[key].dtype
            del episode[key]
            episode[key] = np.zeros(shape, dtype)
    message = refused(capsys, "fit", "--config", str(config(in_tmp_dir / "empty.yaml", "test/errors/empty-v0")))
    assert "test/errors/empty-v0 holds no transitions" in message
    with h5py.File(in_tmp_dir / "empty.hdf5", "w") as f:
        for key in ("observations", "actions", "rewards", "terminals", "timeouts"):
            f[key] = np.zeros((0, 11) if key == "observations" else (0,))
    message = refused(capsys, "data", "import-d4rl", str(in_tmp_dir / "empty.hdf5"), "--id", "test/errors/emptyfile-v0", "--env", "Hopper-v5")
    assert "holds no transitions" in message
    assert not minari_io.dataset_path("test/errors/emptyfile-v0").exists()


def test_out_of_range_values_are_refused_through_the_cli(dataset, in_tmp_dir, capsys):
    value_policy = {"class_path": "offrl.algos.value_policy.ValuePolicy", "init_args": {"hidden_dims": [8]}}
    path = str(config(in_tmp_dir / "iql.yaml", dataset, model=value_policy))
    for expectile in ("1.5", "0", "-0.2"):
        message = refused(capsys, "fit", "--config", path, "--model.init_args.expectile", expectile)
        assert f"model.expectile must lie in (0, 1), got {float(expectile)}" in message
    rsp = {"class_path": "offrl.algos.rsp.RSP", "init_args": {"hidden_dims": [8], "steps_per_stage": 5, "target_return": 50}}
    path = str(config(in_tmp_dir / "rsp.yaml", dataset, model=rsp, data={"class_path": "offrl.data.datamodules.SkipStepDataModule"}))
    for scales in ("[32, 16]", "[8, 8]"):
        message = refused(capsys, "fit", "--config", path, "--data.init_args.scales", scales)
        assert f"data.scales must be a non-empty list of strictly increasing positive integers, got {yaml.safe_load(scales)}" in message
    assert not (in_tmp_dir / "logs").exists()


def test_absurd_trainer_checkpoint_and_network_sizes_are_refused_in_one_sentence(dataset, in_tmp_dir, capsys):
    path = str(config(in_tmp_dir / "bc.yaml", dataset))
    message = refused(capsys, "fit", "--config", path, "--checkpoint.every_n_train_steps", "-50")
    assert "every_n_train_steps=-50. Must be >= 0; fix that setting in the config or on the command line" in message
    message = refused(capsys, "fit", "--config", path, "--trainer.max_steps", "-5")
    assert "You passed in -5; fix that setting in the config or on the command line" in message
    message = refused(capsys, "fit", "--config", path, "--model.init_args.hidden_dims", "[100000000000]")
    assert "out of memory (it tried to allocate" in message and "lower model.hidden_dims or data.batch_size" in message
    assert not (in_tmp_dir / "logs").exists() or not any((in_tmp_dir / "logs").rglob("version_*"))


def test_a_batch_larger_than_the_data_actions_outside_the_box_and_skip_steps_longer_than_most_episodes_are_said(dataset, capsys, monkeypatch):
    from offrl.data.datamodules import SkipStepDataModule, TransitionDataModule

    TransitionDataModule(DATASET, batch_size=16).setup("fit")
    assert "offrl:" not in capsys.readouterr().err
    TransitionDataModule(DATASET, batch_size=1000).setup("fit")
    assert (
        f"offrl: data.batch_size 1000 is larger than the 180 transitions of {DATASET}, so every batch repeats transitions"
    ) in capsys.readouterr().err
    original = registry.load

    def two_actions_out_of_the_box(*args):
        transitions, info = original(*args)
        transitions = transitions.clone()  # the loaded data is shared with later loads of the same id
        transitions["action"][3, 0] = 1.5
        transitions["action"][7, 2] = -1.25
        return transitions, info

    monkeypatch.setattr(registry, "load", two_actions_out_of_the_box)
    TransitionDataModule(DATASET, batch_size=16).setup("fit")
    assert f"offrl: 2 of the 180 actions of {DATASET} lie outside the env's action box (by up to 0.5)" in capsys.readouterr().err
    monkeypatch.undo()
    SkipStepDataModule(DATASET, batch_size=16, scales=[8, 16]).setup("fit")  # episodes of 30 steps
    assert "offrl:" not in capsys.readouterr().err
    SkipStepDataModule(DATASET, batch_size=16, scales=[32]).setup("fit")
    assert f"offrl: 6 of the 6 episodes of {DATASET} are shorter than the largest skip step 32 of data.scales" in capsys.readouterr().err


def test_a_generation_killed_halfway_leaves_nothing_and_the_next_run_regenerates(tmp_path, monkeypatch, capsys):
    store = tmp_path / "store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    dataset_id = "offrl/pointmaze/umaze-v0"
    # A real SIGKILL in the middle of the write: Minari's files are in the temporary store, not yet renamed.
    killed_mid_write = (
        "import os, signal\n"
        "from offrl.data import minari_io\n"
        "minari_io.write_cache = lambda *args: os.kill(os.getpid(), signal.SIGKILL)\n"
        "from offrl.cli import main\n"
        f"main(['data', 'generate', '{dataset_id}', '--steps', '300'])\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    result = subprocess.run([sys.executable, "-c", killed_mid_write], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
    leftovers = list(store.glob(".offrl-tmp-*"))
    assert leftovers and list(leftovers[0].rglob("main_data.hdf5"))  # it did die halfway through the write
    assert not minari_io.dataset_path(dataset_id).exists() and dataset_id not in catalog.local_ids()
    assert "is not in the local store yet" in refused(capsys, "data", "info", dataset_id)

    assert offrl("data", "generate", dataset_id, "--steps", "300") == 0
    transitions, info = registry.load(dataset_id, generate_steps=None)
    assert transitions.batch_size[0] == 300 and info.is_goal_conditioned
    assert not list(store.glob(".offrl-tmp-*"))  # the dead write's folder is gone


def store_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_faults_on_paths_and_bad_values_are_one_sentence_and_lose_nothing(dataset, in_tmp_dir, monkeypatch, capsys):
    """Table-driven: each case's exact sentence, exit 1, no traceback, and the store as it was."""
    store = Path(os.environ["MINARI_DATASETS_PATH"])
    hdf5 = in_tmp_dir / "d4rl.hdf5"
    with h5py.File(hdf5, "w") as f:
        f["observations"] = np.zeros((20, 11), np.float32)
        f["actions"] = np.zeros((20, 3), np.float32)
        f["rewards"] = np.zeros(20)
        f["terminals"] = np.zeros(20, bool)
        f["timeouts"] = np.arange(20) % 10 == 9
    path = str(config(in_tmp_dir / "bc.yaml", dataset))
    goal_bc = str(config(in_tmp_dir / "goal.yaml", dataset, data={"class_path": "offrl.data.datamodules.HindsightDataModule"}))
    (in_tmp_dir / "blocked").write_text("a file where a folder should be")
    cases = [
        (("data", "import-d4rl", str(hdf5), "--id", "bad id", "--env", "Hopper-v5"),
         "dataset id 'bad id' is not a Minari id; use namespace/name-vN, e.g. local/hopper/medium-v0"),
        (("data", "import-d4rl", str(hdf5), "--id", "local/no-version", "--env", "Hopper-v5"),
         "dataset id 'local/no-version' is not a Minari id; use namespace/name-vN, e.g. local/hopper/medium-v0"),
        (("data", "import-d4rl", str(hdf5), "--id", dataset, "--env", "Hopper-v5"),
         f"dataset {dataset} already exists at {store / dataset}; delete that folder to regenerate it"),
        (("data", "import-d4rl", str(hdf5), "--id", "local/door/human-v0", "--env", "door-v0"),
         "--env 'door-v0' is not a Gymnasium env that can be made here (Environment `door` doesn't exist.); did you mean "
         "AdroitHandDoor-v1, AdroitHandDoorSparse-v1?"),
        (("fit", "--config", path, "--evaluation.num_envs", "0"),
         "evaluation.num_envs must be a positive integer, got 0; set trainer.limit_val_batches 0 to train without evaluating"),
        (("fit", "--config", goal_bc),
         f"data HindsightDataModule trains goal-conditioned policies, but {dataset} has no goals (no achieved_goal / "
         "desired_goal); use offrl.data.datamodules.TransitionDataModule for a reward dataset"),
        (("fit", "--config", path, "--trainer.default_root_dir", "blocked", "--trainer.logger", "false"),
         f"cannot use {in_tmp_dir / 'blocked'} (File exists); a file stands where a folder should be: move it, then run the command again"),
    ]
    before = store_listing(store)
    for args, sentence in cases:
        assert offrl(*args) == 1, args
        err = capsys.readouterr().err
        assert "Traceback" not in err, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("offrl: error:")]
        assert len(lines) == 1 and lines[0].startswith(f"offrl: error: {sentence}"), (args, lines)
    assert store_listing(store) == before
    assert not list(in_tmp_dir.glob("logs/*/*/version_*"))  # every start failed before its first update


def test_logs_folder_blocked_by_a_file_is_one_sentence(dataset, in_tmp_dir, capsys):
    (in_tmp_dir / "logs").write_text("not a folder")
    message = refused(capsys, "fit", "--config", str(config(in_tmp_dir / "bc.yaml", dataset)))
    assert message == (
        f"offrl: error: cannot use {in_tmp_dir / 'logs' / 'bc'} (Not a directory); a file stands where a folder should be: "
        "move it, then run the command again"
    )
    assert (in_tmp_dir / "logs").read_text() == "not a folder"


def test_a_damaged_dataset_in_the_store_is_named_with_the_fix(in_tmp_dir, capsys):
    write_synthetic("test/errors/damaged-v0", [30] * 4)
    folder = minari_io.dataset_path("test/errors/damaged-v0")
    data = folder / "data" / "main_data.hdf5"
    data.write_bytes(data.read_bytes()[:1000])
    for cache in folder.rglob("stamp.json"):
        cache.unlink()  # the cached conversion would hide the damage
    message = refused(capsys, "fit", "--config", str(config(in_tmp_dir / "bc.yaml", "test/errors/damaged-v0")))
    assert message.startswith(f"offrl: error: dataset test/errors/damaged-v0 at {folder} cannot be read (")
    assert message.endswith("delete that folder and generate or download it again")


def test_generate_checks_the_id_before_generating_and_refuses_a_second_writer(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    dataset_id = "offrl/pointmaze/umaze-v0"
    assert offrl("data", "generate", dataset_id, "--steps", "300") == 0
    calls = []
    recipe = catalog.RECIPES[dataset_id]
    monkeypatch.setitem(catalog.RECIPES, dataset_id, catalog.Recipe(lambda **kw: calls.append(kw), recipe.default_steps))
    message = refused(capsys, "data", "generate", dataset_id, "--steps", "300")
    assert message == f"offrl: error: dataset {dataset_id} already exists at {minari_io.dataset_path(dataset_id)}; delete that folder to regenerate it"
    assert not calls  # refused before generating anything

    other = "offrl/pointmaze/medium-v0"
    lock = tmp_path / "store" / ".offrl-lock-offrl--pointmaze--medium-v0"
    lock.write_text(str(os.getppid()))  # a live process holds it
    message = refused(capsys, "data", "generate", other, "--steps", "300")
    assert message == (
        f"offrl: error: dataset {other} is being written by another offrl process (pid {os.getppid()}); wait for it "
        f"to finish (or delete {lock} if no such process runs)"
    )
    assert not minari_io.dataset_path(other).exists()
    lock.write_text("999999999")  # its process is gone: the lock is taken over
    assert offrl("data", "generate", other, "--steps", "300") == 0
    assert minari_io.dataset_path(other).exists() and not lock.exists()
