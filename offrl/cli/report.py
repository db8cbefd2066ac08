"""`offrl report PATH... [--out DIR]`: run folders (or folders above them, such as a study's) -> report.md with
per algorithm x dataset the IQM and mean of the final score over seeds with 95 % stratified bootstrap intervals, the
aggregate over datasets (IQM, mean, median, optimality gap), each run's best evaluation apart, runs.csv and
scores.csv beside it, a performance profile, probabilities of improvement and each group's curves as PNGs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from offrl.errors import OffrlError


def report_main(args: list[str]) -> None:
    from offrl.reports import report

    parser = argparse.ArgumentParser(prog="offrl report", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("paths", nargs="+", type=Path, help="run folders (logs/<algorithm>/<dataset>/version_N) or folders above them")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md, the CSVs and the PNGs (default: ./report)")
    parser.add_argument("--compare", nargs=2, action="append", metavar=("X", "Y"),
                        help="a pair for the probability of improvement P(X > Y), by the names in the tables (quote names "
                             "with spaces); repeat for more (default: every pair when there are at most 5 algorithms)")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap resamples (default: 2000; rliable's papers use 50000, which takes minutes)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    parser.add_argument("--metric", choices=("eval/normalized_score", "eval/success", "eval/return"),
                        help="the score to table (default: per group, the first its runs have of normalized_score, success, return)")
    parsed = parser.parse_args(args)
    if parsed.reps < 100:
        raise OffrlError(f"--reps {parsed.reps} is too few resamples for a 95 % interval; give 100 or more (default 2000)")
    notes: list[str] = []
    try:
        table = report(parsed.paths, parsed.out, notes, pairs=[tuple(pair) for pair in parsed.compare] if parsed.compare else None, reps=parsed.reps, seed=parsed.seed, metric=parsed.metric)
    finally:
        for note in notes:
            print(f"offrl: {note}", file=sys.stderr)
    print(table, end="")
    print(f"offrl: wrote {parsed.out / 'report.md'}, runs.csv, scores.csv and the plots", flush=True)
