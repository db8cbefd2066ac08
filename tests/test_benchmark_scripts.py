"""Every benchmark script imports: a script that refers to a function offrl no longer has fails here, not when
someone needs its figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(path.name for path in BENCHMARKS.glob("*.py")))
def test_the_benchmark_script_imports_and_has_a_main(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # scripts import their neighbours (throughput.py)
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script} has no main()"
