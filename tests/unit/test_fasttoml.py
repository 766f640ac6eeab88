"""fasttoml.loads must be tomllib.loads: the same result, types and key order, or the same error.

Each case also says whether the fast path must take it (`_fast` gives a document) or
leave it to tomllib (`_fast` gives None): a fallback that no longer triggers, or a fast
path that quietly stopped being taken, both show here.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import tomllib
from typing import Any

import pytest

from bmx7_wg.config import fasttoml
from tests.conftest import child_env

HEAD = """[interface.wg0]
private_key_file = "/var/lib/bmx7-wg/wg0.key"
listen_port = 51820
addresses = ["fd00:b::/32"]
"""


def peer_chunk(i: int, path: str = "interface.wg0.peer") -> str:
    key = base64.b64encode(i.to_bytes(32, "big")).decode()
    return f"""
[[{path}]]
public_key = "{key}"
endpoint = "10.0.{i // 256 % 256}.{i % 256}:51820"
allowed_ips = ["fd00:b:0:0::{i:x}/128", "10.{i // 256 % 256}.{i % 256}.0/24"]
# a comment
persistent_keepalive = 25
name = "peer{i}"
"""


def common_shape(peers: int) -> str:
    """The configuration the fast path is for: one interface, `peers` peers."""
    return HEAD + "".join(peer_chunk(i) for i in range(peers))


def outcome(loads: Any, text: str) -> tuple[str, str]:
    """("ok", repr of the document) or ("error", message): repr shows types and key order."""
    try:
        return "ok", repr(loads(text))
    except tomllib.TOMLDecodeError as exc:
        return "error", str(exc)


def check(text: str) -> tuple[str, str]:
    expected = outcome(tomllib.loads, text)
    assert outcome(fasttoml.loads, text) == expected
    return expected


PEER = "[[interface.wg0.peer]]\n"
KEY = 'public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="\n'

# (name, text, whether the fast path takes it)
VALID: list[tuple[str, str, bool]] = [
    ("common shape", common_shape(3), True),
    ("one peer, no trailing newline", HEAD + peer_chunk(1).rstrip("\n"), True),
    ("empty peer tables", HEAD + PEER + PEER + "\n" + PEER, True),
    ("root keys before the tables", "top = 1\nflag = true\n" + common_shape(2), True),
    (
        "two interfaces, runs split by another table",
        HEAD
        + peer_chunk(1)
        + "\n[interface.wg1]\nlisten_port = 1\n"
        + peer_chunk(2, "interface.wg1.peer")
        + "\n[bmx7]\nx = 1\n"
        + peer_chunk(3)
        + peer_chunk(4),
        True,
    ),
    (
        "two paths alternating",
        peer_chunk(1, "a.peer") + peer_chunk(2, "b.peer") + peer_chunk(3, "a.peer") + peer_chunk(4, "b.peer"),
        True,
    ),
    (
        "any path of bare keys",
        peer_chunk(1, "servers") + peer_chunk(2, "servers") + peer_chunk(3, "x-1._"),
        True,
    ),
    (
        "spaces in headers, tabs, comments everywhere",
        HEAD + '[[ interface . wg0\t.peer ]]  # first\n\t  name\t=\t"a"\t# c\nport=1#c\n'
        "[[interface.wg0.peer]]#\n  #\n\n[[interface . wg0 . peer]]\n",
        True,
    ),
    (
        "arrays as tomllib allows them",
        PEER + 'a = []\nb = [ ]\nc = ["x",]\nd = [ "x" , "y" , ]\ne = ["",""]\nf=["#", "[", "]", ","]\n',
        True,
    ),
    (
        "integers and booleans",
        PEER + "a = 0\nb = -0\nc = +5\nd = -17\ne = 999999999999999999\nf = true\ng = false\nh = +0\n",
        True,
    ),
    (
        "strings",
        PEER + 'a = ""\nb = "tab\there"\nc = "ünï\u2028\x85 ✓"\nd = "a # b"\ne = "[[x]]"\nf = "\'\'"\n',
        True,
    ),
    ("keys that look like values", PEER + "true = false\n1 = 2\n-_- = 3\nfalse = true\n", True),
    ("comment with any printable text", PEER + "a = 1 # ü \t ' \" [[x]] \u2028\n# \x7e\n", True),
    (
        "multi-line array in another table",
        '[interface.wg0]\naddresses = [\n  "a",  # one\n  ["b"],\n]\n' + peer_chunk(1),
        True,
    ),
    (
        "array of tables of the same path inside an array value",
        "x = [\n[[true]]\n]\n" + peer_chunk(1),
        False,
    ),
    ("no peer chunk at all", HEAD, False),
    ("empty document", "", False),
    ("multi-line basic string", HEAD + 'note = """x"""\n' + peer_chunk(1), False),
    ("multi-line literal string", HEAD + "note = '''x'''\n" + peer_chunk(1), False),
    (
        "multi-line string holding a header line",
        HEAD + 'note = """\n[[interface.wg0.peer]]\nname = "not a peer"\n"""\n' + peer_chunk(1),
        False,
    ),
    ("CRLF line ends", (HEAD + peer_chunk(1)).replace("\n", "\r\n"), False),
    ("escape in a peer string", PEER + 'name = "a\\"b"\n', False),
    ("literal string in a peer", PEER + "name = 'x'\n", False),
    ("dotted key in a peer", PEER + "a.b = 1\n", False),
    ("quoted key in a peer", PEER + '"a" = 1\n', False),
    ("float in a peer", PEER + "a = 1.5\n", False),
    ("hex, underscores in a peer", PEER + "a = 0x10\nb = 1_000\n", False),
    ("19-digit integer", PEER + "a = 1000000000000000000\n", False),
    ("date in a peer", PEER + "a = 1979-05-27\n", False),
    ("inline table in a peer", PEER + "a = {b = 1}\n", False),
    ("array of integers in a peer", PEER + "a = [1, 2]\n", False),
    ("multi-line array in a peer", PEER + 'a = [\n"x",\n]\n', False),
    ("sub-table of a peer", HEAD + peer_chunk(1) + "\n[interface.wg0.peer.extra]\nx = 1\n", False),
    ("array of tables in a peer", HEAD + peer_chunk(1) + "\n[[interface.wg0.peer.x]]\nx = 1\n", False),
    ("nested arrays of tables", "[[a]]\nk = 1\n[[a.b]]\nx = 1\n[[a]]\nk = 2\n[[a.b]]\nx = 2\n", False),
    (
        "an array of tables on a peer path, quoted",
        '[["a"]]\n[[a.b]]\nx = 1\n[["a"]]\n[[a.b]]\nx = 2\n',
        False,
    ),
    ("quoted header of the same path", PEER + KEY + '[["interface".wg0.peer]]\n' + PEER, False),
    ("quoted sub-table of a peer", PEER + KEY + '[interface.wg0.peer."x"]\n', False),
    ("header holding a comment", PEER + "[[a]] # [[b]]\nk = 1\n", True),
    ("lone surrogates, as tomllib passes them", PEER + '# \ud800\nk = "\udfff"\n', True),
]

INVALID: list[tuple[str, str]] = [
    ("duplicate key in a peer", PEER + KEY + KEY),
    ("duplicate key, other value type", PEER + "a = 1\na = true\n"),
    ("duplicate key in another table", HEAD + "listen_port = 2\n" + peer_chunk(1)),
    ("peer table, then array of tables", HEAD + "[interface.wg0.peer]\n" + peer_chunk(1)),
    ("array of tables, then peer table", HEAD + peer_chunk(1) + "[interface.wg0.peer]\n"),
    ("leading zero", PEER + "persistent_keepalive = 025\n"),
    ("leading zero, negative", PEER + "a = -01\n"),
    ("double comma", PEER + 'allowed_ips = ["a",, "b"]\n'),
    ("comma alone", PEER + "allowed_ips = [,]\n"),
    ("no comma", PEER + 'allowed_ips = ["a" "b"]\n'),
    ("leading comma", PEER + 'allowed_ips = [, "a"]\n'),
    ("unclosed array", PEER + 'allowed_ips = ["a"\n'),
    ("control character in a comment", PEER + "a = 1 # \x01\n"),
    ("DEL in a comment line", PEER + "# \x7f\n"),
    ("control character in a string", PEER + 'a = "\x1f"\n'),
    ("static array, then array of tables", "[interface.wg0]\npeer = []\n" + peer_chunk(1)),
    ("inline table, then array of tables", "interface = {wg0 = {}}\n" + peer_chunk(1)),
    ("a string, then array of tables", "[interface]\nwg0 = 1\n" + peer_chunk(1)),
    ("sub-table over a peer key", PEER + "name = 1\n[interface.wg0.peer.name]\n"),
    ("array of tables over a peer array", PEER + 'a = ["x"]\n[[interface.wg0.peer.a]]\n'),
    ("dotted key into the peer path", PEER + KEY + "[interface]\nwg0.peer.x = 1\n"),
    ("the peer path redefined", PEER + KEY + "[interface.wg0]\npeer = 1\n"),
    ("unterminated multi-line string holding a header", 'a = """\n' + PEER + KEY),
    ("header line inside an array", "x = [\n[[true]]\nk = 1\n]\n"),
    ("header line inside an array, then a header", "x = [\n[[true]]\n" + PEER + KEY + "]\n"),
    ("CRLF, then a lone CR", PEER + "a = 1\r\nb = 2\r"),
    ("lone CR", PEER + 'a = "x\ry"\n'),
    ("trailing garbage", PEER + "a = 1 2\n"),
    ("truex", PEER + "a = truex\n"),
    ("unterminated string", PEER + 'a = "x\n'),
    ("no value", PEER + "a =\n"),
    ("no equals", PEER + "a\n"),
    ("garbage after a header", PEER + KEY + "[[interface.wg0.peer]] x\n" + KEY),
    ("unclosed header", "[[interface.wg0.peer]\n"),
    ("empty header", "[[]]\n"),
    ("BOM", "\ufeff" + PEER + KEY),
    ("NUL in another table", HEAD + "\x00\n" + peer_chunk(1)),
    ("NUL in a literal string after the peers", PEER + KEY + "# \ud800 ok\n[x]\ny = 'a\x00'\n"),
]


@pytest.mark.parametrize(("text", "fast"), [(t, f) for _, t, f in VALID], ids=[n for n, _, _ in VALID])
def test_valid(text: str, fast: bool) -> None:
    kind, _ = check(text)
    assert kind == "ok"
    assert (fasttoml._fast(text) is not None) == fast


@pytest.mark.parametrize("text", [t for _, t in INVALID], ids=[n for n, _ in INVALID])
def test_invalid(text: str) -> None:
    kind, _ = check(text)
    assert kind == "error"
    assert fasttoml._fast(text) is None


def test_common_shape_takes_the_fast_path() -> None:
    text = common_shape(10_000)
    document = fasttoml._fast(text)
    assert document is not None
    assert repr(document) == repr(tomllib.loads(text))
    assert len(document["interface"]["wg0"]["peer"]) == 10_000
    # A fallback trigger anywhere sends the whole text to tomllib.
    assert fasttoml._fast(text + PEER + "a = 1.5\n") is None


def test_other_exceptions_are_tomllibs() -> None:
    """tomllib lets int()'s digit limit through as ValueError: so must the skeleton's parse."""
    text = "[x]\na = " + "1" * 5000 + "\n" + PEER + KEY
    with pytest.raises(ValueError) as slow:
        tomllib.loads(text)
    with pytest.raises(ValueError) as fast:
        fasttoml.loads(text)
    assert str(fast.value) == str(slow.value)
    assert fasttoml._fast(text) is None


def test_result_is_fresh() -> None:
    """Each call builds new objects: a caller may change what it got."""
    text = common_shape(2)
    first = fasttoml.loads(text)
    first["interface"]["wg0"]["peer"][0]["allowed_ips"].append("x")
    assert fasttoml.loads(text) == tomllib.loads(text)


def test_many_distinct_array_paths_cost_no_more_than_tomllib() -> None:
    # Every pair of header paths was compared: 100 KB of distinct `[[kN]]` headers took
    # 38 s. Run with a guard (a subprocess timeout), not a timing assert.
    code = (
        "import tomllib\nfrom bmx7_wg.config import fasttoml\n"
        "text = ''.join(f'[[k{i}]]\\nx = 1\\n' for i in range(30000))\n"
        "assert fasttoml.loads(text) == tomllib.loads(text)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120, env=child_env())
