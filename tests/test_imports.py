"""The import layering of DESIGN.md, checked on the source with ``ast`` (nothing is imported).

Imports flow one way: commands -> jobs -> shared layers -> errors; jobs never import each other;
``gpu/`` and ``cluster/`` import nothing from ``pipeline/``. Module-level imports (run when the
module is imported, ``if``/``try`` blocks and class bodies included) must not form cycles;
imports inside functions are collected separately and count for the package-level rules, as do
``if TYPE_CHECKING:`` imports (they state a dependency even though they never run).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "gpu", "cluster")
JOBS = ("pipeline.tokens", "pipeline.corpus", "pipeline.encode", "pipeline.validate")
LAYERS = ("pipeline.runtime", "pipeline.io", "pipeline.formats")


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``line``; ``kind`` is module, function or typing."""

    source: str
    target: str
    line: int
    kind: str

    def __str__(self) -> str:
        where = "" if self.kind == "module" else f" [{self.kind}-level]"
        return f"{self.source} -> {self.target} (line {self.line}){where}"


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _resolve(source: str, node: ast.ImportFrom) -> str:
    """The absolute module named by ``from … import`` (relative levels resolved)."""
    if not node.level:
        return node.module or ""
    base = source.split(".")
    base = base if _is_package(source) else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _known(name: str) -> str | None:
    """``name`` or its closest enclosing module inside the walked packages, else None."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, source: str) -> None:
        self.source = source
        self.edges: list[Edge] = []
        self._functions = 0
        self._typing = 0

    def _kind(self) -> str:
        if self._functions:
            return "function"
        return "typing" if self._typing else "module"

    def _add(self, target: str | None, line: int) -> None:
        if target and target != self.source:
            self.edges.append(Edge(self.source, target, line, self._kind()))

    def _function(self, node: ast.AST) -> None:
        self._functions += 1
        self.generic_visit(node)
        self._functions -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self._typing += 1
        for child in node.body:
            self.visit(child)
        self._typing -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(_known(alias.name), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.source, node)
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            self._add(submodule if submodule in MODULES else _known(base), node.lineno)


def _edges() -> list[Edge]:
    edges: list[Edge] = []
    for name, path in MODULES.items():
        collector = _Collector(name)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        edges.extend(collector.edges)
    return edges


EDGES = _edges()


def _group(module: str) -> str:
    """``pipeline.<job|layer|module>``, or the top package (``pipeline``, ``gpu``, ``cluster``)."""
    return (
        ".".join(module.split(".")[:2]) if module.startswith("pipeline.") else module.split(".")[0]
    )


def _cycles(nodes: Iterable[str], edges: list[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    graph: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def _report(edges: Iterable[Edge]) -> str:
    return "\n  " + "\n  ".join(sorted({str(e) for e in edges}))


def _cycle_edges(group_of, edges: list[Edge]) -> list[Edge]:
    pairs = [(group_of(e.source), group_of(e.target)) for e in edges]
    nodes = {group_of(m) for m in MODULES}
    bad: list[Edge] = []
    for component in _cycles(nodes, [p for p in pairs if p[0] != p[1]]):
        members = set(component)
        bad += [e for e, (a, b) in zip(edges, pairs, strict=True) if a != b and {a, b} <= members]
    return bad


def test_the_walk_finds_the_packages_and_their_imports() -> None:
    for expected in ("pipeline.cli", "pipeline.runtime.output", "pipeline.tokens.job", "gpu.detok"):
        assert expected in MODULES
    pairs = {(e.source, e.target) for e in EDGES}
    assert ("pipeline.tokens.job", "pipeline.runtime.output") in pairs
    assert ("pipeline.runtime.output", "pipeline.errors") in pairs
    # a function-level import is found and kept apart
    assert any(e.kind == "function" for e in EDGES)
    assert any(e.kind == "module" for e in EDGES)


def test_the_collector_resolves_relative_submodule_typing_and_function_imports() -> None:
    code = (
        "from . import job\n"
        "from ..runtime import output\n"
        "import pipeline.io.storage as storage\n"
        "from pipeline.formats.schema import Schema\n"
        "import numpy\n"
        "if TYPE_CHECKING:\n"
        "    from pipeline.corpus import api\n"
        "class A:\n"
        "    from pipeline import errors\n"
        "def f():\n"
        "    from pipeline.io.records import plan_partitions\n"
    )
    collector = _Collector("pipeline.tokens.api")
    collector.visit(ast.parse(code))
    assert {(e.target, e.kind) for e in collector.edges} == {
        ("pipeline.tokens.job", "module"),
        ("pipeline.runtime.output", "module"),
        ("pipeline.io.storage", "module"),
        ("pipeline.formats.schema", "module"),
        ("pipeline.corpus.api", "typing"),
        ("pipeline.errors", "module"),
        ("pipeline.io.records", "function"),
    }


def test_the_cycle_finder_reports_every_edge_of_a_planted_cycle() -> None:
    planted = [Edge(a, b, i, "module") for i, (a, b) in enumerate(["xy", "yz", "zx", "zw", "wv"])]
    assert _cycle_edges(lambda m: m, planted) == planted[:3]
    assert _cycle_edges(lambda m: m, planted[1:]) == []


def test_function_level_imports_are_listed() -> None:
    """Not a rule: the function-level imports, printed for review (``pytest -s``)."""
    inner = [e for e in EDGES if e.kind == "function"]
    assert all(e.source in MODULES and e.target in MODULES for e in inner)
    print(f"{len(inner)} function-level imports inside {', '.join(PACKAGES)}:" + _report(inner))


def test_no_import_cycle_between_modules() -> None:
    module_level = [e for e in EDGES if e.kind == "module"]
    bad = _cycle_edges(lambda m: m, module_level)
    assert not bad, "module-level import cycle(s):" + _report(bad)


def test_no_import_cycle_between_packages() -> None:
    bad = _cycle_edges(_group, EDGES)
    assert not bad, "import cycle(s) between packages (function-level imports included):" + _report(
        bad
    )


def test_gpu_and_cluster_import_nothing_from_pipeline() -> None:
    bad = [
        e
        for e in EDGES
        if _group(e.source) in ("gpu", "cluster") and _group(e.target).startswith("pipeline")
    ]
    assert not bad, "gpu/ or cluster/ import pipeline/:" + _report(bad)


def test_jobs_do_not_import_each_other() -> None:
    bad = [
        e
        for e in EDGES
        if _group(e.source) in JOBS
        and _group(e.target) in JOBS
        and _group(e.source) != _group(e.target)
    ]
    assert not bad, "a job package imports another job package:" + _report(bad)


def test_shared_layers_import_no_job_and_no_command() -> None:
    upper = (*JOBS, "pipeline.commands", "pipeline.cli")
    bad = [e for e in EDGES if _group(e.source) in LAYERS and _group(e.target) in upper]
    assert not bad, "a shared layer imports a job or the command line:" + _report(bad)
