"""A dataset is untrusted input: the env specs it records cannot make offrl import or run code of the dataset's
choosing, and a dataset id cannot name a folder outside the Minari store."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.envs.registration import EnvSpec

from conftest import write_synthetic
from test_d4rl_import import d4rl_arrays, write_hdf5
from offrl.cli import main
from offrl.data import minari_io, registry
from offrl.data.datamodules import TransitionDataModule
from offrl.envs.factory import make_eval_env
from offrl.errors import OffrlError

FIX = "re-make the dataset with `offrl data generate` or `offrl data import-d4rl`, or get it from a source you trust"


def tampered(dataset_id: str, field: str, changes: dict, drop_spaces: bool = False) -> None:
    """A synthetic Hopper-v5 dataset whose recorded `field` (env_spec or eval_env_spec) gets `changes`; without its
    spaces in the metadata, Minari itself makes the recorded env spec to learn them."""
    write_synthetic(dataset_id, [6, 6])
    metadata_file = minari_io.dataset_path(dataset_id) / "data" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    metadata[field] = json.dumps(json.loads(metadata[field]) | changes)
    if drop_spaces:
        del metadata["observation_space"], metadata["action_space"]
    metadata_file.write_text(json.dumps(metadata))


def system_call(marker: Path) -> dict:
    """Spec fields that make `gym.make` call os.system, which would create `marker`."""
    return {"entry_point": "os:system", "kwargs": {"command": f"touch {shlex.quote(str(marker))}"}}


def test_an_eval_env_spec_that_names_os_system_is_refused_before_anything_runs(tmp_path):
    dataset_id = "untrusted/system-v0"
    marker = tmp_path / "pwned"
    tampered(dataset_id, "eval_env_spec", system_call(marker))
    with pytest.raises(OffrlError) as refused:
        _, info = registry.load(dataset_id)
        make_eval_env(info, num_envs=1, seed=0).close()  # what `offrl fit`'s evaluation does with the spec
    assert str(refused.value) == (
        f"dataset {dataset_id} records eval_env_spec.entry_point = 'os:system', which is neither what Gymnasium registers "
        "for that env id nor an environment class in a module under gymnasium.envs, gymnasium_robotics, offrl.envs, so offrl "
        f"will not import it; {FIX}"
    )
    assert not marker.exists()


def test_a_datamodule_and_offrl_data_info_refuse_it_too(tmp_path, capsys):
    dataset_id = "untrusted/system-cli-v0"
    marker = tmp_path / "pwned"
    tampered(dataset_id, "eval_env_spec", system_call(marker))
    with pytest.raises(OffrlError, match=r"records eval_env_spec\.entry_point = 'os:system'"):
        TransitionDataModule(dataset_id, batch_size=4, steps_per_epoch=1).setup("fit")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "info", dataset_id])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(error.splitlines()) == 1
    assert error.startswith(f"offrl: error: dataset {dataset_id} records eval_env_spec.entry_point = 'os:system'")
    assert not marker.exists()


def test_minari_never_gets_to_make_an_untrusted_env_spec(tmp_path):
    # Minari's reader makes the recorded env when the metadata has no spaces: the check comes before Minari reads.
    dataset_id = "untrusted/no-spaces-v0"
    marker = tmp_path / "pwned"
    tampered(dataset_id, "env_spec", system_call(marker), drop_spaces=True)
    with pytest.raises(OffrlError, match=rf"^dataset {dataset_id} records env_spec\.entry_point = 'os:system', .*; {re.escape(FIX)}$"):
        registry.load(dataset_id)
    assert not marker.exists()


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "name, changes, field, shown",
    [
        (
            "wrapper-system",
            {"additional_wrappers": [{"name": "Shell", "entry_point": "os:system", "kwargs": {"command": "true"}}]},
            "eval_env_spec.additional_wrappers[0].entry_point", "'os:system'",
        ),
        (
            # A trusted module is not enough: the entry point must be a wrapper class there.
            "wrapper-register",
            {"additional_wrappers": [{"name": "Register", "entry_point": "gymnasium.envs.registration:register", "kwargs": {}}]},
            "eval_env_spec.additional_wrappers[0].entry_point", "'gymnasium.envs.registration:register'",
        ),
        ("env-make", {"entry_point": "gymnasium.envs.registration:make"}, "eval_env_spec.entry_point", "'gymnasium.envs.registration:make'"),
        ("vector-system", {"vector_entry_point": "os:system"}, "eval_env_spec.vector_entry_point", "'os:system'"),
        ("kwarg-too-deep", {"kwargs": {"deep": nested(9)}}, "eval_env_spec.kwargs.deep", "[[[[[[[[["),
        (
            "wrapper-kwargs-not-an-object",
            {"additional_wrappers": [{"name": "D4RLAdroit", "entry_point": "offrl.envs.d4rl_adroit:D4RLAdroit", "kwargs": ["x"]}]},
            "eval_env_spec.additional_wrappers[0].kwargs", "['x']",
        ),
    ],
)
def test_every_callable_and_kwarg_of_a_recorded_spec_is_checked(name, changes, field, shown):
    dataset_id = f"untrusted/{name}-v0"
    tampered(dataset_id, "eval_env_spec", changes)
    with pytest.raises(OffrlError) as refused:
        registry.load(dataset_id)
    message = str(refused.value)
    assert message.startswith(f"dataset {dataset_id} records {field} = {shown}") and message.endswith(FIX)
    assert len(message.splitlines()) == 1


def test_a_spec_object_with_a_kwarg_that_is_not_plain_json_is_refused():
    from offrl.envs.recorded_spec import trusted_env_spec
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

    spec = EnvSpec("Hopper-v5", entry_point="gymnasium.envs.mujoco.hopper_v5:HopperEnv", kwargs={"xml_file": Path("hopper.xml")})
    with pytest.raises(OffrlError, match=r"records eval_env_spec\.kwargs\.xml_file = PosixPath\('hopper.xml'\), which is not plain JSON"):
        trusted_env_spec("local/x-v0", "eval_env_spec", spec)
    spec = EnvSpec("Hopper-v5", entry_point=HopperEnv)  # a callable, not a name
    with pytest.raises(OffrlError, match=r"records eval_env_spec\.entry_point = <class"):
        trusted_env_spec("local/x-v0", "eval_env_spec", spec)


def test_the_specs_offrl_records_are_trusted_as_they_are():
    from offrl.data.d4rl_import import eval_env_spec
    from offrl.data.generators import pointmaze
    from offrl.envs.recorded_spec import trusted_env_spec

    specs = [
        gym.spec("Hopper-v5"),
        eval_env_spec("AdroitHandDoor-v1"),  # with offrl's D4RLAdroit wrapper
        eval_env_spec("Hopper-v5", 500, {"terminate_when_unhealthy": False}),
        pointmaze.eval_env_spec("umaze"),
        # Not the registered entry point, but an env class of a trusted module.
        EnvSpec("Hopper-v5", entry_point="gymnasium.envs.mujoco.hopper_v4:HopperEnv", max_episode_steps=1000),
    ]
    for spec in specs:
        assert trusted_env_spec("local/x-v0", "env_spec", spec.to_json()) == spec
    assert trusted_env_spec("local/x-v0", "env_spec", None) is None


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


@pytest.mark.parametrize("dataset_id", ["../../x-v0", "local/../../../x-v0", "ABSOLUTE/outside/x-v0", "local/./x-v0", "local//x-v0", "local\\..\\x-v0"])
def test_a_dataset_id_that_leaves_the_store_is_refused_before_any_folder_is_made(dataset_id, tmp_path, monkeypatch, capsys):
    dataset_id = dataset_id.replace("ABSOLUTE", str(tmp_path))
    store = tmp_path / "a" / "b" / "c" / "store"
    store.mkdir(parents=True)  # Minari makes the store itself when it lists it; what matters is nothing beside it
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    hopper = write_hdf5(tmp_path / "hopper.hdf5", d4rl_arrays({9: "terminal"}, length=20))
    before = tree(tmp_path)

    with pytest.raises(SystemExit) as exit_info:
        main(["data", "import-d4rl", str(hopper), "--id", dataset_id, "--env", "Hopper-v5"])
    error = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and len(error.splitlines()) == 1
    assert error == (
        f"offrl: error: dataset id {dataset_id!r} is not a Minari id; use namespace/name-vN, e.g. local/hopper/medium-v0, "
        "each /-separated part a plain name of letters, digits, _, . and - that starts with a letter, digit or _"
    )
    with pytest.raises(SystemExit):
        main(["data", "generate", dataset_id])  # only offrl/ recipe ids can be generated
    assert repr(dataset_id) in capsys.readouterr().err
    # Loading (fit's data.dataset_id), a DataModule's generation of a missing offrl/ id, and writing are refused too.
    with pytest.raises(OffrlError, match=rf"{re.escape(repr(dataset_id))}.*namespace/name-vN"):
        registry.load(dataset_id)
    with pytest.raises(OffrlError, match=r"namespace/name-vN"):
        TransitionDataModule(f"offrl/{dataset_id}").prepare_data()
    with pytest.raises(OffrlError, match=r"namespace/name-vN"):
        write_synthetic(dataset_id, [4])
    with pytest.raises(OffrlError, match=r"namespace/name-vN"), minari_io.generation_lock(dataset_id):
        pass
    assert tree(tmp_path) == before
