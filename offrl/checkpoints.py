"""Checkpoints that cannot be half-written, are checked before use, and say what made them.

`AtomicCheckpointIO` (Lightning's checkpoint plugin for every `offrl` run) writes each checkpoint to a temporary
file in the same folder, fsyncs it and renames it over the old one, so a full disk or a kill mid-write leaves the
previous checkpoint whole. Loading verifies the file (a zip archive whose every member passes its CRC, holding a
Lightning checkpoint) and refuses a damaged one in one sentence naming it. `newest_readable` is what
`--ckpt_path last` resumes from: the run's `last.ckpt`, or its newest readable periodic checkpoint when that one
is damaged.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from offrl.errors import OffrlError


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


def write_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    """torch.save to a temporary file beside `path`, fsync, rename over `path`, fsync the folder."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError as err:
        temporary.unlink(missing_ok=True)
        kept = "the previous checkpoint there is kept" if path.is_file() else "no checkpoint was written there"
        raise OffrlError(
            f"cannot write checkpoint {path} ({err.strerror or err}); {kept}: free disk space or make {path.parent} "
            "writable, then resume with --ckpt_path last"
        ) from None


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
