"""The env specs a dataset records are untrusted input: checked before anything is made from them.

A Minari dataset stores its (eval) env as gymnasium EnvSpec JSON, and `gym.make(spec)` imports and calls whatever
`entry_point` and each `additional_wrappers[i].entry_point` name, with the recorded kwargs: a dataset from anywhere
could otherwise run any function of any installed module (`os:system` with a `command` kwarg) when its env is made.
A spec is accepted when each callable it names is either the entry point Gymnasium registers for the recorded id,
or a class of the right kind (env, wrapper, vector env) in a module under one of `TRUSTED_MODULES`; and when every
kwarg is plain JSON, nested at most `MAX_NESTING` deep.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from offrl.envs.robotics import robotics_envs
from offrl.errors import OffrlError

TRUSTED_MODULES = ("gymnasium.envs.", "gymnasium_robotics.", "offrl.envs.")
MAX_NESTING = 8  # PointMaze's maze_map, the deepest kwarg offrl records, is a list of lists (2)
PLAIN_SCALARS = (type(None), bool, int, float, str)
FIX = "re-make the dataset with `offrl data generate` or `offrl data import-d4rl`, or get it from a source you trust"


def _refused(dataset_id: str, field: str, value: Any, why: str) -> OffrlError:
    shown = repr(value)
    shown = shown if len(shown) <= 100 else f"{shown[:97]}..."
    return OffrlError(f"dataset {dataset_id} records {field} = {shown}, {why}; {FIX}")


def _names_trusted_class(entry_point: str, base: type) -> bool:
    """Whether `module:Name` names a subclass of `base` in a trusted module; no other module is imported."""
    module_name, colon, attribute = entry_point.partition(":")
    if not colon or not module_name.startswith(TRUSTED_MODULES):
        return False
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError, TypeError):
        return False
    return isinstance(target, type) and issubclass(target, base)


def _check_entry_point(dataset_id: str, field: str, entry_point: Any, registered: Any, base: type, kind: str) -> None:
    if entry_point is None or (isinstance(entry_point, str) and entry_point == registered):
        return  # no entry point makes nothing; the registered one is what `gym.make(id)` runs anyway
    if not isinstance(entry_point, str) or not _names_trusted_class(entry_point, base):
        registrable = "neither what Gymnasium registers for that env id nor" if base is not gym.Wrapper else "not"
        raise _refused(
            dataset_id, field, entry_point,
            f"which is {registrable} {kind} class in a module under {', '.join(m.rstrip('.') for m in TRUSTED_MODULES)}, "
            "so offrl will not import it",
        )


def _is_plain(value: Any, depth: int = 0) -> bool:
    """None, bool, int, float, str, and lists and string-keyed dicts of them, at most `MAX_NESTING` levels deep."""
    if type(value) in PLAIN_SCALARS:
        return True
    if depth == MAX_NESTING:
        return False
    if type(value) in (list, tuple):
        return all(_is_plain(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(type(key) is str and _is_plain(item, depth + 1) for key, item in value.items())
    return False


def _check_kwargs(dataset_id: str, field: str, kwargs: Any, may_be_none: bool = False) -> None:
    if kwargs is None and may_be_none:
        return  # a wrapper that records no constructor arguments; gym.make refuses to rebuild it
    if type(kwargs) is not dict:
        raise _refused(dataset_id, field, kwargs, "which is not a JSON object of keyword arguments, so offrl will not make an env from it")
    for name, value in kwargs.items():
        if type(name) is not str or not _is_plain(value):
            raise _refused(
                dataset_id, f"{field}.{name}", value,
                f"which is not plain JSON (null, true, false, numbers, strings, and lists and objects of them nested at most "
                f"{MAX_NESTING} deep), so offrl will not pass it to an env",
            )


def _spec_fields(spec: EnvSpec) -> dict[str, Any]:
    """An EnvSpec as the fields its JSON holds, for the same checks."""
    wrappers = [{"name": w.name, "entry_point": w.entry_point, "kwargs": w.kwargs} for w in spec.additional_wrappers]
    return {
        "id": spec.id, "entry_point": spec.entry_point, "vector_entry_point": spec.vector_entry_point, "kwargs": spec.kwargs,
        "additional_wrappers": wrappers,
    }


def check_spec_fields(dataset_id: str, field: str, fields: dict[str, Any]) -> None:
    """Refuse, in one sentence naming the dataset, the field and the value, a recorded spec that would import a
    callable offrl does not trust or pass it a kwarg that is not plain JSON."""
    env_id = fields.get("id")
    if isinstance(env_id, str) and env_id not in gym.registry:
        robotics_envs()  # PointMaze, AntMaze, Adroit ids are registered by gymnasium-robotics
    registered = gym.registry.get(env_id) if isinstance(env_id, str) else None
    _check_entry_point(
        dataset_id, f"{field}.entry_point", fields.get("entry_point"), registered.entry_point if registered else None, gym.Env, "an environment"
    )
    _check_entry_point(
        dataset_id, f"{field}.vector_entry_point", fields.get("vector_entry_point"), registered.vector_entry_point if registered else None,
        gym.vector.VectorEnv, "a vector environment",
    )
    _check_kwargs(dataset_id, f"{field}.kwargs", fields.get("kwargs", {}))
    wrappers = fields.get("additional_wrappers", [])
    if type(wrappers) not in (list, tuple):
        raise _refused(dataset_id, f"{field}.additional_wrappers", wrappers, "which is not a list of wrapper specs, so offrl will not make an env from it")
    for index, wrapper in enumerate(wrappers):
        where = f"{field}.additional_wrappers[{index}]"
        if type(wrapper) is not dict:
            raise _refused(dataset_id, where, wrapper, "which is not a JSON object of a wrapper spec, so offrl will not make an env from it")
        _check_entry_point(dataset_id, f"{where}.entry_point", wrapper.get("entry_point"), None, gym.Wrapper, "a wrapper")
        _check_kwargs(dataset_id, f"{where}.kwargs", wrapper.get("kwargs"), may_be_none=True)


def trusted_env_spec(dataset_id: str, field: str, recorded: Any) -> EnvSpec | None:
    """The EnvSpec a dataset's metadata records under `field` (its JSON, or an EnvSpec), checked by
    `check_spec_fields`; None when nothing usable is recorded (no spec, or JSON that is no EnvSpec)."""
    if recorded is None:
        return None
    if isinstance(recorded, EnvSpec):
        check_spec_fields(dataset_id, field, _spec_fields(recorded))
        return recorded
    try:
        fields = json.loads(recorded)
    except (ValueError, TypeError, RecursionError):
        return None
    if not isinstance(fields, dict):
        return None
    check_spec_fields(dataset_id, field, fields)
    try:
        return EnvSpec.from_json(recorded)
    except (gym.error.Error, ValueError, TypeError):
        return None
