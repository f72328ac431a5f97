"""``mixer_ext/roomserver`` and ``mixer_ext/api`` stay trees: no import circle, no front-end
in another's privates (the latter checked in roomserver); a roomserver module over
``MAX_LINES`` says at its top why it is one module (LAYOUT.md), without a line count.

Read from the source with ``ast`` (imports under ``TYPE_CHECKING`` and inside functions
count too), so a circle fails here before it fails at import time (issue 21.1).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.env import ROOT

PACKAGE = "mixer_ext.roomserver"
SOURCE = ROOT / "mixer_ext" / "roomserver"
#: LAYOUT.md's rule: a module over ~500 lines says at its top why it is one concept
MAX_LINES = 500
WHY_ONE_MODULE = re.compile(r"Why one module:")
LINE_COUNT = re.compile(r"~?\d+ lines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(source: Path = SOURCE) -> dict[str, ast.Module]:
    return {_module_name(f): ast.parse(f.read_text(), str(f)) for f in source.rglob("*.py")}


def _imports(tree: ast.Module, known: set[str], package: str = PACKAGE) -> set[str]:
    """Every module of ``package`` that ``tree`` imports, wherever the import statement is."""
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            # a submodule, or the module a name comes from; importing a.b.c runs a and a.b
            while name and name.startswith(package):
                if name in known:
                    found.add(name)
                name = name.rpartition(".")[0]
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_cycle_finder_finds_a_circle() -> None:
    """The check itself can fail: a two-module circle and a package circle are found."""
    assert _cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mixer_ext.roomserver.server import RoomServer\n"
    )
    assert _imports(tree, {PACKAGE, f"{PACKAGE}.server"}) == {PACKAGE, f"{PACKAGE}.server"}


@pytest.mark.parametrize("package", [PACKAGE, "mixer_ext.api"])
def test_no_import_circle_in_roomserver(package: str) -> None:
    modules = _modules(ROOT.joinpath(*package.split(".")))
    known = set(modules)
    graph = {name: _imports(tree, known, package) - {name} for name, tree in modules.items()}
    # a package's __init__ importing its own submodules is how packages work, not a circle
    for name in graph:
        if modules[name].body and name == package:
            assert not graph[name], f"{name} must import nothing (it is only a docstring)"
    assert _cycle(graph) is None, f"import circle: {' -> '.join(_cycle(graph) or [])}"


def _private_definitions(tree: ast.Module) -> set[str]:
    """``_names`` a module defines: functions, classes, ``self._x =`` attributes, globals."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def _foreign_private_uses(modules: dict[str, ast.Module]) -> list[str]:
    defined = {name: _private_definitions(tree) for name, tree in modules.items()}
    problems = []
    for name, tree in modules.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
                continue
            if node.attr.startswith("__"):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in ("self", "cls"):
                continue
            if node.attr in defined[name]:
                continue  # the module's own private (e.g. one class of it calling another)
            owners = [other for other, names in defined.items() if node.attr in names]
            if owners:
                problems.append(f"{name}:{node.lineno} {ast.unparse(node)} (of {owners[0]})")
    return problems


def test_no_module_reaches_into_anothers_privates() -> None:
    assert _foreign_private_uses(_modules()) == []


def test_private_check_finds_a_reach() -> None:
    """The check itself can fail: a server private used from a front-end is reported."""
    modules = {
        "a": ast.parse("class S:\n    def _remove(self): ...\n"),
        "b": ast.parse("def f(server):\n    server._remove()\n"),
    }
    assert _foreign_private_uses(modules) == ["b:2 server._remove (of a)"]


def _oversized_without_a_reason(source: Path = SOURCE, root: Path = ROOT) -> list[str]:
    """Modules over ``MAX_LINES`` whose docstring has no "Why one module:" note (or whose
    note gives a line count, which drifts: issue 25.5)."""
    problems = []
    for path in sorted(source.rglob("*.py")):
        text = path.read_text()
        lines = text.count("\n")
        if lines <= MAX_LINES:
            continue
        doc = ast.get_docstring(ast.parse(text)) or ""
        name = str(path.relative_to(root))
        if not WHY_ONE_MODULE.search(doc):
            problems.append(f"{name}: {lines} lines and no 'Why one module:' in its docstring")
        elif LINE_COUNT.search(doc):
            problems.append(f"{name}: its docstring gives a line count ({LINE_COUNT.search(doc)})")
    return problems


def test_a_big_module_says_why_it_is_one() -> None:
    assert _oversized_without_a_reason() == []


def test_size_check_finds_a_big_module(tmp_path: Path) -> None:
    """The check itself can fail: a long module without the note, or with a count, is found."""
    body = "x = 1\n" * (MAX_LINES + 1)
    cases = {
        "quiet.py": '"""A module."""\n' + body,
        "counted.py": '"""A module.\n\nWhy one module: one thing, ~600 lines."""\n' + body,
        "reasoned.py": '"""A module.\n\nWhy one module: one thing."""\n' + body,
        "small.py": '"""A module."""\nx = 1\n',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    found = _oversized_without_a_reason(tmp_path, tmp_path)
    assert [p.split(":")[0] for p in found] == ["counted.py", "quiet.py"], found
