"""The package's shape: no module imports (directly or through others) a module that imports it.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
still ties two modules together, and a circle makes either unusable without the other.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "tunnelauth"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports anywhere in its text."""
    deps: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                deps.add(child if child in modules else node.module)
        elif isinstance(node, ast.Import):
            deps.update(alias.name for alias in node.names)
    return {dep for dep in deps if dep in modules}


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import circle found by a depth-first walk (each as the modules in order)."""
    state: dict[str, int] = {}
    path: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for dep in sorted(graph[module]):
            if state.get(dep) == 1:
                found.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return found


def test_no_import_circle() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert len(graph) > 50, "the walk must see the whole package"
    assert any(graph.values()), "the walk must see imports"
    assert _circles(graph) == []


def test_the_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c", "a"]]


MUTABLE = (list, dict, set, bytearray)


def _module_state() -> set[str]:
    """Module attributes that hold a mutable container, and names a function rebinds."""
    found: set[str] = set()
    for name, path in _modules().items():
        if name.endswith("__main__"):
            continue  # running it is running the program
        module = importlib.import_module(name)
        for attribute, value in vars(module).items():
            if not attribute.startswith("__") and isinstance(value, MUTABLE):
                found.add(f"{name}.{attribute}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Global):
                found.update(f"{name}.{global_name}" for global_name in node.names)
    return found


def test_no_module_level_mutable_state() -> None:
    assert _module_state() == set()
