"""`offrl report PATH... [--out DIR]`: run folders (or folders above them) -> a Markdown table of the last and best
evaluation score per config across seeds, and a PNG of each config's curves."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def report_main(args: list[str]) -> None:
    from offrl.reports import report

    parser = argparse.ArgumentParser(prog="offrl report", description=__doc__.split(":", 1)[1].strip())
    parser.add_argument("paths", nargs="+", type=Path, help="run folders (logs/<algorithm>/<dataset>/version_N) or folders above them")
    parser.add_argument("--out", type=Path, default=Path("report"), help="folder for report.md and the PNGs (default: ./report)")
    parsed = parser.parse_args(args)
    notes: list[str] = []
    try:
        table = report(parsed.paths, parsed.out, notes)
    finally:
        for note in notes:
            print(f"offrl: {note}", file=sys.stderr)
    print(table, end="")
    print(f"offrl: wrote {parsed.out / 'report.md'} and its plots")
