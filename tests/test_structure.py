"""Code-structure rules for the source tree, checked with ``ast`` (no imports of the code).

A module may not (a) import another module's private name (``from x import _y``), nor
(b) reach into an imported project module's private attribute (``pipeline._done``), and
(c) stays at most ``MAX_LINES`` lines. Private means a leading underscore, dunders excepted.
Attribute access on objects (``self._x``, ``obj._x``) is not (b): only names bound by importing
a project module are.

The house's order is :data:`LAYERS`, lowest first: (d) a module imports only modules of its own
layer or below (lazy imports inside functions and ``TYPE_CHECKING`` imports count too), and
(e) no two modules import each other, directly or round a circle. ``docs/architecture.md`` holds
the same order, rendered by :func:`layers_table`.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Importable packages (module name = dotted path from the checkout root).
PACKAGES = ("recops", "federated", "serving", "validation")
# Folders of top-level scripts run with the folder on sys.path (module name = file stem).
SCRIPT_DIRS = ("dags", "feature_repo")
MAX_LINES = 400

# The layers, lowest first: (name, the packages or modules in it, what the layer is for).
# A package entry covers its submodules; the longest matching entry decides.
LAYERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("declarations", ("recops", "recops.errors", "recops.schema", "recops.paths",
                      "recops.environment", "recops.config", "recops.config_base",
                      "recops.config_training", "recops.config_federated",
                      "recops.config_serving", "recops.config_events"),
     "settings, the schema's names, errors, where files go: what everything refers to"),
    ("core", ("recops.core",),
     "the ground floor: run records, audit chain, tombstones, lake, event logs and their "
     "watermark, atomic I/O, hashing, the process supervisor"),
    ("stages", ("recops.data", "recops.features", "recops.policy"),
     "data sources, features (Feast, text vectors), serving policies and off-policy evaluation"),
    ("training", ("recops.training",), "models, sequences, the trainer, metrics, privacy"),
    ("release", ("recops.release", "recops.compliance"),
     "the promotion gate and model registry; the compliance report and data-subject requests"),
    ("faces", ("federated", "serving", "validation", "feature_repo"),
     "Flower apps, the BentoML service, Great Expectations suites, Feast definitions"),
    ("orchestration", ("recops.orchestration",),
     "the pipeline's stages, the retraining cycle, the one fit, Airflow and the platform"),
    ("cli", ("recops.cli",), "the `recops` command"),
    ("dags", ("dags",), "Airflow's DAG files"),
)


@dataclass(frozen=True)
class Problem:
    rule: str  # "private-import" | "private-attribute" | "too-long"
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute module name of ``from <level dots><target> import ...`` inside ``module``."""
    if level == 0:
        return target or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - (level - 1)] if level > 1 else parts
    return ".".join([*parts, target] if target else parts)


def _dotted(node: ast.expr) -> list[str] | None:
    """``a.b.c`` as ["a", "b", "c"]; None when the chain does not start at a plain name."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def check_source(source: str, *, path: str, module: str, modules: Collection[str],
                 is_package: bool = False, max_lines: int = MAX_LINES) -> list[Problem]:
    """The rule violations in one module's source.

    ``module`` is its dotted name, ``modules`` every project module's dotted name (packages
    included); a ``from x import`` is a project import when x's first part is a project
    module's first part.
    """
    tree = ast.parse(source, filename=path)
    roots = {m.split(".")[0] for m in modules}
    problems: list[Problem] = []
    bound: dict[str, str] = {}  # local name -> the project module it was bound to by an import

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in roots:
                    continue
                if alias.asname:
                    bound[alias.asname] = alias.name
                else:
                    first = alias.name.split(".")[0]
                    bound[first] = first
        elif isinstance(node, ast.ImportFrom):
            source_mod = _absolute(module, is_package, node.level, node.module)
            if node.level == 0 and source_mod.split(".")[0] not in roots:
                continue
            for alias in node.names:
                if is_private(alias.name):
                    problems.append(Problem(
                        "private-import", path, node.lineno,
                        f"imports private name {alias.name!r} from {source_mod}"))
                full = f"{source_mod}.{alias.name}" if source_mod else alias.name
                if full in modules:
                    bound[alias.asname or alias.name] = full

    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not is_private(node.attr):
            continue
        chain = _dotted(node.value)
        if not chain or chain[0] not in bound:
            continue
        owner = ".".join([bound[chain[0]], *chain[1:]])
        if owner in modules:
            problems.append(Problem(
                "private-attribute", path, node.lineno,
                f"uses {owner}.{node.attr}, private to module {owner}"))

    n_lines = len(source.splitlines())
    if n_lines > max_lines:
        problems.append(Problem("too-long", path, 1,
                                f"{n_lines} lines (at most {max_lines}): split it"))
    return sorted(problems, key=lambda p: (p.line, p.rule))


@dataclass(frozen=True)
class SourceFile:
    path: Path
    module: str
    is_package: bool


def source_files(root: Path = ROOT) -> Iterator[SourceFile]:
    for pkg in PACKAGES:
        for p in sorted((root / pkg).rglob("*.py")):
            rel = p.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            yield SourceFile(p, ".".join(parts), is_package)
    for d in SCRIPT_DIRS:
        for p in sorted((root / d).glob("*.py")):
            yield SourceFile(p, p.stem, False)


def layered_files(root: Path = ROOT) -> list[SourceFile]:
    """Every source file named for the layer rule: script modules as ``<folder>.<stem>``."""
    return [SourceFile(f.path, f"{f.path.parent.name}.{f.module}", False)
            if f.path.parent.name in SCRIPT_DIRS else f for f in source_files(root)]


def layer_of(module: str, layers: Sequence[tuple[str, tuple[str, ...], str]] = LAYERS,
             ) -> int | None:
    """The index in ``layers`` of the longest entry that is ``module`` or a package above it."""
    best: tuple[int, int] | None = None
    for i, (_name, members, _what) in enumerate(layers):
        for m in members:
            inside = module == m or module.startswith(m + ".")
            if inside and (best is None or len(m) > best[1]):
                best = (i, len(m))
    return None if best is None else best[0]


def imports_of(source: str, *, module: str, modules: Collection[str],
               is_package: bool = False) -> set[str]:
    """The project modules that ``module`` imports anywhere in its source (a ``from pkg import
    name`` counts as ``pkg.name`` when that is a module, else as ``pkg``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            src = _absolute(module, is_package, node.level, node.module)
            for alias in node.names:
                full = f"{src}.{alias.name}"
                if full in modules:
                    found.add(full)
                elif src in modules:
                    found.add(src)
    found.discard(module)
    return found


def import_graph(files: Sequence[SourceFile]) -> dict[str, set[str]]:
    modules = {f.module for f in files}
    return {f.module: imports_of(f.path.read_text(encoding="utf-8"), module=f.module,
                                 modules=modules, is_package=f.is_package) for f in files}


def upward_imports(graph: Mapping[str, set[str]],
                   layers: Sequence[tuple[str, tuple[str, ...], str]] = LAYERS) -> list[str]:
    """``a -> b`` for every import of a module in a higher layer, or of one in no layer."""
    out = []
    for a, targets in sorted(graph.items()):
        la = layer_of(a, layers)
        for b in sorted(targets):
            lb = layer_of(b, layers)
            if la is None or lb is None or lb > la:
                names = [layers[i][0] if i is not None else "no layer" for i in (la, lb)]
                out.append(f"{a} ({names[0]}) -> {b} ({names[1]})")
    return out


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def layers_table(layers: Sequence[tuple[str, tuple[str, ...], str]] = LAYERS) -> str:
    """The layers as the markdown table ``docs/architecture.md`` shows, top layer first."""
    rows = ["| layer | packages and modules | what it holds |", "| --- | --- | --- |"]
    for name, members, what in reversed(layers):
        rows.append(f"| {name} | {', '.join(f'`{m}`' for m in members)} | {what} |")
    return "\n".join(rows) + "\n"


def check_tree(root: Path = ROOT) -> list[Problem]:
    files = list(source_files(root))
    modules = {f.module for f in files}
    problems: list[Problem] = []
    for f in files:
        problems += check_source(f.path.read_text(encoding="utf-8"),
                                 path=str(f.path.relative_to(root)), module=f.module,
                                 modules=modules, is_package=f.is_package)
    return problems


# --- the tree -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tree_problems() -> list[Problem]:
    return check_tree()


def _report(problems: list[Problem], rule: str) -> str:
    hits = [str(p) for p in problems if p.rule == rule]
    return f"{len(hits)} {rule} problem(s):\n" + "\n".join(hits)


def test_sources_found() -> None:
    modules = {f.module for f in source_files()}
    assert {"recops.core.lake", "recops.cli", "serving.engine", "recops_pipeline",
            "views"} <= modules


@pytest.mark.parametrize("rule", ["private-import", "private-attribute", "too-long"])
def test_tree_follows_rule(tree_problems: list[Problem], rule: str) -> None:
    assert not [p for p in tree_problems if p.rule == rule], _report(tree_problems, rule)


def test_no_import_runs_back_up() -> None:
    graph = import_graph(layered_files())
    assert graph["recops.core.runs"], "the import graph was not read"
    bad = upward_imports(graph)
    assert not bad, f"{len(bad)} import(s) against LAYERS:\n" + "\n".join(bad)


def test_no_import_circle() -> None:
    found = cycles(import_graph(layered_files()))
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_architecture_doc_shows_the_layers() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    begin, end = "<!-- layers: begin -->\n", "<!-- layers: end -->"
    assert begin in doc and end in doc, "docs/architecture.md lacks the layers block"
    shown = doc.split(begin, 1)[1].split(end, 1)[0]
    assert shown == layers_table(), ("docs/architecture.md's layers differ from LAYERS; "
                                     "put this between its markers:\n" + layers_table())


# --- the layer and circle checks, on synthetic graphs ---------------------------------------

TOY_LAYERS = (("low", ("p.low",), ""), ("mid", ("p.mid", "q"), ""), ("top", ("p",), ""))


def test_layer_is_the_longest_match() -> None:
    assert layer_of("p.low.x", TOY_LAYERS) == 0
    assert layer_of("p.other", TOY_LAYERS) == 2
    assert layer_of("q.a", TOY_LAYERS) == 1
    assert layer_of("r", TOY_LAYERS) is None


def test_upward_and_unplaced_imports_are_found() -> None:
    graph = {"p.low.a": {"p.mid.b"}, "p.mid.b": {"p.low.a", "q.c"}, "p.x": {"p.low.a"},
             "r": {"p.low.a"}}
    assert upward_imports(graph, TOY_LAYERS) == ["p.low.a (low) -> p.mid.b (mid)",
                                                 "r (no layer) -> p.low.a (low)"]


def test_cycles_are_found_with_their_members() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "e2"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_lazy_and_type_only_imports_count() -> None:
    src = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import T\n"
           "def f():\n    from pkg.sub import c\n    import flat\n")
    assert imports_of(src, module="pkg.b", modules=MODULES) == {"pkg.a", "pkg.sub.c", "flat"}


# --- the checker, on synthetic sources ------------------------------------------------------

MODULES = {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c", "flat"}


def _rules(source: str, module: str = "pkg.b", *, is_package: bool = False,
           max_lines: int = MAX_LINES) -> list[tuple[str, int]]:
    found = check_source(source, path="x.py", module=module, modules=MODULES,
                         is_package=is_package, max_lines=max_lines)
    return [(p.rule, p.line) for p in found]


@pytest.mark.parametrize("source", [
    "from pkg.a import _helper\n",
    "from pkg.a import public, _helper as h\n",
    "def f():\n    from pkg.sub.c import _x\n",
    "from . import _x\n",
    "from .sub.c import _x\n",
    "from pkg import _private_module\n",
    "from flat import _x\n",
])
def test_private_import_is_found(source: str) -> None:
    assert [r for r, _ in _rules(source)] == ["private-import"]


@pytest.mark.parametrize("source", [
    "from __future__ import annotations\n",
    "from pkg.a import __version__, __all__\n",
    "from pkg.a import helper\n",
    "from os import _exit\n",             # not a project module
    "from numpy import _typing\n",
    "import pkg.a\n",
])
def test_allowed_imports(source: str) -> None:
    assert _rules(source) == []


@pytest.mark.parametrize("source", [
    "from pkg import a\na._done()\n",
    "from pkg import a as alias\nx = alias._state\n",
    "import pkg.a as m\nm._x\n",
    "import pkg.sub.c\npkg.sub.c._x\n",
    "import pkg\npkg._x\n",
    "from pkg import sub\nsub.c._x\n",
    "from . import a\na._x\n",
    "from .sub import c\nc._x\n",
    "def f():\n    from pkg import a\n    return a._x\n",
    "import flat\nflat._x\n",
])
def test_private_module_attribute_is_found(source: str) -> None:
    assert [r for r, _ in _rules(source)] == ["private-attribute"]


@pytest.mark.parametrize("source", [
    "class K:\n    def f(self):\n        return self._x\n",
    "from pkg.a import Thing\nThing()._x\n",          # an object, not a module
    "from pkg.a import thing\nthing._x\n",            # a name in pkg.a, not a submodule
    "import os\nos._exit(0)\n",                       # not a project module
    "from pkg import a\na.__name__, a.public\n",
    "obj = object()\nobj._x\n",
    "from pkg import a\na.public._x\n",               # an attribute of an object in a
])
def test_allowed_attributes(source: str) -> None:
    assert _rules(source) == []


def test_relative_import_resolves_from_a_package() -> None:
    # In pkg/__init__.py, `from . import a` is pkg.a; `from .. import` would leave the tree.
    assert _rules("from . import a\na._x\n", module="pkg", is_package=True) == [
        ("private-attribute", 2)]
    assert _rules("from .a import _y\n", module="pkg", is_package=True) == [
        ("private-import", 1)]


def test_line_count_limit() -> None:
    assert _rules("x = 1\n" * 5, max_lines=5) == []
    assert _rules("x = 1\n" * 6, max_lines=5) == [("too-long", 1)]


def test_several_problems_with_lines() -> None:
    src = "from pkg.a import _p\nfrom pkg import a\n\na._q\n"
    assert _rules(src) == [("private-import", 1), ("private-attribute", 4)]
