"""Differential fuzzing: fasttoml.loads against tomllib.loads.

Texts are built from a grammar of the fragments that matter to the fast path (headers of a
few overlapping paths, key lines with values it reads and values it must not, comments,
junk, multi-line strings and arrays, inline tables, CRLF), and by editing a valid
configuration of the common shape. On every text both must give the same document (same
types, same key order: compared by repr) or the same TOMLDecodeError message.
"""

from __future__ import annotations

import tomllib

from hypothesis import given
from hypothesis import strategies as st

from bmx7_wg.config import fasttoml
from tests.fuzz.profile import FUZZ, count
from tests.unit.test_fasttoml import HEAD, common_shape, outcome, peer_chunk


def check(text: str, target: str) -> None:
    count(target)
    expected = outcome(tomllib.loads, text)
    assert outcome(fasttoml.loads, text) == expected, text
    if fasttoml._fast(text) is not None:
        count(target + ", fast path taken")
    if expected[0] == "ok":
        count(target + ", valid TOML")


# --------------------------------------------------------------------- the grammar

# Paths that overlap on purpose: a peer path, its parent and its sub-tables, two
# interfaces, a top-level array of tables, and the same path spelt differently.
PATHS = st.sampled_from(
    [
        "interface.wg0.peer",
        "interface.wg0.peer",
        "interface.wg1.peer",
        "interface.wg0",
        "interface",
        "interface.wg0.peer.extra",
        "interface.wg0.peer.name",
        "a",
        "a.b",
        " interface . wg0 .peer ",
        '"interface".wg0.peer',
        "interface.'wg0'.peer",
        "true",
        "1",
    ]
)
BRACKETS = [("[[", "]]"), ("[[", "]]"), ("[[", "]]"), ("[", "]")]
BAD_BRACKETS = [("[ [", "]]"), ("[[", "]"), ("[[", "]] x"), ("[", "]]")]
clean_headers = st.builds(lambda path, b: b[0] + path + b[1], PATHS, st.sampled_from(BRACKETS))
headers = st.builds(lambda path, b: b[0] + path + b[1], PATHS, st.sampled_from(BRACKETS + BAD_BRACKETS))
bare_keys = st.sampled_from(
    ["public_key", "name", "allowed_ips", "a", "peer", "wg0", "extra", "true", "1", "-_"]
)
keys = bare_keys | st.sampled_from(["a.b", '"q"', "a b", "", "a = b"])
# Values the fast path reads (drawn more often), then values it must leave to tomllib,
# valid or not.
simple_values = st.sampled_from(
    [
        '"x"',
        '""',
        '"xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="',
        '"a # b"',
        '"[[a.b]]"',
        '"\t"',
        "[]",
        "[ ]",
        '["a", "b"]',
        '["a",]',
        '[ "a" , "b" , ]',
        "0",
        "-0",
        "+7",
        "25",
        "999999999999999999",
        "true",
        "false",
    ]
)
other_values = st.sampled_from(
    [
        '"a\\"b"',
        '"\\u00e9"',
        '"\x01"',
        '"x',
        "'lit'",
        "[,]",
        '["a",,]',
        '["a" "b"]',
        '["a"',
        "[1, 2]",
        '[\n"a",\n]',
        "[\n[[true]]\n]",
        "025",
        "1_000",
        "0x1f",
        "1000000000000000000",
        "1.5",
        "1e3",
        "inf",
        "truex",
        "1979-05-27",
        "07:32:00",
        "{}",
        "{a = 1}",
        '"""\n[[interface.wg0.peer]]\nname = "x"\n"""',
        "'''x'''",
        "",
    ]
)
values = st.one_of(simple_values, simple_values, simple_values, other_values)
good_comments = st.sampled_from(["", "", "", " # c", "#", "  # [[a]] ü", "\t#\t"])
comments = good_comments | st.sampled_from([" # \x01", " # \x7f", " # \x00"])
spaces = st.sampled_from(["", "", " ", "\t", "  \t"])


def key_lines(
    keys: st.SearchStrategy[str], values: st.SearchStrategy[str], comments: st.SearchStrategy[str]
) -> st.SearchStrategy[str]:
    return st.builds(
        lambda indent, key, eq, value, comment: f"{indent}{key}{eq}{value}{comment}",
        spaces,
        keys,
        st.sampled_from([" = ", " = ", "=", "\t= ", " ="]),
        values,
        comments,
    )


def header_lines(headers: st.SearchStrategy[str], comments: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda indent, header, comment: indent + header + comment, spaces, headers, comments)


junk = st.text(
    st.sampled_from(list("[]{}\"'#=,.\\ \tax1\n\r\x00\x7fü")) | st.characters(), min_size=1, max_size=8
)
# Lines the fast path reads, in chunks it may or may not take: structure decides.
clean_lines = st.one_of(
    key_lines(bare_keys, simple_values, good_comments),
    key_lines(bare_keys, simple_values, good_comments),
    key_lines(bare_keys, simple_values, good_comments),
    header_lines(clean_headers, good_comments),
    good_comments.map(str.lstrip),
)
lines = st.one_of(
    clean_lines,
    clean_lines,
    key_lines(keys, values, comments),
    header_lines(headers, comments),
    comments.map(str.lstrip),
    junk,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    body = draw(st.lists(draw(st.sampled_from([clean_lines, lines])), max_size=30))
    text = "\n".join(body)
    if draw(st.booleans()):
        text += "\n"
    if draw(st.integers(0, 9)) == 0:
        text = text.replace("\n", "\r\n")
    return text


@st.composite
def peer_documents(draw: st.DrawFn) -> str:
    """Mostly-valid texts: peer chunks of well-formed key lines, a stray line now and then."""
    parts = [HEAD]
    for _ in range(draw(st.integers(0, 6))):
        parts.append(
            draw(st.sampled_from(["[[interface.wg0.peer]]", "[[interface.wg1.peer]]", "[interface.wg1]"]))
        )
        good = st.builds(
            lambda k, v, c: f"{k} = {v}{c}",
            st.sampled_from(["public_key", "name", "allowed_ips", "persistent_keepalive", "endpoint"]),
            st.sampled_from(['"x"', '["a", "b"]', "25", "true", '""', "[]"]),
            good_comments,
        )
        parts += draw(st.lists(good | st.just("") | st.just("# c"), max_size=6))
        if draw(st.integers(0, 3)) == 0:
            parts.append(draw(lines))  # anything, at its place
    return "\n".join(parts) + "\n"


@FUZZ
@given(text=documents())
def test_grammar_documents(text: str) -> None:
    check(text, "fasttoml: grammar documents")


@FUZZ
@given(text=peer_documents())
def test_peer_documents(text: str) -> None:
    check(text, "fasttoml: peer documents")


# --------------------------------------------------------------------- mutations

SEEDS = [
    common_shape(3),
    HEAD
    + peer_chunk(1)
    + "\n[interface.wg1]\nlisten_port = 2\n"
    + peer_chunk(2, "interface.wg1.peer")
    + peer_chunk(3),
]
PIECES = st.sampled_from(
    [
        "[",
        "]",
        "[[",
        "]]",
        '"',
        "'",
        "=",
        ",",
        "#",
        ".",
        "\n",
        "\r",
        "\r\n",
        "\x00",
        "\x01",
        "\t",
        " ",
        "{",
        "}",
        "0",
        "_",
        "\\",
        '"""',
        "\n[interface.wg0.peer.x]\n",
        "\n[interface.wg0.peer]\n",
        "\n[[a]]\n",
        "ü",
    ]
) | st.text(max_size=4)


@st.composite
def mutated(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        pos = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "replace", "delete", "dup_line"]))
        if kind == "insert":
            text = text[:pos] + draw(PIECES) + text[pos:]
        elif kind == "replace":
            text = text[:pos] + draw(PIECES | st.characters()) + text[pos + 1 :]
        elif kind == "delete":
            text = text[:pos] + text[pos + draw(st.integers(1, 10)) :]
        else:
            rows = text.split("\n")
            i, j = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, len(rows) - 1))
            rows.insert(j, rows[i])
            text = "\n".join(rows)
    return text


@FUZZ
@given(text=mutated())
def test_mutated_common_shape(text: str) -> None:
    check(text, "fasttoml: mutations of the common shape")


def test_seeds_take_the_fast_path() -> None:
    # Mutations of seeds the fast path refuses would test only the fallback.
    for seed in SEEDS:
        assert fasttoml._fast(seed) is not None
