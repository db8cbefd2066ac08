"""Minari datasets <-> one TensorDict of transitions.

Layout of the TensorDict (batch size [N] transitions, TorchRL key conventions):
    observation, action, episode, step, episode_last  (+ achieved_goal, desired_goal on goal datasets)
    ("next", observation | reward | terminated | truncated | done)  (+ ("next", achieved_goal | desired_goal))
`episode_last` is the flat index of the last transition of the same episode: samplers use it to stay inside
an episode without scanning.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import h5py
import minari
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from minari.dataset.minari_storage import MinariStorage
from tensordict import TensorDict

from offrl.data.generators import GeneratedDataset
from offrl.dataset_info import DatasetInfo, box_bounds, reference_scores
from offrl.envs.recorded_spec import trusted_env_spec
from offrl.errors import OffrlError
from offrl.processes import process_alive
from offrl.paths import datasets_root

GOAL_KEYS = ("achieved_goal", "desired_goal")
CACHE_DIR = "offrl-cache-v1"  # beside Minari's data/ folder; bump the version when the layout changes


class EpisodeArrays(NamedTuple):
    id: int
    observations: np.ndarray | dict
    actions: np.ndarray
    rewards: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray


@contextlib.contextmanager
def _minari_root(path: Path) -> Iterator[None]:
    """Minari reads its store from MINARI_DATASETS_PATH at call time; point it elsewhere for a moment."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


# Minari's namespace/name-vN, each /-separated part a plain folder name: no '.', '..', empty or hidden part, no
# absolute path or backslash, so that no id reaches a folder outside the store.
ID_PATTERN = re.compile(r"\A\w[\w.-]*(?:/\w[\w.-]*)*-v\d+\Z")


def check_id(dataset_id: str) -> None:
    """Refuse, before any path is made from it, an id that is not namespace/name-vN of plain names."""
    if not isinstance(dataset_id, str) or not ID_PATTERN.match(dataset_id):
        raise OffrlError(
            f"dataset id {dataset_id!r} is not a Minari id; use namespace/name-vN, e.g. local/hopper/medium-v0, each "
            "/-separated part a plain name of letters, digits, _, . and - that starts with a letter, digit or _"
        )


def dataset_path(dataset_id: str) -> Path:
    check_id(dataset_id)
    return datasets_root() / dataset_id


TMP_PREFIX = ".offrl-tmp-"


@contextlib.contextmanager
def generation_lock(dataset_id: str):
    """One writer per dataset id (generate or import): a lock file in the store names the writing process; a second
    writer of the same id is refused at once instead of converting for minutes to lose the rename (a dead writer's
    lock is taken)."""
    check_id(dataset_id)
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    lock = root / f".offrl-lock-{dataset_id.replace('/', '--')}"
    while True:
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                owner = lock.read_text().strip()
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            alive = process_alive(int(owner)) if owner.isdigit() else age < 60  # a lock being written has no pid yet
            if alive:
                raise OffrlError(
                    f"dataset {dataset_id} is being written by another offrl process (pid {owner or '?'}); wait for "
                    f"it to finish (or delete {lock} if no such process runs)"
                ) from None
            lock.unlink(missing_ok=True)
    try:
        os.write(descriptor, str(os.getpid()).encode())
        os.close(descriptor)
        yield
    finally:
        lock.unlink(missing_ok=True)


def remove_abandoned_writes(root: Path) -> None:
    """Delete the temporary stores of dataset writes whose process died (a SIGKILL skips their clean-up)."""
    for folder in root.glob(f"{TMP_PREFIX}*"):
        pid = folder.name[len(TMP_PREFIX):].split("-")[0]
        if not pid.isdigit() or not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def write_dataset(dataset_id: str, generated: GeneratedDataset) -> Path:
    """Write a Minari dataset atomically: build it in a temporary store beside the real one, then rename.

    A killed process leaves at most a `.offrl-tmp-<pid>-*` folder, never a half dataset under the real id; the
    next write removes the folders of processes that are gone. A store that cannot take it (full, read-only) raises
    one OSError naming the store, with nothing left in it.
    """
    check_new_id(dataset_id)
    root = datasets_root()
    root.mkdir(parents=True, exist_ok=True)
    final = dataset_path(dataset_id)
    remove_abandoned_writes(root)
    tmp_root = None
    try:
        tmp_root = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-", dir=root))

        def write_minari() -> None:
            with _minari_root(tmp_root):
                created = minari.create_dataset_from_buffers(
                    dataset_id=dataset_id,
                    buffer=generated.episodes,
                    env=generated.env_spec,
                    eval_env=generated.eval_env_spec,
                    algorithm_name=generated.algorithm_name,
                    author="offrl",
                    code_permalink="offrl.data.generators",
                    ref_min_score=generated.ref_min_score,
                    ref_max_score=generated.ref_max_score,
                    description=generated.description,
                )
                # Minari's metadata must be flat; keep the recipe facts as one JSON string.
                created.storage.update_metadata({"offrl_recipe": json.dumps(generated.metadata, sort_keys=True)})

        in_child_process(write_minari)
        transitions = episodes_to_tensordict(
            (EpisodeArrays(e.id, e.observations, e.actions, e.rewards, e.terminations, e.truncations) for e in generated.episodes),
            dataset_id,
        )
        write_cache(tmp_root / dataset_id / "data", transitions)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp_root / dataset_id, final)
    except OSError as err:
        if err.errno is None:
            raise
        raise OSError(err.errno, err.strerror, str(root)) from None  # named by the store, not by a temporary now gone
    finally:
        if tmp_root is not None:
            shutil.rmtree(tmp_root, ignore_errors=True)
    return final


ERRNO_IN_OUTPUT = re.compile(r"errno = (\d+)|\[Errno (\d+)\]")


def raised_description(err: BaseException) -> dict[str, Any]:
    """An exception as plain JSON, to cross from the child process (no pickle: nothing that can run code)."""
    return {"kind": type(err).__name__, "message": str(err)[:4000], "errno": getattr(err, "errno", None),
            "filename": None if getattr(err, "filename", None) is None else str(err.filename)}


def raised_again(described: dict[str, Any]) -> BaseException:
    """The exception `raised_description` described: offrl's own, an interruption and an OS error keep their kind
    (they decide the message and the exit), any other comes back as a RuntimeError naming its kind."""
    kind, message = described.get("kind"), described.get("message", "")
    if kind == "OffrlError":
        return OffrlError(message)
    if kind == "KeyboardInterrupt":
        return KeyboardInterrupt()
    if isinstance(described.get("errno"), int):
        return OSError(described["errno"], os.strerror(described["errno"]), described.get("filename"))
    return RuntimeError(f"{kind}: {message}")


def in_child_process(work: Callable[[], None]) -> None:
    """Run `work` (an HDF5 write) in a forked child; its exception is raised here, a crash as the OSError behind it.

    On a full disk HDF5 prints an error for every object it cannot flush, then crashes in its own file close
    (H5F__dest, HDF5 2.0); in a child, that output is kept from the terminal and the crash from this process.
    """
    if not hasattr(os, "fork"):
        work()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    output_read, output_write = os.pipe()
    raised_read, raised_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: reports through its exit status and pipes, never returns
        status = 1
        try:
            os.close(output_read)
            os.close(raised_read)
            os.dup2(output_write, 1)
            os.dup2(output_write, 2)
            work()
            status = 0
        except BaseException as err:
            with contextlib.suppress(BaseException), os.fdopen(raised_write, "w") as pipe:
                json.dump(raised_description(err), pipe)
        finally:
            os._exit(status)
    os.close(output_write)
    os.close(raised_write)
    try:
        with os.fdopen(output_read, "rb") as output, os.fdopen(raised_read, "rb") as raised_pipe:
            tail = b""
            for chunk in iter(lambda: output.read(1 << 16), b""):
                tail = (tail + chunk)[-(1 << 16):]  # its last errors say why; the rest repeats them
            raised = raised_pipe.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:  # Ctrl-C here: the child goes too
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    if os.waitstatus_to_exitcode(status) == 0:
        return
    if raised:
        raise raised_again(json.loads(raised))
    text = tail.decode(errors="replace")
    found = ERRNO_IN_OUTPUT.findall(text)
    if found:
        number = int(next(n for n in found[-1] if n))
        raise OSError(number, os.strerror(number))
    raise RuntimeError(f"the HDF5 writer process ended with status {os.waitstatus_to_exitcode(status)}:\n{text.strip()}")


def recorded_env_specs(dataset_id: str, metadata: dict[str, Any]) -> tuple[EnvSpec | None, EnvSpec | None]:
    """The env spec and eval env spec (the env spec when none) a dataset's metadata records, each refused in one
    sentence when it names code offrl does not trust (offrl.envs.recorded_spec)."""
    env_spec = trusted_env_spec(dataset_id, "env_spec", metadata.get("env_spec"))
    eval_env_spec = trusted_env_spec(dataset_id, "eval_env_spec", metadata.get("eval_env_spec"))
    return env_spec, eval_env_spec or env_spec


def unreadable(dataset_id: str, err: BaseException) -> OffrlError:
    """The one sentence for a dataset in the store that is damaged (truncated HDF5, broken metadata, ...)."""
    return OffrlError(
        f"dataset {dataset_id} at {dataset_path(dataset_id)} cannot be read ({type(err).__name__}: "
        f"{str(err).splitlines()[0] if str(err) else ''}); delete that folder and generate or download it again"
    )


def check_new_id(dataset_id: str) -> None:
    """A dataset id that can be written: Minari's form, not yet in the store (checked before any work)."""
    final = dataset_path(dataset_id)
    if final.exists():
        raise OffrlError(f"dataset {dataset_id} already exists at {final}; delete that folder to regenerate it")


def load_minari(dataset_id: str, download: bool) -> minari.MinariDataset:
    """Open a Minari dataset from the local store, downloading it first when allowed and missing.

    Its recorded env specs are checked before Minari reads the dataset: Minari makes the recorded env itself when
    the metadata lacks the spaces.
    """
    path = dataset_path(dataset_id)
    if not path.exists():
        if not download:
            raise OffrlError(f"dataset {dataset_id} is not in the local Minari store ({datasets_root()})")
        try:
            minari.download_dataset(dataset_id)
        except Exception as err:  # no network, unknown remote id, missing remote client: all end the same way
            raise OffrlError(
                f"dataset {dataset_id} is not in the local Minari store ({datasets_root()}) and could not be downloaded "
                f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); download it where there is a "
                "network, or import an HDF5 file with `offrl data import-d4rl`"
            ) from None
    try:
        metadata = MinariStorage.read_raw_metadata(path / "data")
        if not isinstance(metadata, dict):
            raise ValueError("metadata.json holds no JSON object")
    except Exception as err:  # a missing folder, broken JSON
        raise unreadable(dataset_id, err) from None
    recorded_env_specs(dataset_id, metadata)
    try:
        return minari.load_dataset(dataset_id)
    except Exception as err:  # h5py and Minari raise many kinds for a damaged store
        raise unreadable(dataset_id, err) from None


def _stack_observations(observations: Any) -> dict[str, np.ndarray]:
    """Flat observations -> {'observation'}; goal dicts -> {'observation', 'achieved_goal', 'desired_goal'}."""
    if isinstance(observations, dict):
        missing = {"observation", *GOAL_KEYS} - set(observations)
        if missing:
            raise OffrlError(
                f"dict observations need the keys observation, achieved_goal, desired_goal, but {sorted(missing)} "
                "are missing; flatten the observations before storing the dataset"
            )
        return {key: np.asarray(observations[key], dtype=np.float32) for key in ("observation", *GOAL_KEYS)}
    return {"observation": np.asarray(observations, dtype=np.float32)}


def _check_finite(name: str, array: np.ndarray, episode_id: int) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.argwhere(bad)[0].tolist()
        raise OffrlError(
            f"{name} of episode {episode_id} holds {int(bad.sum())} NaN/inf values (first at index {first}); "
            "clean the dataset before training"
        )


def _read_group(node: h5py.Group | h5py.Dataset) -> np.ndarray | dict:
    return {key: _read_group(node[key]) for key in node} if isinstance(node, h5py.Group) else node[()]


def iterate_episode_arrays(dataset: minari.MinariDataset) -> Iterator[EpisodeArrays]:
    """(id, observations, actions, rewards, terminations, truncations) of every episode, in id order.

    Minari's own iterator decodes every episode's `infos` group, which dominates the time on datasets of
    thousands of episodes; for its HDF5 format we read the five arrays training needs and nothing else.
    """
    main_file = dataset.storage.data_path / "main_data.hdf5"
    if not main_file.is_file():  # another storage format: take Minari's general path
        for episode in dataset.iterate_episodes():
            yield EpisodeArrays(episode.id, episode.observations, episode.actions, episode.rewards, episode.terminations, episode.truncations)
        return
    with h5py.File(main_file, "r") as f:
        for episode_id in dataset.episode_indices:
            try:
                group = f[f"episode_{episode_id}"]
                arrays = [_read_group(group[key]) for key in ("observations", "actions", "rewards", "terminations", "truncations")]
            except KeyError as err:
                raise OffrlError(
                    f"{main_file} lacks part of episode {episode_id} ({err}); the dataset is damaged, so generate or download it again"
                ) from None
            yield EpisodeArrays(int(episode_id), *arrays)


def _checked_episode(episode: EpisodeArrays, dataset_id: str) -> tuple[dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """(observations by key [T+1, d], actions [T, a], per-step columns [T]) of one episode, or one sentence why not."""
    where = f"episode {episode.id} of {dataset_id}"
    try:
        observations = _stack_observations(episode.observations)
        actions = np.asarray(episode.actions, dtype=np.float32)
        steps = {
            "reward": np.asarray(episode.rewards, dtype=np.float32),
            "terminated": np.asarray(episode.terminations).astype(bool),
            "truncated": np.asarray(episode.truncations).astype(bool),
        }
    except (TypeError, ValueError) as err:
        raise OffrlError(f"{where} holds values that are not numbers ({err}); the dataset is damaged") from None
    length = len(actions) if actions.ndim else 0
    actions = actions.reshape(length, -1) if length else actions.reshape(0, 0)
    for key, array in observations.items():
        if array.ndim != 2 or len(array) != length + 1:
            raise OffrlError(
                f"{where} has {key} of shape {array.shape} for {length} actions; an episode stores [steps + 1, dim] "
                "observations (flatten image or nested observations first)"
            )
    for key, array in steps.items():
        if array.size != length or array.ndim > 2:
            raise OffrlError(f"{where} has {key}s of shape {array.shape} for {length} actions; it needs one per step")
        steps[key] = array.reshape(length)
    return observations, actions, steps


def episodes_to_tensordict(episodes: Iterable[EpisodeArrays], dataset_id: str) -> TensorDict:
    """Every transition of every episode, in episode order, as one TensorDict on the CPU."""
    columns: dict[str, list[np.ndarray]] = {}

    def add(key: str, value: np.ndarray) -> None:
        columns.setdefault(key, []).append(value)

    start = 0
    widths: dict[str, int] = {}
    for episode in episodes:
        observations, actions, steps = _checked_episode(episode, dataset_id)
        length = len(actions)
        if length == 0:
            continue
        for name, array in [("actions", actions), ("rewards", steps["reward"]), *observations.items()]:
            _check_finite(name, array, episode.id)
        for key, array in [("action", actions), *observations.items()]:
            if widths.setdefault(key, array.shape[1]) != array.shape[1]:
                raise OffrlError(
                    f"episode {episode.id} of {dataset_id} has {key} of width {array.shape[1]} but earlier episodes have "
                    f"{widths[key]}; every episode needs the same spaces"
                )
        for key, array in observations.items():
            add(key, array[:-1])
            add(f"next_{key}", array[1:])
        add("action", actions)
        for key, array in steps.items():
            add(key, array)
        add("episode", np.full(length, episode.id, dtype=np.int64))
        add("step", np.arange(length, dtype=np.int64))
        add("episode_last", np.full(length, start + length - 1, dtype=np.int64))
        start += length
    if start == 0:
        raise OffrlError(f"dataset {dataset_id} holds no transitions; generate or download it again")

    tensor = {key: torch.from_numpy(np.concatenate(parts)) for key, parts in columns.items()}
    td = TensorDict(batch_size=[start])
    for key in ("observation", *GOAL_KEYS):
        if key in tensor:
            td[key] = tensor[key]
            td["next", key] = tensor[f"next_{key}"]
    td["action"] = tensor["action"]
    for key in ("episode", "step", "episode_last"):
        td[key] = tensor[key]
    td["next", "reward"] = tensor["reward"]
    td["next", "terminated"] = tensor["terminated"]
    td["next", "truncated"] = tensor["truncated"]
    # The flat layout cuts episodes apart: the last stored step of each episode is an end even if unmarked.
    td["next", "done"] = tensor["terminated"] | tensor["truncated"] | (torch.arange(start) == tensor["episode_last"])
    return td


def dataset_info(dataset: minari.MinariDataset, transitions: TensorDict) -> DatasetInfo:
    metadata = dataset.storage.metadata
    env_spec, eval_env_spec = recorded_env_specs(dataset.spec.dataset_id, metadata)
    ref_min, ref_max = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    if ref_min is None or ref_max is None:
        ref_min, ref_max = reference_scores(eval_env_spec.id if eval_env_spec else None)
    action_low, action_high = box_bounds(dataset.action_space)
    recipe = metadata.get("offrl_recipe")
    return DatasetInfo(
        dataset_id=dataset.spec.dataset_id,
        observation_dim=transitions["observation"].shape[-1],
        action_dim=transitions["action"].shape[-1],
        goal_dim=transitions["desired_goal"].shape[-1] if "desired_goal" in transitions.keys() else 0,
        action_low=action_low,
        action_high=action_high,
        env_spec=env_spec,
        eval_env_spec=eval_env_spec,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        num_episodes=int(dataset.total_episodes),
        metadata=json.loads(recipe) if recipe else {},
    )


def _cache_stamp(data_path: Path) -> str:
    """Identifies the stored data: a cache made from other bytes is never used."""
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(data_path.iterdir()) if p.is_file()]
    return json.dumps(stats)


def write_cache(data_path: Path, transitions: TensorDict) -> TensorDict:
    """Keep `transitions` as a memory-mapped TensorDict beside Minari's `data/` folder; returns the mapped copy.

    Written to a temporary folder and renamed, so an interrupted write leaves no cache that looks complete. A store
    that cannot hold it (read-only, full) raises OSError and keeps no part of it.
    """
    cache = data_path.parent / CACHE_DIR
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(prefix=".offrl-cache-tmp-", dir=data_path.parent))
        check_room(tmp, transitions)
        mapped = transitions.memmap_like(tmp / "transitions")
        reserve_blocks(tmp / "transitions")
        mapped.update_(transitions)
        (tmp / "stamp.json").write_text(_cache_stamp(data_path))
        shutil.rmtree(cache, ignore_errors=True)
        os.rename(tmp, cache)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TensorDict.load_memmap(cache / "transitions")


def check_room(folder: Path, transitions: TensorDict) -> None:
    """An OSError when the disk of `folder` lacks the room for `transitions` (torch raises a RuntimeError instead
    when it cannot make a map's file)."""
    tensors = list(transitions.values(include_nested=True, leaves_only=True))
    stats = os.statvfs(folder)
    needed = sum(t.numel() * t.element_size() + stats.f_frsize for t in tensors)  # each file rounded up to a block
    if stats.f_bavail * stats.f_frsize < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))


def reserve_blocks(folder: Path) -> None:
    """Give the memory-mapped files under `folder` their disk blocks now: they are made sparse, and a page written
    through a map to a full disk kills the process (SIGBUS) where a reservation raises OSError."""
    if not hasattr(os, "posix_fallocate"):
        return
    for file in folder.rglob("*.memmap"):
        size = file.stat().st_size
        if size:
            descriptor = os.open(file, os.O_RDWR)
            try:
                os.posix_fallocate(descriptor, 0, size)
            finally:
                os.close(descriptor)


UNWRITABLE_STORE = {errno.EROFS: "read-only", errno.ENOSPC: "full", errno.EDQUOT: "full", errno.EACCES: "not writable",
                    errno.EPERM: "not writable"}


def cached_transitions(dataset: minari.MinariDataset) -> TensorDict:
    """The transitions of `dataset`: mapped from the cache when it matches the stored data, else converted once.

    Datasets generated here get their cache at creation; others (downloaded, imported by Minari) pay the
    HDF5 conversion on their first load only.
    """
    data_path = Path(dataset.storage.data_path)
    cache = data_path.parent / CACHE_DIR
    if (cache / "stamp.json").is_file() and (cache / "stamp.json").read_text() == _cache_stamp(data_path):
        return TensorDict.load_memmap(cache / "transitions")
    dataset_id = dataset.spec.dataset_id
    transitions = episodes_to_tensordict(iterate_episode_arrays(dataset), dataset_id)
    try:
        return write_cache(data_path, transitions)
    except OSError as err:  # the data itself was read: train on it, without a cache, and never advise deleting it
        state = UNWRITABLE_STORE.get(err.errno, f"not writable ({err.strerror})")
        print(
            f"offrl: the store {datasets_root()} is {state}; converting {dataset_id} in memory "
            "each run (no cache written)",
            file=sys.stderr,
        )
        return transitions
