"""The layer order HACKING.md states, checked on every import of bmx7_wg.

Each module belongs to a unit: a folder of bmx7_wg (`config`, `mesh`, ...) or a top-level
module (`errors`, `engine`, ...). A unit may import its own modules and any unit of a
lower layer; an import of a unit of its own layer or of a higher one is a violation.
Imports inside functions count as much as those at the top of a module: a lazy import
only moves the cost, not the dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bmx7_wg

# The package as Python imports it: the source tree, or the installed one under autopkgtest.
PACKAGE = Path(bmx7_wg.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]

# Bottom to top, as HACKING.md's "Layers" lists them. "bmx7_wg" is the package's own
# __init__ (its version); "__main__" is `python -m bmx7_wg`.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("bmx7_wg", "base", "errors"),
    ("keys", "lock", "pending"),
    ("config",),
    ("plan",),
    ("mesh", "net", "wireguard"),
    ("system", "show", "lookup", "snapshot", "metrics"),
    ("engine",),
    ("service",),
    ("confirm",),
    ("cli",),
    ("__main__",),
)


def modules(package: Path) -> dict[str, Path]:
    """Every module of the package by its dotted name ("bmx7_wg.config.reader")."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: set[str]) -> list[tuple[int, str]]:
    """(line, module) for every bmx7_wg module `name` imports, anywhere in the file.
    `from PKG import NAME` names the module PKG.NAME when there is one, else PKG."""
    root = name.split(".")[0]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.append((node.lineno, candidate if candidate in known else source))
    return [(line, module) for line, module in found if module.split(".")[0] == root]


def unit(module: str) -> str:
    """`bmx7_wg.config.reader` -> `config`, `bmx7_wg.errors` -> `errors`, `bmx7_wg` -> itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def violations(package: Path, layers: tuple[tuple[str, ...], ...]) -> list[str]:
    rank = {u: i for i, layer in enumerate(layers) for u in layer}
    known = modules(package)
    problems = []
    for name, path in known.items():
        here = unit(name)
        if here not in rank:
            problems.append(f"{name}: its unit {here!r} is in no layer (add it to HACKING.md and LAYERS)")
            continue
        where = path.relative_to(package.parent)
        for line, target in imported(name, path, set(known)):
            there = unit(target)
            if there == here:
                continue
            if there not in rank:
                problems.append(f"{where}:{line}: {name} imports {target}, in no layer")
            elif rank[there] >= rank[here]:
                which = "its own layer" if rank[there] == rank[here] else "a higher layer"
                problems.append(f"{where}:{line}: {name} imports {target}, of {which} ({there!r})")
    return problems


def test_no_module_imports_its_own_layer_or_a_higher_one() -> None:
    assert violations(PACKAGE, LAYERS) == []


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {unit(name) for name in modules(PACKAGE)}
    assert units == {u for layer in LAYERS for u in layer}


def test_hacking_states_the_same_order() -> None:
    hacking = (REPO / "HACKING.md").read_text(encoding="utf-8")
    for i, layer in enumerate(LAYERS, 1):
        line = f"{i}. " + ", ".join(f"`{u}`" for u in layer)
        assert line in hacking, f"HACKING.md lacks the layer line {line!r}"


# The check itself, on a package made for it: each kind of upward import is found.


def write(package: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


HIGHER = "pkg.mesh.view, of a higher layer ('mesh')"


@pytest.mark.parametrize(
    ("source", "line", "expected"),
    [
        ("from pkg.mesh.view import x\n", 1, HIGHER),
        ("import pkg.mesh.view\n", 1, HIGHER),
        ("from pkg.mesh import view\n", 1, HIGHER),
        ("from ..mesh import view\n", 1, HIGHER),
        ("def lazy():\n    from pkg.mesh.view import x\n", 2, HIGHER),
        ("from pkg import top\n", 1, "pkg.top, of a higher layer ('top')"),
        ("from pkg.side import y\n", 1, "pkg.side, of its own layer ('side')"),
    ],
)
def test_the_check_finds_an_import_upward_or_sideways(
    tmp_path: Path, source: str, line: int, expected: str
) -> None:
    package = write(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "low/__init__.py": "",
            "low/a.py": source,
            "low/b.py": "from pkg.low.a import x\nfrom pkg import low\n",
            "side.py": "",
            "mesh/__init__.py": "",
            "mesh/view.py": "from pkg.low.a import x\nfrom pkg.side import y\n",
            "top.py": "import pkg.mesh.view\n",
        },
    )
    layers = (("pkg",), ("low", "side"), ("mesh",), ("top",))
    assert violations(package, layers) == [f"pkg/low/a.py:{line}: pkg.low.a imports {expected}"]


def test_the_check_finds_a_unit_without_a_layer(tmp_path: Path) -> None:
    package = write(tmp_path / "pkg", {"__init__.py": "", "new.py": ""})
    expected = "pkg.new: its unit 'new' is in no layer (add it to HACKING.md and LAYERS)"
    assert violations(package, (("pkg",),)) == [expected]
