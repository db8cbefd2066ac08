"""How much of the maze the datasets of a coverage study cover (Park et al. 2024, arXiv 2406.09329, section 5), as
JSON + Markdown; missing datasets are generated first.

    python benchmarks/dataset_coverage.py [--steps 200000] [--out benchmarks/results/dataset_coverage.md] [IDS ...]

Default ids: the PointMaze UMaze recipe's data (`offrl/pointmaze/umaze-v0`, action noise N(0, 0.5^2)) and its two
same-recipe variants: without action noise (`-expert`, narrow) and with N(0, 2^2) (`-explore`, wide). A dataset
that is not in the Minari store is made by `offrl data generate` at --steps steps (seed 0); one that is there is
counted as it is. Per dataset: transitions, episodes (on PointMaze each ends at a reached goal) and occupied cells
(position / POSITION_CELL, velocity / VELOCITY_CELL). The runs on these datasets are a study:
`offrl sweep studies/value-extraction-coverage.yaml`, tabled by `offrl report`. The last stdout line is one JSON
object with every number.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COVERAGE_IDS = ("offrl/pointmaze/umaze-v0", "offrl/pointmaze/umaze-expert-v0", "offrl/pointmaze/umaze-explore-v0")
# Cell sizes of the count: PointMaze observations are (x, y, vx, vy).
POSITION_CELL, VELOCITY_CELL = 0.25, 0.5


def occupied_cells(observation: torch.Tensor) -> int:
    """How many (position / POSITION_CELL, velocity / VELOCITY_CELL) cells of a PointMaze dataset hold a state."""
    cells = torch.cat([observation[:, :2] / POSITION_CELL, observation[:, 2:4] / VELOCITY_CELL], dim=1).floor()
    return torch.unique(cells, dim=0).shape[0]


def describe(dataset_id: str, steps: int) -> dict:
    """The dataset's size and coverage, generating it first when the store has none."""
    from offrl.data import minari_io, registry

    start = time.perf_counter()
    generated = not minari_io.dataset_path(dataset_id).exists()
    if generated:
        registry.generate(dataset_id, steps=steps, seed=0)
    transitions, info = registry.load(dataset_id)
    return {
        "dataset_id": dataset_id,
        "transitions": transitions.batch_size[0],
        "episodes": info.num_episodes,
        "occupied_cells": occupied_cells(transitions["observation"]) if info.is_goal_conditioned else None,
        "generate_s": round(time.perf_counter() - start, 1) if generated else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset_ids", nargs="*", default=list(COVERAGE_IDS))
    parser.add_argument("--steps", type=int, default=200_000, help="size of a dataset generated here")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dataset_coverage.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    found = [describe(dataset_id, args.steps) for dataset_id in args.dataset_ids]
    lines = [
        "# Coverage of the datasets of the coverage study", "",
        f"Cells: occupied (position / {POSITION_CELL}, velocity / {VELOCITY_CELL}) cells. On PointMaze every episode "
        "ends at a reached goal.", "",
        "| dataset | transitions | episodes | cells |", "| --- | --- | --- | --- |",
        *(f"| {d['dataset_id']} | {d['transitions']} | {d['episodes']} | {d['occupied_cells'] if d['occupied_cells'] is not None else 'n/a'} |"
          for d in found),
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(json.dumps({"datasets": found}))


if __name__ == "__main__":
    main()
