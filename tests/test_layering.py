"""The package's import structure: no cycles between modules, and no arrow running back up a layer.

Read from the source with `ast` (nothing is imported, so the test is cheap and sees imports inside functions and
`TYPE_CHECKING` blocks too: a cycle hidden in a function body is still a cycle for a reader of the code).
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "autovid"

# (lower layer, a layer it must never import): the arrows point down only
FORBIDDEN = [
    ("autovid.nas", "autovid.engine"),
    ("autovid.nas", "autovid.data"),
    ("autovid.nas", "autovid.tune"),
    ("autovid.data", "autovid.engine"),
    ("autovid.data", "autovid.nas"),
    ("autovid.data", "autovid.tune"),
    ("autovid.engine", "autovid.tune"),
    ("autovid.models", "autovid.engine"),
    ("autovid.models", "autovid.tune"),
]

Graph = dict[str, set[str]]


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(root: Path, path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (`from package import name` counts as the submodule when it is one)."""
    here = module_name(root, path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: `from . import x` in package a.b is a.b.x
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    # a module importing its own package's __init__ (to reach a sibling) is not a dependency on its parent
    return {name for name in found if name in modules and name != here and not here.startswith(name + ".")}


def import_graph(root: Path) -> Graph:
    """module -> the package modules it imports, for every module under `root`."""
    files = sorted(root.rglob("*.py"))
    modules = {module_name(root, f) for f in files}
    return {module_name(root, f): imported_modules(root, f, modules) for f in files}


def find_cycle(graph: Graph) -> list[str] | None:
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def upward_arrows(graph: Graph, lower: str, upper: str) -> list[str]:
    def inside(name: str, layer: str) -> bool:
        return name == layer or name.startswith(layer + ".")

    return sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets
                  if inside(a, lower) and inside(b, upper))


@pytest.fixture(scope="module")
def graph() -> Graph:
    return import_graph(PACKAGE)


def test_no_import_cycles(graph: Graph) -> None:
    assert graph["autovid.engine.networks"] >= {"autovid.nas.supernet", "autovid.config"}  # the walk sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize(("lower", "upper"), FORBIDDEN)
def test_no_arrow_runs_back_up(graph: Graph, lower: str, upper: str) -> None:
    wrong = upward_arrows(graph, lower, upper)
    assert wrong == [], f"{lower} must not import {upper}: " + ", ".join(wrong)


def test_the_checks_catch_a_lazy_cycle_and_an_upward_import(tmp_path: Path) -> None:
    # a small package: a imports b at the top, b imports a inside a function; low imports high under TYPE_CHECKING
    root = tmp_path / "pkg"
    (root / "low").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "low" / "__init__.py").write_text("")
    (root / "a.py").write_text("from pkg import b\n")
    (root / "b.py").write_text("def f():\n    from . import a\n")
    (root / "low" / "x.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.a import f\n")
    graph = import_graph(root)
    assert set(find_cycle(graph) or []) == {"pkg.a", "pkg.b"}
    assert upward_arrows(graph, "pkg.low", "pkg.a") == ["pkg.low.x -> pkg.a"]
    del graph["pkg.b"]
    assert find_cycle(graph) is None
