"""Dataset ids: the `offrl/` ids made here by generators, and any other Minari id loaded through Minari."""

from __future__ import annotations

import difflib

from tensordict import TensorDict
from tqdm.auto import tqdm

from offrl.data import minari_io
from offrl.data.catalog import PUBLIC_IDS, RECIPES, local_ids, recipe, unknown_id
from offrl.data.generators import Progress
from offrl.dataset_info import DatasetInfo
from offrl.errors import OffrlError

ID_PATTERN = minari_io.ID_PATTERN


def generate(dataset_id: str, steps: int | None = None, episodes: int | None = None, seed: int = 0) -> None:
    """Generate an `offrl/` dataset into the local Minari store, with a progress bar; atomic."""
    found = recipe(dataset_id)
    if steps is not None and episodes is not None:
        raise OffrlError("give either --steps or --episodes, not both")
    for name, value in (("steps", steps), ("episodes", episodes)):
        if value is not None and value <= 0:
            raise OffrlError(f"--{name} must be a positive number, got {value}")
    if steps is None and episodes is None:
        steps, episodes = found.default_steps, found.default_episodes
    minari_io.check_new_id(dataset_id)  # before minutes or hours of generation, not after
    total = steps if steps is not None else None
    with minari_io.generation_lock(dataset_id):
        with tqdm(total=total, desc=f"generating {dataset_id}", unit="step", dynamic_ncols=True) as bar:
            progress: Progress = bar.update
            generated = found.generate(steps=steps, episodes=episodes, seed=seed, progress=progress)
        minari_io.write_dataset(dataset_id, generated)


def load(
    dataset_id: str, generate_steps: int | None = None, generate_episodes: int | None = None, seed: int = 0
) -> tuple[TensorDict, DatasetInfo]:
    """Any dataset id -> (transitions on the CPU, info). Missing `offrl/` ids are generated first."""
    if not ID_PATTERN.match(dataset_id):
        raise unknown_id(dataset_id, "Minari ids look like namespace/name-vN")
    exists = minari_io.dataset_path(dataset_id).exists()
    if dataset_id.startswith("offrl/"):
        if not exists:
            generate(dataset_id, steps=generate_steps, episodes=generate_episodes, seed=seed)
        dataset = minari_io.load_minari(dataset_id, download=False)
    else:
        if not exists and dataset_id not in PUBLIC_IDS:
            # Probably a typo of a known id: say so now, not after a download's retries (a minute offline).
            known = list(RECIPES) + local_ids() + list(PUBLIC_IDS)
            close = difflib.get_close_matches(dataset_id, known, n=3, cutoff=0.85)
            if close:
                raise OffrlError(
                    f"dataset {dataset_id!r} is not in the local store; did you mean {', '.join(close)}? "
                    f"(if it is a remote Minari id, fetch it first with `minari download {dataset_id}`)"
                )
        try:
            dataset = minari_io.load_minari(dataset_id, download=not exists)
        except OffrlError as err:
            close = difflib.get_close_matches(dataset_id, [i for i in PUBLIC_IDS if i != dataset_id], n=3, cutoff=0.8)
            if close and dataset_id not in PUBLIC_IDS:
                raise OffrlError(f"{err}; did you mean {', '.join(close)}?") from None
            raise
    try:
        transitions = minari_io.cached_transitions(dataset)
        return transitions, minari_io.dataset_info(dataset, transitions)
    except OffrlError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:  # a damaged HDF5 file or metadata in the store
        raise minari_io.unreadable(dataset_id, err) from None
