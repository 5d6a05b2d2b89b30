"""The package's shape: no import circle, no module-level mutable state, only the edges
read the process, and no module over 400 lines.

No module imports (directly or through others) a module that imports it. Every import counts,
also those inside functions and under ``TYPE_CHECKING``: a lazy import still ties two modules
together, and a circle makes either unusable without the other.
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


# -- reading the process ---------------------------------------------------------------------
# The process's environment variables, stdin and terminal are read once, at a command's edge,
# into ``environment.Environment`` and passed down, so a test states them instead of patching
# the process. Only these places read the process directly ("module" or "module:function").
# (relay.py's remote script reads its own stdin on the remote: it is text, not code here.)
PROCESS_READERS = {
    "tunnelauth.environment": "Environment.current() is the one reading of the process",
    "tunnelauth.entry:_run": "the console entry leaves a shell's completion request to typer",
    "tunnelauth.askpass:main": "the askpass program runs as ssh's child: a process of its own",
    "tunnelauth.inventory:_load": "ansible-core reads its settings from os.environ only",
}
# Where Environment.current() is called: the edges of the commands, each reads it once.
EDGES = {
    "tunnelauth.cliactions:_ask_remote": "doctor and status of one host",
    "tunnelauth.cliactions:show_config": "config show",
    "tunnelauth.login:login": "a login, from the entry point or from cli",
    "tunnelauth.fleetcmd:status": "status across a fleet: one Environment for every host",
    "tunnelauth.fleetcmd:login": "logins across a fleet: one Environment for every host",
    "tunnelauth.demo.run:main": "tunnelauth demo",
    "tunnelauth.completion:complete_host": "a shell's completion request",
}
PROCESS_ATTRIBUTES = {"os": {"environ", "environb", "getenv", "getenvb"}, "sys": {"stdin"}}


class _ProcessReads(ast.NodeVisitor):
    """Where a module reads the process (``reads``) or calls ``Environment.current`` (``edges``),
    each as ``(function, line, what)``; module-level code is in function ``""``."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.modules: dict[str, str] = {}  # local name → "os" / "sys"
        self.reads: list[tuple[str, int, str]] = []
        self.edges: list[tuple[str, int, str]] = []

    def _where(self, node: ast.expr | ast.stmt, what: str) -> tuple[str, int, str]:
        return ".".join(self.scope), node.lineno, what

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name in PROCESS_ATTRIBUTES:
                self.modules[alias.asname or alias.name] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        wanted = PROCESS_ATTRIBUTES.get(node.module or "", set()) | {"isatty"}
        for alias in node.names:
            if node.module in PROCESS_ATTRIBUTES and alias.name in wanted:
                self.reads.append(self._where(node, f"from {node.module} import {alias.name}"))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.modules:
            module = self.modules[node.value.id]
            if node.attr in PROCESS_ATTRIBUTES[module]:
                self.reads.append(self._where(node, f"{module}.{node.attr}"))
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr == "isatty":
                self.reads.append(self._where(node, "isatty()"))
            target = func.value
            if (
                func.attr == "current"
                and isinstance(target, ast.Name)
                and target.id == "Environment"
            ):
                self.edges.append(self._where(node, "Environment.current()"))
        elif isinstance(func, ast.Name) and func.id == "isatty":
            self.reads.append(self._where(node, "isatty()"))
        self.generic_visit(node)


def _found(source: str) -> _ProcessReads:
    visitor = _ProcessReads()
    visitor.visit(ast.parse(source))
    return visitor


def _outside(allowed: dict[str, str], kind: str) -> tuple[list[str], set[str]]:
    """Each place of ``kind`` (reads or edges) that ``allowed`` does not name, and the entries
    of ``allowed`` that matched something."""
    stray: list[str] = []
    used: set[str] = set()
    for name, path in sorted(_modules().items()):
        visitor = _found(path.read_text(encoding="utf-8"))
        for function, line, what in getattr(visitor, kind):
            keys = [name, f"{name}:{function.split('.')[0]}"] if function else [name]
            entry = next((key for key in keys if key in allowed), None)
            if entry is None:
                stray.append(f"{name}:{function or '<module>'}:{line} {what}")
            else:
                used.add(entry)
    return stray, used


def test_only_the_edges_read_the_process() -> None:
    stray, used = _outside(PROCESS_READERS, "reads")
    assert stray == [], "take the Environment from the caller instead"
    assert used == set(PROCESS_READERS), "an allowed reader that reads nothing: drop it"


def test_only_the_commands_edges_read_the_environment() -> None:
    stray, used = _outside(EDGES, "edges")
    assert stray == [], "take the Environment from the caller instead"
    assert used == set(EDGES), "an edge that no longer reads it: drop it"


def test_the_process_reads_finder_finds_them() -> None:
    source = (
        "import os\n"
        "import sys as system\n"
        "from os import getenv\n"
        "HOME = os.environ['HOME']\n"
        "def f():\n"
        "    return os.getenv('X'), system.stdin.readline(), os.isatty(0)\n"
        "class C:\n"
        "    def m(self):\n"
        "        return Environment.current(), os.environb, sys.stdout.isatty()\n"
        "TEXT = 'sys.stdin.read()'\n"
    )
    visitor = _found(source)
    assert sorted(visitor.reads) == [
        ("", 3, "from os import getenv"),
        ("", 4, "os.environ"),
        ("C.m", 9, "isatty()"),
        ("C.m", 9, "os.environb"),
        ("f", 6, "isatty()"),
        ("f", 6, "os.getenv"),
        ("f", 6, "sys.stdin"),
    ]
    assert visitor.edges == [("C.m", 9, "Environment.current()")]


MODULE_LINES = 400  # a module a reader takes in at once; past it, split along a seam


def test_no_module_is_over_the_size_a_reader_takes_in() -> None:
    sizes = {
        name: len(path.read_text(encoding="utf-8").splitlines())
        for name, path in _modules().items()
    }
    assert len(sizes) > 50  # the package was found
    over = {name: lines for name, lines in sizes.items() if lines > MODULE_LINES}
    assert over == {}, f"modules over {MODULE_LINES} lines: split them along a seam"
