"""tomlpos: positions of keys and values in tricky TOML documents."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmx7_wg.config.positions import KeyPath, SourceMap, scan

TRICKY = """\
# a comment with [brackets] = "quotes" # and hashes
[bmx7]  # [not.a.table]
announce = "a#b[c]=d" # trailing = [comment]
"quoted.key" = 'lit#[x]='
a . "b" . c = 1979-05-27 07:32:00Z
ml = \"\"\"
x = [ "not", "an", "array" ]
\\\"\"\" still inside
[not_a_table]
\"\"\"\"\"
ml2 = '''
[fake]
key = 1
'''''
arr = [
  1, # one ] [ =
  [2, "3]"],
  { x = 1, y.z = [4] },
]

[[interface.wg0.peer]]
public_key = "k0"
[[interface.wg0.peer]]
public_key = "k1" # [[interface.wg0.peer]]

[interface.wg0]
addresses = ["10.0.0.1/24",
    # "commented.out/8",
    "fd00::1/64", ]
[interface."wg.1"]
mtu = 1280
[[interface.wg0.peer]]
  name = "é ü"
"""

TRICKY_POSITIONS: list[tuple[KeyPath, tuple[int, int], tuple[int, int] | None]] = [
    # path, key position, value position (None: a table without a written value)
    (("bmx7",), (2, 2), None),
    (("bmx7", "announce"), (3, 1), (3, 12)),
    (("bmx7", "quoted.key"), (4, 1), (4, 16)),
    (("bmx7", "a"), (5, 1), None),
    (("bmx7", "a", "b"), (5, 5), None),
    (("bmx7", "a", "b", "c"), (5, 11), (5, 15)),
    (("bmx7", "ml"), (6, 1), (6, 6)),
    (("bmx7", "ml2"), (11, 1), (11, 7)),
    (("bmx7", "arr"), (15, 1), (15, 7)),
    (("bmx7", "arr", 0), (16, 3), (16, 3)),
    (("bmx7", "arr", 1), (17, 3), (17, 3)),
    (("bmx7", "arr", 1, 1), (17, 7), (17, 7)),
    (("bmx7", "arr", 2, "x"), (18, 5), (18, 9)),
    (("bmx7", "arr", 2, "y", "z"), (18, 14), (18, 18)),
    (("bmx7", "arr", 2, "y", "z", 0), (18, 19), (18, 19)),
    (("interface",), (21, 3), None),
    (("interface", "wg0", "peer"), (21, 17), None),
    (("interface", "wg0", "peer", 0), (21, 17), None),
    (("interface", "wg0", "peer", 0, "public_key"), (22, 1), (22, 14)),
    (("interface", "wg0", "peer", 1), (23, 17), None),
    (("interface", "wg0", "peer", 1, "public_key"), (24, 1), (24, 14)),
    (("interface", "wg0"), (26, 12), None),
    (("interface", "wg0", "addresses"), (27, 1), (27, 13)),
    (("interface", "wg0", "addresses", 0), (27, 14), (27, 14)),
    (("interface", "wg0", "addresses", 1), (29, 5), (29, 5)),
    (("interface", "wg.1"), (30, 12), None),
    (("interface", "wg.1", "mtu"), (31, 1), (31, 7)),
    (("interface", "wg0", "peer", 2), (32, 17), None),
    (("interface", "wg0", "peer", 2, "name"), (33, 3), (33, 10)),
]


@pytest.fixture(scope="module")
def tricky() -> SourceMap:
    return scan(TRICKY)


@pytest.mark.parametrize(("path", "key", "value"), TRICKY_POSITIONS, ids=lambda v: str(v))
def test_tricky_positions(
    tricky: SourceMap, path: KeyPath, key: tuple[int, int], value: tuple[int, int] | None
) -> None:
    assert tricky.keys[path] == key
    assert tricky.values.get(path) == value


def _paths(node: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    found: list[KeyPath] = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, item in node.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _paths(item, (*prefix, index))
    return found


def test_tricky_document_is_valid_and_nothing_is_invented(tricky: SourceMap) -> None:
    document = tomllib.loads(TRICKY)
    assert set(tricky.keys) == set(_paths(document))
    assert document["bmx7"]["ml"].endswith('[not_a_table]\n""')


def test_fallbacks_to_the_nearest_written_ancestor(tricky: SourceMap) -> None:
    # A key with its default value is not written; messages about it point at its table.
    assert tricky.key(("interface", "wg.1", "listen_port")) == (30, 12)
    assert tricky.value(("interface", "wg.1", "listen_port")) == (30, 12)
    assert tricky.value(("interface", "wg0")) == (26, 12)
    assert tricky.key(("nowhere",)) == (1, 1)


@pytest.mark.parametrize(
    ("text", "path", "key", "value"),
    [
        ("a = 1", ("a",), (1, 1), (1, 5)),
        ("a = 1\r\nb = 2\r\n", ("b",), (2, 1), (2, 5)),
        ("  'a' = 1", ("a",), (1, 3), (1, 9)),
        ('"a\\u0062" = 1', ("ab",), (1, 1), (1, 13)),
        ("t = {a.b = 1, c = {d = [1, {e = 2}]}}", ("t", "c", "d", 1, "e"), (1, 29), (1, 33)),
        ("[[a]]\n[[a.b]]\nx=1\n[[a]]\n[[a.b]]\n[[a.b]]\nx=2", ("a", 1, "b", 1, "x"), (7, 1), (7, 3)),
        ("[[a]]\n[a.t]\nx = 1\n[[a]]\n[a.t]\nx = 2", ("a", 1, "t", "x"), (6, 1), (6, 5)),
        ('s = """a\\\\"""\nb = 1', ("b",), (2, 1), (2, 5)),
        ('s = """a\\""""\nb = 1', ("b",), (2, 1), (2, 5)),
        ("a = [[1, 2], [3, [4, 5]]]", ("a", 1, 1, 0), (1, 19), (1, 19)),
        ("a = [\n]\nb = 1", ("b",), (3, 1), (3, 5)),
        ("a = 1979-05-27 07:32:00 # c\nb = 1", ("b",), (2, 1), (2, 5)),
        ("a = -inf\nb = +1_000\nc = 0x1F\nd=true", ("d",), (4, 1), (4, 3)),
    ],
)
def test_small_documents(text: str, path: KeyPath, key: tuple[int, int], value: tuple[int, int]) -> None:
    tomllib.loads(text)  # every case is valid TOML
    source = scan(text)
    assert source.keys[path] == key
    assert source.values[path] == value


@pytest.mark.parametrize("text", ["[a", "a = [1, 2", 'a = "x', "= 1\n", 'a = """x', "[[]]\nb=1", "x = {a"])
def test_invalid_text_does_not_hang(text: str, no_hang: None) -> None:
    scan(text)


# A property: write random documents with known positions, in varied styles, and
# check that the scanner finds every key and value where the writer put it.

_leaf_strings = st.text(
    # (No codec= argument: bookworm's python3-hypothesis, used by the autopkgtest, predates it;
    # excluding surrogates ("Cs") is what keeps the text encodable as UTF-8.)
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"))
    | st.sampled_from("#[]{}=,.'\"\\\n\t"),
    max_size=12,
)
_names = st.from_regex(r"[A-Za-z0-9_-]{1,6}", fullmatch=True) | st.text(
    alphabet=st.sampled_from("a.b #[]=é'\"\\"), min_size=0, max_size=6
)
_leaves = st.integers(-(10**6), 10**6) | st.booleans() | _leaf_strings


class _Writer:
    def __init__(self, data: st.DataObject) -> None:
        self.data = data
        self.text = ""
        self.keys: dict[KeyPath, int] = {}
        self.values: dict[KeyPath, int] = {}

    def draw(self, strategy: st.SearchStrategy[Any]) -> Any:
        return self.data.draw(strategy)

    def write(self, text: str) -> None:
        self.text += text

    def key(self, name: str, path: KeyPath) -> None:
        self.keys[path] = len(self.text)
        bare = name and all(c.isascii() and (c.isalnum() or c in "_-") for c in name)
        if bare:
            self.write(name)
        elif "'" not in name and "\n" not in name and self.draw(st.booleans()):
            self.write(f"'{name}'")
        else:
            self.write(json.dumps(name, ensure_ascii=False))

    def comment(self) -> None:
        if self.draw(st.booleans()):
            self.write(' # x = [1, "2"] [[t]] #')
        self.write("\n")

    def leaf(self, value: Any) -> None:
        if isinstance(value, bool):
            self.write("true" if value else "false")
        elif isinstance(value, int):
            self.write(str(value))
        else:
            style = self.draw(st.sampled_from(["basic", "literal", "ml-basic", "ml-literal"]))
            if style == "literal" and "'" not in value and "\n" not in value and "\t" not in value:
                self.write(f"'{value}'")
            # A line break right after the opening quotes of a multi-line string is dropped.
            elif (
                style == "ml-literal"
                and "'''" not in value
                and not value.endswith("'")
                and not value.startswith("\n")
            ):
                self.write(f"'''{value}'''")
            elif style == "ml-basic":
                self.write('"""' + json.dumps(value, ensure_ascii=False)[1:-1] + '"""')
            else:
                self.write(json.dumps(value, ensure_ascii=False))

    def value(self, value: Any, path: KeyPath) -> None:
        self.values[path] = len(self.text)
        if isinstance(value, list):
            multiline = self.draw(st.booleans())
            self.write("[")
            for index, item in enumerate(value):
                if multiline:
                    self.write("\n  ")
                    if self.draw(st.booleans()):
                        self.write("# ] , [ \n  ")
                self.keys[(*path, index)] = len(self.text)
                self.value(item, (*path, index))
                self.write(",")
            self.write("\n]" if multiline else "]")
        elif isinstance(value, dict):
            self.write("{ ")
            for number, (name, item) in enumerate(value.items()):
                self.write(", " if number else "")
                self.key(name, (*path, name))
                self.write(" = ")
                self.value(item, (*path, name))
            self.write(" }")
        else:
            self.leaf(value)

    def table(self, body: dict[str, Any], path: KeyPath) -> None:
        for name, item in body.items():
            self.key(name, (*path, name))
            self.write(self.draw(st.sampled_from(["=", " = ", "\t=  "])))
            self.value(item, (*path, name))
            self.comment()


_values = st.recursive(
    _leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=2),
    max_leaves=6,
)
_table_names = _names.filter(lambda n: n != "interface")
_bodies = st.dictionaries(_table_names, _values, max_size=3)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_random_documents(data: st.DataObject) -> None:
    writer = _Writer(data)
    top = data.draw(st.dictionaries(_table_names, _values, max_size=3))
    writer.table(top, ())
    tables = data.draw(st.dictionaries(_table_names.filter(lambda n: n not in top), _bodies, max_size=2))
    for name, body in tables.items():
        writer.write("\n[")
        writer.key(name, (name,))
        writer.write("]")
        writer.comment()
        writer.table(body, (name,))
    peers = data.draw(st.lists(_bodies, max_size=3))
    for index, body in enumerate(peers):
        writer.write("[[")
        writer.key("interface", ("interface",))
        writer.write(".wg0.")
        writer.key("peer", ("interface", "wg0", "peer", index))
        writer.write("]]\n")
        writer.table(body, ("interface", "wg0", "peer", index))

    text = writer.text
    document = tomllib.loads(text)
    assert document == {**top, **tables, **({"interface": {"wg0": {"peer": peers}}} if peers else {})}
    source = scan(text)
    scanner = _positions_of(text)
    for path, offset in writer.keys.items():
        if path in (("interface",),):
            continue  # written once per header; the first one counts
        assert source.keys[path] == scanner(offset), (path, text)
    for path, offset in writer.values.items():
        assert source.values[path] == scanner(offset), (path, text)


def _positions_of(text: str) -> Any:
    def position(offset: int) -> tuple[int, int]:
        before = text[:offset]
        return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1

    return position
