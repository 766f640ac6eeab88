"""`tomllib.loads`, fast on configurations made of thousands of `[[...peer]]` tables.

A configuration of 10,000 peers is ~1.5 MB of TOML, and `tomllib` reads it in ~250 ms:
the largest single cost of a no-op `bmx7-wg apply`, whose budget is about that of
`wg syncconf`. Nearly all of that text is the same few kinds of line,

    [[interface.wg0.peer]]
    public_key = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
    allowed_ips = ["fd00:b:0:0::1/128", "10.1.2.0/24"]
    persistent_keepalive = 25  # a comment

which one regular expression can read, line by line, in a single C-level pass.

Why the result is exact. `loads(text)` either returns `tomllib.loads(text)` itself (the
fallback), or builds its result in a way that is only taken when it provably equals it:

* Only "peer chunks" are read here: a header line `[[a.b.c]]` of bare keys (any path of
  bare keys, not only `...peer`) and the lines up to the next line that starts with `[`,
  each of them blank, a comment, or `bare_key = value` with a value of the simplest
  forms (a basic string without escapes, a one-line array of those, a decimal integer of
  at most 18 digits, `true`, `false`), matched by a pattern that follows tomllib's own
  character rules (whitespace, comment and string characters, array commas).
  A peer chunk with any other line, or a key given twice, sends the whole text to the
  fallback. Such a chunk can only add keys to the fresh table its header appended.
* Everything else (the "skeleton") goes to tomllib unchanged and in order, with each run
  of consecutive peer chunks of one path replaced by its first header line alone. So
  tomllib itself decides everything structural: a path that is also a table, a static
  array or an inline table, a header in the middle of a multi-line array, and so on.
  Each such "placeholder" header appends one empty table, which is then replaced by the
  tables of its run. The skeleton is accepted only if every intermediate of a peer path
  is a table (not an array of tables, which would make one path name several arrays),
  and the array there holds exactly one element per placeholder, each still empty: so
  nothing else in the document wrote into those tables (e.g. a later `[a.b.c.sub]`).
* Merging a run into one header is sound: once `[[a.b.c]]` was accepted, the same
  header right after a peer chunk is too (such a chunk sets no flag on the path itself).
  A line that only looks like a header because it sits inside a multi-line array makes
  both texts fail: what follows it (a key line, a `[` line, or the end) cannot continue
  the array without a comma, in the original as in the skeleton.
* Refused as well, before asking tomllib: a peer path, or a header of bare keys in the
  skeleton, below a peer path (`[[a.b.c.d]]`, `[a.b.c.sub]`): it belongs to the last
  table of the array. (The emptiness check above would catch it too.)
* If the skeleton is refused, the fallback runs on the original text: errors, and
  their messages with line and column, are always tomllib's own.

Sent to the fallback at once: text with a multi-line string delimiter (`\"\"\"`, `'''`:
their content could look like headers) or a carriage return (tomllib rewrites CRLF, and a
lone CR is an error), and text with no peer chunk at all.
"""

from __future__ import annotations

import re
import tomllib
from typing import Any

_KEY = r"[A-Za-z0-9_-]+"
_PATH = rf"{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*"
# tomllib refuses ASCII control characters but tab in comments and basic strings.
_CTRL = r"\x00-\x08\x0a-\x1f\x7f"
_STRING = rf'"[^"\\{_CTRL}]*"'
_COMMENT = rf"(?:#[^{_CTRL}]*)?"

# One match per line, always: a line that is not one of the simple forms is caught whole
# by the last alternative. Groups: 1 path of an array-of-tables header of bare keys,
# 2 key, then its value: 3 string contents, 4 array of strings, 5 integer, 6 boolean;
# 7 any other line. A blank or comment line leaves every group empty.
_LINE = re.compile(
    r"^(?:[ \t]*"
    r"(?:"
    rf"\[\[[ \t]*({_PATH})[ \t]*\]\]"
    rf"|({_KEY})[ \t]*=[ \t]*"
    r"(?:"
    rf'"([^"\\{_CTRL}]*)"'
    # tomllib's array rules: no leading comma, one optional trailing comma.
    rf"|(\[[ \t]*(?:{_STRING}[ \t]*(?:,[ \t]*{_STRING}[ \t]*)*(?:,[ \t]*)?)?\])"
    # Decimal only as tomllib reads it (no leading zero, no `_`); the digit limit keeps
    # clear of int()'s limit on digits. A following `.`, `e`, `-`, `:` fails the `$`.
    r"|([+-]?(?:0|[1-9][0-9]{0,17}))"
    r"|(true|false)"
    r")"
    r")?"
    rf"[ \t]*{_COMMENT}$\n?"
    r"|([^\n]+)\n?"
    r")",
    re.M,
)
# A table or array-of-tables header of bare keys, to refuse sub-tables of peer tables.
_HEADER = re.compile(rf"[ \t]*\[\[?[ \t]*({_PATH})[ \t]*\]")

Path = tuple[str, ...]


def _path(text: str) -> Path:
    return tuple(part.strip(" \t") for part in text.split("."))


def loads(text: str) -> dict[str, Any]:
    """Exactly `tomllib.loads(text)`: the same result, or the same TOMLDecodeError."""
    result = _fast(text)
    if result is None:
        return tomllib.loads(text)
    return result


def _fast(text: str) -> dict[str, Any] | None:
    """The document read with the fast path, or None: then ask tomllib."""
    if '"""' in text or "'''" in text or "\r" in text:
        return None
    rows = _LINE.findall(text)
    lines = text.split("\n")
    if len(rows) != len(lines):  # every line matched once, in order (cannot fail; cheap)
        return None

    skeleton: list[str] = []
    skeleton_headers: list[Path] = []
    # Per placeholder, in order: its path and the tables of its run.
    runs: list[tuple[Path, list[dict[str, Any]]]] = []
    run: list[dict[str, Any]] = []
    run_header = ""
    run_path: Path = ()
    table: dict[str, Any] | None = None  # the peer table being read, None in the skeleton

    for index, (header, key, string, array, integer, boolean, other) in enumerate(rows):
        if key:
            if table is None:
                skeleton.append(lines[index])
            elif key in table:
                return None  # tomllib reports it, at its place
            elif integer:
                table[key] = int(integer)
            elif array:
                # Its strings hold no quote (the pattern said so): the odd pieces are them.
                table[key] = array.split('"')[1::2]
            elif boolean:
                table[key] = boolean == "true"
            else:
                table[key] = string
        elif header:
            # A run: consecutive peer chunks of one path, with no other chunk between.
            if table is not None and (header == run_header or _path(header) == run_path):
                table = {}
                run.append(table)
                continue
            table = {}
            run_header, run_path, run = header, _path(header), [table]
            runs.append((run_path, run))
            skeleton.append(lines[index])  # the placeholder: the run's first header line
        elif other:
            if other.lstrip(" \t").startswith("["):
                table = None
                match = _HEADER.match(other)
                if match is not None:
                    skeleton_headers.append(_path(match.group(1)))
            elif table is not None:
                return None  # a line of a peer table that is not one of the simple forms
            skeleton.append(lines[index])
        elif table is None:
            skeleton.append(lines[index])  # blank or comment

    if not runs:
        return None  # nothing to gain
    paths = {path for path, _ in runs}
    # Every table above a header (each header's proper prefixes): a set, not a comparison
    # of every pair of headers, which took 38 s for 100 KB of distinct `[[kN]]` headers.
    above = {other[:length] for other in (*paths, *skeleton_headers) for length in range(1, len(other))}
    if not paths.isdisjoint(above):
        return None  # a sub-table of a peer table: belongs to its last element
    try:
        document = tomllib.loads("\n".join(skeleton))
    except Exception:
        # The error, and its position, must be tomllib's on the real text. Not only
        # TOMLDecodeError: whatever else tomllib raises (int()'s digit limit on a long
        # number, RecursionError on deep nesting), it raises there from the same line.
        return None

    arrays: dict[Path, list[Any]] = {}
    for path in paths:
        node: Any = document
        for part in path[:-1]:
            node = node.get(part)
            if not isinstance(node, dict):
                return None  # not there, or an array of tables on the way
        array = node.get(path[-1])
        if not isinstance(array, list):
            return None
        arrays[path] = array
    tables: dict[Path, list[dict[str, Any]]] = {path: [] for path in paths}
    for path, run_tables in runs:
        tables[path].extend(run_tables)
    placeholders: dict[Path, int] = dict.fromkeys(paths, 0)
    for path, _ in runs:
        placeholders[path] += 1
    for path, array in arrays.items():
        if len(array) != placeholders[path] or any(type(item) is not dict or item for item in array):
            return None  # something else appended to the array or wrote into its tables
    for path, array in arrays.items():
        array[:] = tables[path]
    return document
