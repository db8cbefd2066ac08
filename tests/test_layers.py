"""The package's layers point one way: every `offrl.*` import (at module level or inside a function) goes from a
layer to one it may use. A new import that breaks the order fails here with the file, line and rule."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "offrl"

# Layer -> the layers it may import (besides itself). Leaves first; the CLI on top may use everything.
MAY_IMPORT = {
    "errors": set(),
    "paths": {"errors"},
    "dataset_info": {"errors"},
    "objectives": {"errors"},
    "nn": {"errors"},
    "checkpoints": {"errors", "processes"},
    "lightning_adapter": set(),
    "cpu_threads": set(),
    "processes": {"errors"},
    "reports": {"errors"},
    "envs": {"errors", "dataset_info"},
    "data": {"errors", "paths", "dataset_info", "envs", "processes"},
    "models": {"errors", "nn", "objectives"},
    "algos": {"errors", "dataset_info", "lightning_adapter", "objectives", "nn", "models", "envs", "data"},
    "callbacks": {"errors", "checkpoints", "cpu_threads", "processes", "dataset_info", "lightning_adapter", "objectives", "nn", "envs", "data", "reports"},
    "recipes": {"errors", "paths", "dataset_info", "envs", "data", "algos", "callbacks"},
    "cli": {"errors", "cpu_threads", "processes", "paths", "dataset_info", "checkpoints", "envs", "data", "algos", "callbacks", "reports"},
    "__init__": {"errors"},
}


def layer_of(module: str) -> str:
    """offrl.data.generators.mujoco -> data; offrl.cli -> cli."""
    return module.split(".")[1] if module.count(".") else "__init__"


def offrl_imports(path: Path) -> list[tuple[int, str]]:
    imports = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "offrl":  # from offrl import errors
            names = [f"offrl.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        imports += [(node.lineno, name) for name in names if name == "offrl" or name.startswith("offrl.")]
    return imports


def test_every_module_belongs_to_a_known_layer():
    modules = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.rglob("*.py")}
    assert modules <= set(MAY_IMPORT), modules - set(MAY_IMPORT)


def test_layers_import_only_the_layers_below_them():
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
        for line, name in offrl_imports(path):
            target = layer_of(name)
            if target != source and target not in MAY_IMPORT[source]:
                broken.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name} ({source} may not use {target})")
    assert not broken, "\n".join(broken)


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from offrl import errors\n\ndef f():\n    from offrl.algos.sac import SAC\n")
    assert offrl_imports(probe) == [(1, "offrl.errors"), (4, "offrl.algos.sac")]
