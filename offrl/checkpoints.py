"""Checkpoints that cannot be half-written, are checked before use, and say what made them.

`AtomicCheckpointIO` (Lightning's checkpoint plugin for every `offrl` run) writes each checkpoint to a temporary
file in the same folder, fsyncs it and renames it over the old one, so a full disk or a kill mid-write leaves the
previous checkpoint whole. Loading verifies the file (a zip archive whose every member passes its CRC, holding a
Lightning checkpoint) and refuses a damaged one in one sentence naming it. `newest_readable` is what
`--ckpt_path last` resumes from: the run's `last.ckpt`, or its newest readable periodic checkpoint when that one
is damaged. A write that fails removes its temporary file and says in one sentence which checkpoint is kept; the
temporaries of a killed process are removed when its run starts again (`remove_abandoned_temporaries`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from offrl.errors import OffrlError
from offrl.processes import process_alive


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a whole torch checkpoint (None when it is): checked without unpickling anything."""
    try:
        if path.stat().st_size == 0:
            return "it is empty"
        if not zipfile.is_zipfile(path):
            return "it is not a torch checkpoint archive (truncated, zeroed or another kind of file)"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                return f"its member {bad} fails its checksum"
            if not any(name.endswith("data.pkl") for name in archive.namelist()):
                return "it holds no pickled checkpoint"
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"it cannot be read ({err})"
    return None


def read_checkpoint(path: str | Path, map_location: Any = None, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, or one sentence on why it cannot be used. Loaded with weights_only=True:
    offrl's checkpoints hold tensors and plain values only; `mmap` maps the tensors instead of reading them (for
    a look at the metadata)."""
    path = Path(path)
    if not path.is_file():
        raise OffrlError(f"checkpoint {path} does not exist; give a .ckpt file or 'last'")
    problem = checkpoint_problem(path)
    if problem is None:
        try:
            checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
        except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as err:
            problem = f"it does not load as an offrl checkpoint ({type(err).__name__})"
        else:
            if isinstance(checkpoint, dict) and "state_dict" in checkpoint:
                return checkpoint
            problem = "it is not a Lightning checkpoint (no state_dict)"
    raise OffrlError(f"checkpoint {path} is damaged: {problem}; use another checkpoint of the run or start a new run")


# The writer's temporary beside its checkpoint: .<name>.<pid>.tmp (the pid tells a killed writer's from a live one's).
TEMPORARY = re.compile(r"\A\.(?P<name>.+)\.(?P<pid>\d+)\.tmp\Z")


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


class _FirstWriteError:
    """A file whose write() keeps the first OSError it raised: torch's zip writer turns a failed write into a
    RuntimeError ('unexpected pos ...') that no longer says why."""

    def __init__(self, file) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def flush(self) -> None:
        self.file.flush()


def write_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over `path`, fsync the folder. Any failure
    removes the temporary; one of the machine (a full or read-only disk) ends in one sentence."""
    temporary = temporary_path(path)
    file = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as opened:
            file = _FirstWriteError(opened)
            torch.save(checkpoint, file)
            opened.flush()
            os.fsync(opened.fileno())
        os.replace(temporary, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except BaseException as err:
        with contextlib.suppress(OSError):  # a folder that cannot be written holds no temporary either
            temporary.unlink(missing_ok=True)
        recorded = file.error if file is not None and isinstance(err, Exception) else None
        cause = recorded or err
        if not isinstance(cause, OSError):
            raise
        raise OffrlError(write_failure(path, cause)) from None


def write_failure(path: Path, err: OSError) -> str:
    """The sentence for a checkpoint write the machine refused: the file, why, which checkpoint is kept, the fix."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free disk space there"
    elif err.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        fix = f"make {path.parent} writable"
    else:
        fix = f"check {path.parent} and its disk"
    try:
        kept, _ = newest_readable(path.parent)
    except OffrlError:
        return (f"cannot write checkpoint {path} ({err.strerror or err}); no checkpoint of this run was written: {fix}, "
                "then start it again")
    try:
        step = torch.load(kept, map_location="cpu", weights_only=True, mmap=True).get("global_step")
    except Exception:  # named without its update, then
        step = None
    kept_note = f"the previous checkpoint {kept}{f' (update {step})' if step is not None else ''} is kept"
    return f"cannot write checkpoint {path} ({err.strerror or err}); {kept_note}: {fix}, then resume with --ckpt_path last"


def remove_abandoned_temporaries(folder: Path) -> None:
    """Delete the temporaries in `folder` that a killed write left (a SIGKILL skips write_atomically's clean-up);
    those of a live process, and every other file, stay."""
    for candidate in folder.glob(".*.tmp") if folder.is_dir() else ():
        found = TEMPORARY.match(candidate.name)
        if found and not process_alive(int(found.group("pid"))):
            candidate.unlink(missing_ok=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options}")
        write_atomically(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location)


def checkpoint_step(path: Path) -> int:
    """The update count in a periodic checkpoint's name ('epoch=1-step=50.ckpt' -> 50; -1 when it has none)."""
    found = re.search(r"step=(\d+)", path.stem)
    return int(found.group(1)) if found else -1


def newest_readable(checkpoint_dir: Path) -> tuple[Path, list[str]]:
    """The checkpoint to resume from in a run's `checkpoints/` folder: last.ckpt if whole, else the periodic
    checkpoint of the highest step that is; with one line per damaged file passed over. Raises when none is."""
    candidates = [checkpoint_dir / "last.ckpt"] + sorted(
        (p for p in checkpoint_dir.glob("*.ckpt") if p.name != "last.ckpt"), key=checkpoint_step, reverse=True
    )
    skipped = []
    for candidate in candidates:
        if not candidate.is_file():
            continue
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate, skipped
        skipped.append(f"{candidate} is damaged ({problem})")
    raise OffrlError(f"no readable checkpoint in {checkpoint_dir} ({'; '.join(skipped) or 'none there'}); start a new run")
