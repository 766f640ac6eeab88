"""No dead names in bmx7_wg: every function, class, method, class field and module-level
constant it defines is read somewhere in bmx7_wg besides its own definition.

A name used only by tests is dead too: the tests should exercise what the program runs.
The check goes by name, not by binding (`ast`, no type inference): a dead `get` hides behind
every other `.get`, so it finds fewer dead names than there are, never a live one. A name
read from outside the package (an entry point, a hook another program calls) goes into
ALLOWED with the reason.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

import bmx7_wg

# The package as Python imports it: the source tree, or the installed one under autopkgtest.
PACKAGE = Path(bmx7_wg.__file__).resolve().parent

# "bmx7_wg/folder/module.py:name" -> why it is live although nothing in bmx7_wg reads it.
ALLOWED: dict[str, str] = {}


def definitions(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, name) of what a module defines at its top level and in its classes' bodies."""
    found: list[tuple[int, str]] = []

    def targets(node: ast.stmt) -> list[str]:
        if isinstance(node, ast.Assign):
            return [t.id for t in node.targets if isinstance(t, ast.Name)]
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return [node.target.id]
        return []

    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.append((node.lineno, node.name))
        found += [(node.lineno, name) for name in targets(node)]
        if isinstance(node, ast.ClassDef):
            for member in node.body:
                if isinstance(member, ast.FunctionDef | ast.AsyncFunctionDef):
                    found.append((member.lineno, member.name))
                found += [(member.lineno, name) for name in targets(member)]
    return [(line, name) for line, name in found if not (name.startswith("__") and name.endswith("__"))]


def reads(tree: ast.Module) -> Counter[str]:
    """Every name a module reads: as a variable, an attribute, an import, or a string that
    could name it (getattr, a field name in JSON)."""
    seen: Counter[str] = Counter()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            seen[node.id] += 1
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            seen[node.attr] += 1
        elif isinstance(node, ast.alias):
            seen[node.name.rpartition(".")[2]] += 1
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
            seen[node.value] += 1
    return seen


def dead_names(package: Path) -> list[str]:
    paths = sorted(package.rglob("*.py"))
    trees = {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in paths}
    seen: Counter[str] = Counter()
    for tree in trees.values():
        seen += reads(tree)
    dead = []
    for path, tree in trees.items():
        where = path.relative_to(package.parent)
        for line, name in definitions(tree):
            if not seen[name] and f"{where}:{name}" not in ALLOWED:
                dead.append(f"{where}:{line}: {name}")
    return dead


def test_every_name_bmx7_wg_defines_is_read_in_bmx7_wg() -> None:
    assert dead_names(PACKAGE) == []


def test_the_check_finds_each_kind_of_dead_name(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "from dataclasses import dataclass\n"
        "LIMIT = 3\n"
        "UNUSED = 4\n"
        "def used() -> int:\n    return LIMIT\n"
        "def unused() -> None:\n    pass\n"
        "@dataclass\nclass Thing:\n"
        "    read: int\n"
        "    written: int\n"
        "    def method(self) -> int:\n        return self.read\n"
        "    def dead_method(self) -> None:\n        pass\n"
        "    def __repr__(self) -> str:\n        return ''\n"
    )
    (package / "b.py").write_text(
        "from pkg.a import Thing, used\n"
        "thing = Thing(read=1, written=2)\n"
        "print(used(), thing.method(), getattr(thing, 'thing'))\n"
    )
    assert dead_names(package) == [
        "pkg/a.py:3: UNUSED",
        "pkg/a.py:6: unused",
        "pkg/a.py:11: written",
        "pkg/a.py:14: dead_method",
    ]
