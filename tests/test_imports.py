"""The package's import graph, read with ast: no cycle between modules, and the directions of STYLE.md hold.

What counts, and why:
- Modules are the files of xaibench/, methods/ (xaibench.methods) and metrics/ (xaibench.metrics); a package is
  its `__init__.py`. Imports at module level and inside functions count alike (a function-level import only
  delays a dependency, it does not remove it). Strings handed to importlib (the registry's lazy built-ins,
  plugins) are not imports here: a registry that loads what registers into it is the design, not a circle.
- An import names the most specific module it loads: `import xaibench.a.b` and `from xaibench.a import b` (b a
  submodule) are edges to xaibench.a.b; `from xaibench.a import name` (name not a module) is an edge to
  xaibench.a. Relative imports are resolved against the importing module's package.
- The parent packages Python runs on the way (importing xaibench.a.b first runs xaibench/a/__init__.py) are not
  edges. So a package `__init__.py` that re-exports its own submodules is, by itself, no cycle; but a submodule
  that imports names from its own package's `__init__` (which in turn imports that submodule) is one, and it is
  reported: that is the order-of-import hazard a cycle test is for. The root package is no exception: a module
  that reads `from xaibench import __version__` depends on everything xaibench/__init__.py imports.
- Imports under `if TYPE_CHECKING:` never run: they make no cycle, but they do count for the directions (a
  module annotated with another layer's types depends on that layer).
- A cycle is reported as its strongly connected component (the modules tied together) and the shortest circle
  through it, with line numbers (where to cut). A direction holds through other modules too (metrics -> x ->
  models breaks "metrics imports no model code"); each import that enters a forbidden package is reported once,
  on the shortest chain from the package, with its line numbers.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"xaibench": REPO / "xaibench", "xaibench.methods": REPO / "methods", "xaibench.metrics": REPO / "metrics"}

# The front doors (STYLE.md: "only the CLI and the runner know about files on disk and command lines"; the Python
# API is the CLI's twin): nothing below them imports them.
FRONT = ("xaibench.cli", "xaibench.api", "xaibench.runner")
# source package -> the packages it must not import (STYLE.md "Which way the imports run" and issue 23).
FORBIDDEN = {
    "xaibench.metrics": ("xaibench.models", "xaibench.data", "xaibench.training", "xaibench.engine", *FRONT),
    "xaibench.methods": ("xaibench.training", "xaibench.engine", *FRONT),
    "xaibench.data": ("xaibench.models", "xaibench.training", "xaibench.engine", *FRONT),
    "xaibench.models": ("xaibench.training", "xaibench.engine", *FRONT),
    "xaibench.training": ("xaibench.engine", *FRONT),
    "xaibench.tables": ("xaibench.engine", *FRONT),
    "xaibench.figures": ("xaibench.engine", *FRONT),
    # the registry imports nothing of the project (today it imports nothing of it, not even xaibench.errors)
    "xaibench.registry": ("xaibench",),
}


@dataclass(frozen=True)
class Edge:
    """One import statement between two project modules."""

    source: str
    target: str
    line: int
    type_only: bool  # under `if TYPE_CHECKING:`


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every .py under each package folder (`pkg/__init__.py` is `pkg`)."""
    modules = {}
    for package, folder in packages.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join((package, *parts))] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement anywhere in the tree, with whether it sits under `if TYPE_CHECKING:`."""
    found = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append((node, type_only))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is a project module (None: not the project's)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.Import | ast.ImportFrom, source: str, path: Path, modules: dict[str, Path]) -> set[str]:
    if isinstance(node, ast.Import):
        return {target for alias in node.names if (target := _known(alias.name, modules))}
    if node.level:  # relative: against the package of the importing module
        package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        base = package[:len(package) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    targets = set()
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        target = submodule if submodule in modules else _known(origin, modules)
        if target:
            targets.add(target)
    return targets


def import_graph(packages: dict[str, Path] = PACKAGES) -> dict[str, list[Edge]]:
    """Module -> its import edges to other project modules (self-imports dropped)."""
    modules = module_files(packages)
    graph = {}
    for source, path in modules.items():
        edges = []
        for node, type_only in _import_nodes(ast.parse(path.read_text(), filename=str(path))):
            for target in sorted(_targets(node, source, path, modules)):
                if target != source:
                    edges.append(Edge(source, target, node.lineno, type_only))
        graph[source] = edges
    return graph


def cycles(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), over the edges that run."""
    successors = {node: sorted({e.target for e in edges if not e.type_only and e.target in graph})
                  for node, edges in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def connect(node: str) -> None:  # recursion depth is bounded by the module count (about a hundred)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in successors[node]:
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(successors):
        if node not in index:
            connect(node)
    return sorted(components)


def describe_cycle(component: list[str], graph: dict[str, list[Edge]]) -> str:
    """'3 modules (a, b, c); shortest circle: a -> b (line 3) -> a (line 5)' for one component: the circle is
    where to cut; the whole component is what is tied together."""
    members = set(component)
    lines = {(e.source, e.target): e.line for m in component for e in graph[m] if e.target in members
             and not e.type_only}
    best: list[str] = []
    for start in component:  # breadth first from each member back to itself, inside the component
        parents: dict[str, str | None] = {start: None}
        queue, last = [start], None
        while queue and last is None:
            module = queue.pop(0)
            for target in sorted(t for s, t in lines if s == module):
                if target == start:
                    last = module
                    break
                if target not in parents:
                    parents[target] = module
                    queue.append(target)
        circle = [start]
        while last is not None:  # back from the last module to the start, then around to the start again
            circle.insert(1, last)
            last = parents[last]
        circle = [start, *circle[2:], start]
        if not best or len(circle) < len(best):
            best = circle
    steps = [best[0]] + [f"{b} (line {lines[a, b]})" for a, b in zip(best, best[1:])]
    return f"{len(component)} modules ({', '.join(component)}); shortest circle: " + " -> ".join(steps)


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def forbidden_imports(graph: dict[str, list[Edge]], rules: dict[str, tuple[str, ...]] = FORBIDDEN) -> list[str]:
    """Every import that brings a forbidden package into a package, directly or through other modules:
    'a -> b (line 3) -> c (line 9): P must not import Q', once per import into the forbidden package, along the
    shortest chain that reaches it from the package."""
    found = []
    for package, banned in rules.items():
        start = sorted(module for module in graph if _within(module, package))
        chains = {module: [module] for module in start}
        entered: dict[Edge, list[str]] = {}
        queue = list(start)
        while queue:  # breadth first: each import into a forbidden package is reached on a shortest chain
            module = queue.pop(0)
            for edge in graph[module]:
                if _within(edge.target, package):
                    continue
                step = f"{edge.target} (line {edge.line}{', TYPE_CHECKING' if edge.type_only else ''})"
                if any(_within(edge.target, b) for b in banned):
                    entered.setdefault(edge, chains[module] + [step])
                elif edge.target not in chains and edge.target in graph:
                    chains[edge.target] = chains[module] + [step]
                    queue.append(edge.target)
        found += [" -> ".join(chain) + f": {package} must not import {', '.join(banned)}"
                  for chain in sorted(entered.values())]
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, list[Edge]]:
    return import_graph()


def test_the_graph_sees_the_whole_package(graph):
    # a sanity floor, so that a broken parser cannot pass the two tests below with an empty graph
    assert {"xaibench.cli", "xaibench.registry", "xaibench.methods.base", "xaibench.metrics.rsrg"} <= set(graph)
    assert any(e.target == "xaibench.registry" for e in graph["xaibench.methods"])


def test_no_import_cycle_between_modules(graph):
    found = [describe_cycle(component, graph) for component in cycles(graph)]
    assert not found, "import cycles (one strongly connected component per line):\n" + "\n".join(found)


def test_imports_run_the_way_style_md_says(graph):
    found = forbidden_imports(graph)
    assert not found, "forbidden imports:\n" + "\n".join(found)


def _edges(pairs: dict[str, list[str]]) -> dict[str, list[Edge]]:
    return {source: [Edge(source, target, 1, False) for target in targets] for source, targets in pairs.items()}


def test_the_checker_finds_a_cycle_and_a_forbidden_edge_in_a_made_up_graph():
    made_up = _edges({"p.a": ["p.b"], "p.b": ["p.c"], "p.c": ["p.a", "p.d"], "p.d": [], "p.e": ["p.d"]})
    assert cycles(made_up) == [["p.a", "p.b", "p.c"]]
    assert describe_cycle(["p.a", "p.b", "p.c"], made_up) == \
        "3 modules (p.a, p.b, p.c); shortest circle: p.a -> p.b (line 1) -> p.c (line 1) -> p.a (line 1)"
    assert forbidden_imports(made_up, {"p.e": ("p.d",)}) == ["p.e -> p.d (line 1): p.e must not import p.d"]
    assert forbidden_imports(made_up, {"p.a": ("p.d",)}) == [  # through p.b and p.c
        "p.a -> p.b (line 1) -> p.c (line 1) -> p.d (line 1): p.a must not import p.d"]
    assert forbidden_imports(made_up, {"p.d": ("p",)}) == []
    made_up["p.c"] = [Edge("p.c", "p.a", 1, type_only=True)]  # a type-only import breaks no cycle open
    assert cycles(made_up) == []


def test_the_parser_resolves_relative_submodule_function_level_and_type_only_imports(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import thing\nfrom . import b\n",  # re-exports: no cycle by themselves
        "a.py": "import os\nfrom pkg.sub import c\ndef f():\n    from . import b\nthing = 1\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import thing\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import thing\nfrom ..b import other\nimport pkg.sub.d as d\n",  # pkg's names: a cycle
        "sub/d.py": "from . import missing_name\n",
    }
    for name, text in files.items():
        (package / name).write_text(text)
    made = import_graph({"pkg": package})
    targets = {module: sorted((e.target, e.type_only) for e in edges) for module, edges in made.items()}
    assert targets == {
        "pkg": [("pkg.a", False), ("pkg.b", False)],
        "pkg.a": [("pkg.b", False), ("pkg.sub.c", False)],
        "pkg.b": [("pkg.a", True)],
        "pkg.sub": [],
        "pkg.sub.c": [("pkg", False), ("pkg.b", False), ("pkg.sub.d", False)],
        "pkg.sub.d": [("pkg.sub", False)],
    }
    assert cycles(made) == [["pkg", "pkg.a", "pkg.sub.c"]]
