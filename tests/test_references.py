"""docs/references.md cites offrl's own files by path and symbol, never by line number.

A citation is a backticked repository path, optionally followed (after white space) by backticked symbols separated
by commas:

    `offrl/algos/rsp.py` `RSP.phase_at`, `RSP.losses`
    `configs/rsp/pointmaze-*.yaml` `model.init_args.sample_actions`
    `configs/value_extraction/opex.yaml` `trainer.callbacks.0.init_args.step_size`
    `benchmarks/results/rsp.md` `Reading`

Repository paths are those under offrl/ or benchmarks/, and under configs/<folder> where configs/ has that folder
(CORL's `configs/offline/...` and IQL's `configs/mujoco_config.py`, cited as reference code, are not ours). A path
may hold {a,b} alternatives and * globs, and may end in / (a folder).

Checked here:
- every cited path exists: each {a,b} alternative, and each glob matches at least one file;
- every cited symbol exists in EVERY file the path names (a glob such as configs/rsp/pointmaze-*.yaml means that
  each matching config has the key):
    .py   a top-level def, class or assigned name, or Class.member (a method or a class-level assignment, nested
          classes by further dots), found with ast;
    .yaml the dotted key path in the parsed file, integers indexing lists;
    .md   a heading (# ...) that starts with the text;
- no citation of an offrl file carries a line number: `file.py:12`, `file.py` L12, `file.yaml`, line 12, for full
  paths (offrl/..., configs/<folder>/..., benchmarks/...), for paths relative to offrl/ or configs/ that name an
  existing file (`algos/rsp.py:218`, `iql_awr/pointmaze-umaze.yaml:16`), and for the bare name of an offrl module
  or config (`value_policy.py:244`, `crl.yaml:9`). Bare names that the reference repositories use too
  (AMBIGUOUS_NAMES: ADMPO's agent/sac.py, OfflineRL-Kit's sac.py, mopo's mopo.py and base.py, jaxrl_m's
  evaluation.py, ...) cite reference code and keep their pinned line numbers; offrl's files of those names are
  cited by full path. Reference citations (RSP_JAX's `main.py:155`, ADMPO's `agent/admpo.py` L128, ...) are left
  alone.
"""

from __future__ import annotations

import ast
import functools
import glob
import itertools
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "references.md"

# Bare file names that name reference code as well as offrl's: the document writes offrl's with their full path.
AMBIGUOUS_NAMES = {"__init__.py", "base.py", "evaluation.py", "mopo.py", "sac.py"}

PATH = r"[\w.*{},/-]+?(?:\.(?:py|yaml|yml|md)|/)"
CITED_PATH = re.compile(rf"`(?P<path>{PATH})`")
FIRST_SYMBOL = re.compile(r"\s+`(?P<symbol>[^`\n]+)`")
NEXT_SYMBOL = re.compile(r",\s*`(?P<symbol>[^`\n]+)`")
# What follows a file name when it gives a line number: ":12", " L12", " L.12", " l.12", ", line 12".
LINE_NUMBER = r"`?(?::\s?\d|\s+L\.?\s?\d|\s+l\.\s?\d|,?\s+lines?\s+\d)"
FILE_WITH_LINE = re.compile(rf"(?<![\w./*{{}},-])(?P<path>[\w.*{{}},/-]+\.(?:py|yaml|yml)){LINE_NUMBER}")
CONFIGS_WITH_LINE = re.compile(r"\b(?:offrl|configs)\b[^\n|`]{0,40}?\blines?\s+\d")


def expand_braces(path: str) -> list[str]:
    """`a/{b,c}/d{e,f}` -> the four paths (no nesting, as the document writes them)."""
    parts = re.split(r"(\{[^{}]*\})", path)
    choices = [part[1:-1].split(",") if part.startswith("{") else [part] for part in parts]
    return ["".join(combination) for combination in itertools.product(*choices)]


def is_ours(path: str, root: Path = ROOT) -> bool:
    """Whether an (expanded) path names this repository's files rather than a reference repository's."""
    head, _, rest = path.partition("/")
    if head in ("offrl", "benchmarks"):
        return True
    return head == "configs" and "/" in rest and (root / "configs" / rest.partition("/")[0]).is_dir()


def files_of(path: str, root: Path = ROOT) -> list[Path]:
    """The files (or the folder) an expanded, possibly globbed path names; empty when none exists."""
    if path.endswith("/"):
        return [root / path] if (root / path).is_dir() else []
    return sorted(Path(match) for match in glob.glob(str(root / path)))


def citations(text: str, root: Path = ROOT) -> list[tuple[int, str, list[str]]]:
    """(line, path, symbols) for every backticked path of this repository, its symbols as cited after it."""
    found = []
    for match in CITED_PATH.finditer(text):
        path = match.group("path")
        if not any(is_ours(expanded, root) for expanded in expand_braces(path)):
            continue
        symbols, end = [], match.end()
        follow = FIRST_SYMBOL.match(text, end)
        while follow and not CITED_PATH.fullmatch(f"`{follow.group('symbol')}`"):
            symbols.append(follow.group("symbol"))
            end = follow.end()
            follow = NEXT_SYMBOL.match(text, end)
        found.append((text.count("\n", 0, match.start()) + 1, path, symbols))
    return found


@functools.cache
def python_names(file: Path) -> dict[str, object]:
    """Top-level names of a module -> their ast node (classes keep their body for members)."""
    return {name: node for node in ast.parse(file.read_text()).body for name in defined_names(node)}


def defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [target.id for target in node.targets if isinstance(target, ast.Name)]
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    return []


def has_python_symbol(file: Path, symbol: str) -> bool:
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", symbol):
        return False
    names = python_names(file)
    first, *members = symbol.split(".")
    node = names.get(first)
    for member in members:
        if not isinstance(node, ast.ClassDef):
            return False
        node = next((child for child in node.body if member in defined_names(child)), None)
    return node is not None


@functools.cache
def yaml_document(file: Path):
    return yaml.safe_load(file.read_text())


def has_yaml_key(file: Path, symbol: str) -> bool:
    if not re.fullmatch(r"[\w-]+(\.[\w-]+)*", symbol):
        return False
    node = yaml_document(file)
    for key in symbol.split("."):
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return False
    return True


def has_heading(file: Path, symbol: str) -> bool:
    headings = (line.lstrip("#").strip() for line in file.read_text().splitlines() if line.startswith("#"))
    return any(heading.startswith(symbol) for heading in headings)


SYMBOL_CHECKS = {".py": has_python_symbol, ".yaml": has_yaml_key, ".yml": has_yaml_key, ".md": has_heading}


def citation_problems(text: str, root: Path = ROOT) -> list[str]:
    """Every cited path that does not exist and every cited symbol missing from a file the path names."""
    problems = []
    for line, path, symbols in citations(text, root):
        for expanded in expand_braces(path):
            if not is_ours(expanded, root):
                continue
            files = files_of(expanded, root)
            if not files:
                problems.append(f"line {line}: {expanded} does not exist")
                continue
            for symbol, file in itertools.product(symbols, files):
                check = SYMBOL_CHECKS.get(file.suffix)
                if check is None or not check(file, symbol):
                    problems.append(f"line {line}: {file.relative_to(root)} has no {symbol!r}")
    return problems


@functools.cache
def offrl_file_names(root: Path = ROOT) -> frozenset[str]:
    """Bare names of offrl's modules and configs, less those the reference repositories use too."""
    names = {file.name for file in (root / "offrl").rglob("*.py")} | {file.name for file in (root / "configs").rglob("*.yaml")}
    return frozenset(names - AMBIGUOUS_NAMES)


def names_offrl_file(path: str, root: Path = ROOT) -> bool:
    """Whether a file name as the document writes it, before a line number, is one of offrl's files."""
    names = offrl_file_names(root)
    for expanded in expand_braces(path):
        if "/" not in expanded:
            pattern = re.escape(expanded).replace(r"\*", ".*")
            if any(re.fullmatch(pattern, name) for name in names):
                return True
        elif is_ours(expanded, root) or files_of(f"offrl/{expanded}", root) or files_of(f"configs/{expanded}", root):
            return True
    return False


def line_number_citations(text: str, root: Path = ROOT) -> list[str]:
    """Citations of offrl's files that carry a line number."""
    problems = []
    for match in FILE_WITH_LINE.finditer(text):
        if names_offrl_file(match.group("path"), root):
            line = text.count("\n", 0, match.start()) + 1
            problems.append(f"line {line}: {match.group(0).strip()!r}")
    for match in CONFIGS_WITH_LINE.finditer(text):
        problems.append(f"line {text.count(chr(10), 0, match.start()) + 1}: {match.group(0)!r}")
    return problems


def test_cited_offrl_files_and_symbols_exist():
    text = DOC.read_text()
    cited = citations(text)
    # The document cites offrl's code throughout; far fewer citations means the parsing broke.
    assert sum(len(symbols) for _, _, symbols in cited) >= 150, f"only {len(cited)} citations parsed"
    problems = citation_problems(text)
    assert not problems, "stale citations in docs/references.md:\n" + "\n".join(problems)


def test_no_offrl_citation_has_a_line_number():
    problems = line_number_citations(DOC.read_text())
    assert not problems, (
        "docs/references.md cites offrl's files by line number (cite `path` `Symbol` instead):\n" + "\n".join(problems)
    )




def test_the_checks_catch_stale_citations(tmp_path):
    """The checks, on a small repository of their own: a renamed symbol, a missing file or key, line numbers."""
    (tmp_path / "offrl" / "algos").mkdir(parents=True)
    (tmp_path / "offrl" / "algos" / "planner.py").write_text(
        "LIMIT = 3\n\nclass Planner:\n    depth: int = 1\n\n    def plan(self):\n        pass\n\ndef helper():\n    pass\n"
    )
    (tmp_path / "configs" / "rsp").mkdir(parents=True)
    (tmp_path / "configs" / "rsp" / "maze-a.yaml").write_text("model:\n  init_args:\n    sample_actions: false\n    noise: 1\n")
    (tmp_path / "configs" / "rsp" / "maze-b.yaml").write_text("model:\n  init_args:\n    sample_actions: true\n")
    (tmp_path / "configs" / "rsp" / "opex.yaml").write_text("trainer:\n  callbacks:\n    - init_args:\n        step_size: 0.03\n")
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "results.md").write_text("# Results\n\n## Reading (3 seeds)\n")

    good = "\n".join([
        "(`offrl/algos/planner.py` `Planner.plan`, `Planner.depth`, `helper`, `LIMIT`; `offrl/algos/` and `offrl/{algos}/`)",
        "`configs/rsp/maze-*.yaml` `model.init_args.sample_actions`, `configs/rsp/opex.yaml` `trainer.callbacks.0.init_args.step_size`",
        "`benchmarks/results.md` `Reading`; reference code: `agent/planner.py` L178-185, `main.py:155-165`, sac.py L126,",
        "`evaluation.py:16`, `configs/offline/iql/hopper/medium_v2.yaml`, `configs/{mujoco,kitchen}_config.py`, tseq.py:36",
    ])
    assert citation_problems(good, tmp_path) == [] and line_number_citations(good, tmp_path) == []
    assert len(citations(good, tmp_path)) == 6

    stale = "\n".join([
        "(`offrl/algos/planner.py` `Planner.plan`, `Planner.replan`, `Planner`, `plan`)",
        "`offrl/algos/gone.py` `anything`, `configs/rsp/maze-*.yaml` `model.init_args.noise`,",
        "`configs/rsp/opex.yaml` `trainer.callbacks.1.init_args.step_size`, `benchmarks/results.md` `Discussion`",
        "`offrl/algos/planner.py` L67-78, (`algos/planner.py:218-223`), (`planner.py:401`), `maze-*.yaml:16`",
        "`planner.py` L119, (`offrl/algos/planner.py:243`), (configs, line 14)",
    ])
    problems = citation_problems(stale, tmp_path)
    assert sorted(problems) == sorted([
        "line 1: offrl/algos/planner.py has no 'Planner.replan'",
        "line 1: offrl/algos/planner.py has no 'plan'",
        "line 2: offrl/algos/gone.py does not exist",
        "line 2: configs/rsp/maze-b.yaml has no 'model.init_args.noise'",
        "line 3: configs/rsp/opex.yaml has no 'trainer.callbacks.1.init_args.step_size'",
        "line 3: benchmarks/results.md has no 'Discussion'",
    ])
    assert len(line_number_citations(stale, tmp_path)) == 7
