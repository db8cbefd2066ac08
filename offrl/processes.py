"""The processes a run is made of: whether one is still alive (a pid recorded in a lock or a temporary file's name),
and each rank's own state in a checkpoint that rank 0 writes for all. A leaf: data, checkpoints and callbacks use it."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
import torch.distributed as dist

from offrl.errors import OffrlError


def process_alive(pid: int) -> bool:
    """Whether a process with this pid runs on this machine (one owned by another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def gather_ranks(state: Any) -> dict[str, Any]:
    """Every process's `state` for a checkpoint: {"world_size": n, "ranks": [rank 0's, ..., rank n-1's]}.

    In a multi-process run this is a collective, so every rank must call it at the same point; Lightning's
    save_checkpoint does (each rank builds the checkpoint, rank 0 writes it, then all meet at a barrier).
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return {"world_size": 1, "ranks": [state]}
    ranks: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, state)  # unpickled on arrival: the checkpoint holds the states' own tensors and numbers
    return {"world_size": len(ranks), "ranks": ranks}


def own_rank(saved: dict[str, Any], trainer: L.Trainer | None) -> Any:
    """This process's entry of a `gather_ranks` result.

    A checkpoint of another world size is refused: its ranks' streams have no counterpart here, and the global batch
    (world size x data.batch_size) changed with it, so the run could not go on as the one that was saved.
    """
    world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
    if saved["world_size"] != world_size:
        raise OffrlError(
            f"the checkpoint was saved by a run of {saved['world_size']} processes but this run has {world_size}, and "
            f"each process resumes its own sampler and random streams; resume with --trainer.devices {saved['world_size']} "
            f"(or devices x num_nodes = {saved['world_size']}) or start a new run without --ckpt_path"
        )
    return saved["ranks"][rank]
