"""Where each key and value of a TOML document is written: (line, column) by key path.

`tomllib` parses a document but forgets positions, and configuration errors must say
`file:line:col`. This module re-reads text that `tomllib` has already accepted, so it
can be a small lenient scanner rather than a second parser: it only has to find where
keys and values start, never to decide whether the document is valid. On text that is
not valid TOML it still terminates, with positions that may be incomplete.

Key paths are tuples as the parsed document nests them: table and key names are
strings, array indexes are ints. `[[interface.wg0.peer]]` tables are counted per array,
so the second peer's key is ("interface", "wg0", "peer", 1, "public_key").
Lines and columns count from 1, columns in characters, as `tomllib` reports them.
"""

from __future__ import annotations

import bisect
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

KeyPath = tuple[str | int, ...]
Position = tuple[int, int]

_BLANK = re.compile(r"[ \t]*")
# Inside arrays and inline tables: blanks, line breaks and comments, in any number.
_FILLER = re.compile(r"(?:[ \t\r\n]+|#[^\n]*)*")
_COMMENT_OR_BLANK = re.compile(r"[ \t]*(?:#[^\n]*)?")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# The usual line, `name = value`, read in one step: large peer lists are made of them.
_SIMPLE_KEY = re.compile(r"([A-Za-z0-9_-]+)[ \t]*=[ \t]*")
_BASIC_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_LITERAL_STRING = re.compile(r"'[^'\n]*'")
# Numbers, booleans and date-times run up to the next delimiter; only their start matters.
_SCALAR = re.compile(r"[^,\]}#\r\n]*")


@dataclass(frozen=True)
class SourceMap:
    """Positions of keys and values in one document."""

    keys: dict[KeyPath, Position]
    values: dict[KeyPath, Position]

    def key(self, path: KeyPath) -> Position:
        """Where the key of `path` is written, or, for a path not written (a default), of its
        nearest written ancestor; (1, 1) if none is."""
        while path:
            found = self.keys.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return (1, 1)

    def value(self, path: KeyPath) -> Position:
        """Where the value of `path` starts; where its key is if it has no written value
        (a table made by a `[header]`)."""
        found = self.values.get(path)
        return found if found is not None else self.key(path)


class Positions(Mapping[KeyPath, Position]):
    """Where each key is written (`SourceMap.keys`), scanned on first use.

    Positions are only needed to report an error, and scanning a large document costs as
    much as parsing it: a valid configuration of 10,000 peers is never scanned at all.
    """

    def __init__(self, text: str) -> None:
        self._text: str | None = text
        self._source: SourceMap | None = None

    @property
    def source(self) -> SourceMap:
        if self._source is None:
            assert self._text is not None
            self._source = scan(self._text)
            self._text = None  # the scan is all that is needed from now on
        return self._source

    def __getitem__(self, path: KeyPath) -> Position:
        return self.source.keys[path]

    def __iter__(self) -> Iterator[KeyPath]:
        return iter(self.source.keys)

    def __len__(self) -> int:
        return len(self.source.keys)


def scan(text: str) -> SourceMap:
    """Map every key path of a valid TOML document to where its key and its value start.

    Array elements are keys too: ("interface", "wg0", "addresses", 1) is where the second
    address is written, in single- and multi-line arrays alike.
    """
    scanner = _Scanner(text)
    scanner.document()
    return SourceMap(keys=scanner.keys, values=scanner.values)


def _unquote_basic(token: str) -> str:
    # Basic strings have escapes (\n, \u00e9, ...); tomllib decodes them exactly as it did
    # when it parsed the document, and quoted keys are rare enough for this to cost nothing.
    value = tomllib.loads(f"k = {token}")["k"]
    return value if isinstance(value, str) else token


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.end = len(text)
        self.i = 0
        self.keys: dict[KeyPath, Position] = {}
        self.values: dict[KeyPath, Position] = {}
        # How many [[tables]] each array of tables has so far, by resolved path.
        self._array_lengths: dict[KeyPath, int] = {}
        self._line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self._line_starts, offset)
        return line, offset - self._line_starts[line - 1] + 1

    def _skip(self, pattern: re.Pattern[str]) -> None:
        match = pattern.match(self.text, self.i)
        if match:
            self.i = match.end()

    def _skip_line(self) -> None:
        newline = self.text.find("\n", self.i)
        self.i = self.end if newline < 0 else newline + 1

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self._skip(_FILLER)
            if self.i >= self.end:
                return
            if self.text.startswith("[[", self.i):
                self.i += 2
                table = self._array_table_header()
            elif self.text[self.i] == "[":
                self.i += 1
                table = self._table_header()
            elif not self._key_value(table):
                self._skip_line()
                continue
            self._skip(_COMMENT_OR_BLANK)
            if self.i < self.end and self.text[self.i] not in "\r\n":
                # Not valid TOML; keep going at the next line rather than guess.
                self._skip_line()

    # Keys ------------------------------------------------------------------------------

    def _key_part(self) -> tuple[str, int] | None:
        start = self.i
        if start >= self.end:
            return None
        first = self.text[start]
        if first == '"':
            match = _BASIC_STRING.match(self.text, start)
            name = _unquote_basic(match.group()) if match else None
        elif first == "'":
            match = _LITERAL_STRING.match(self.text, start)
            name = match.group()[1:-1] if match else None
        else:
            match = _BARE_KEY.match(self.text, start)
            name = match.group() if match else None
        if match is None or name is None:
            return None
        self.i = match.end()
        return name, start

    def _dotted_key(self) -> list[tuple[str, int]]:
        parts: list[tuple[str, int]] = []
        while True:
            self._skip(_BLANK)
            part = self._key_part()
            if part is None:
                return parts
            parts.append(part)
            self._skip(_BLANK)
            if not self.text.startswith(".", self.i):
                return parts
            self.i += 1

    def _resolve(self, parts: list[tuple[str, int]]) -> KeyPath:
        """The concrete path a header names: each array of tables on the way stands for
        its last table so far, as TOML defines it."""
        path: KeyPath = ()
        for name, offset in parts:
            path += (name,)
            self.keys.setdefault(path, self.position(offset))
            length = self._array_lengths.get(path)
            if length:
                path += (length - 1,)
        return path

    def _table_header(self) -> KeyPath:
        parts = self._dotted_key()
        path = self._resolve(parts)
        if parts and path[-1] == parts[-1][0]:
            # The header defines this table; an earlier [a.b.c] only implied [a.b].
            self.keys[path] = self.position(parts[-1][1])
        self._skip(_BLANK)
        if self.text.startswith("]", self.i):
            self.i += 1
        return path

    def _array_table_header(self) -> KeyPath:
        parts = self._dotted_key()
        if not parts:
            return ()
        name, offset = parts[-1]
        array = (*self._resolve(parts[:-1]), name)
        index = self._array_lengths.get(array, 0)
        self._array_lengths[array] = index + 1
        where = self.position(offset)
        self.keys.setdefault(array, where)
        self.keys[(*array, index)] = where
        self._skip(_BLANK)
        if self.text.startswith("]]", self.i):
            self.i += 2
        return (*array, index)

    def _key_value(self, table: KeyPath) -> bool:
        """Read `a.b = value` into `table`; False if there is no key here."""
        simple = _SIMPLE_KEY.match(self.text, self.i)
        if simple:
            path = (*table, simple[1])
            self.keys[path] = self.position(self.i)
            self.i = simple.end()
            self._value(path)
            return True
        parts = self._dotted_key()
        if not parts:
            return False
        path = table
        for name, offset in parts[:-1]:
            path += (name,)
            self.keys.setdefault(path, self.position(offset))
        name, offset = parts[-1]
        path += (name,)
        self.keys[path] = self.position(offset)
        self._skip(_BLANK)
        if self.text.startswith("=", self.i):
            self.i += 1
        self._skip(_BLANK)
        self._value(path)
        return True

    # Values ----------------------------------------------------------------------------

    def _value(self, path: KeyPath) -> None:
        if self.i >= self.end:
            return
        self.values[path] = self.position(self.i)
        text, i = self.text, self.i
        if text.startswith('"""', i):
            self._multiline_basic()
        elif text.startswith("'''", i):
            self._multiline_literal()
        elif text[i] in "\"'":
            match = (_BASIC_STRING if text[i] == '"' else _LITERAL_STRING).match(text, i)
            self.i = match.end() if match else i + 1
        elif text[i] == "[":
            self._array(path)
        elif text[i] == "{":
            self._inline_table(path)
        else:
            self._skip(_SCALAR)

    def _array(self, path: KeyPath) -> None:
        self.i += 1
        index = 0
        while True:
            self._skip(_FILLER)
            if self.i >= self.end:
                return
            char = self.text[self.i]
            if char == "]":
                self.i += 1
                return
            if char == ",":
                self.i += 1
                continue
            start = self.i
            element = (*path, index)
            self.keys[element] = self.position(start)
            self._value(element)
            index += 1
            if self.i == start:
                self.i += 1  # not valid TOML: make progress anyway

    def _inline_table(self, path: KeyPath) -> None:
        self.i += 1
        while True:
            # Line breaks are not allowed in TOML 1.0 inline tables, but cost nothing to accept.
            self._skip(_FILLER)
            if self.i >= self.end:
                return
            char = self.text[self.i]
            if char == "}":
                self.i += 1
                return
            if char == ",":
                self.i += 1
                continue
            start = self.i
            if not self._key_value(path) or self.i == start:
                self.i = start + 1

    def _closing_quotes(self, at: int, quote: str) -> None:
        # A multi-line string may end with up to two quotes of content before its
        # delimiter: '''a''''' is "a''".
        end = at + 3
        extra = 0
        while extra < 2 and self.text.startswith(quote, end):
            end += 1
            extra += 1
        self.i = end

    def _multiline_basic(self) -> None:
        search = self.i + 3
        while True:
            at = self.text.find('"""', search)
            if at < 0:
                self.i = self.end
                return
            backslashes = 0
            while self.text[at - 1 - backslashes] == "\\":
                backslashes += 1
            if backslashes % 2 == 0:
                self._closing_quotes(at, '"')
                return
            search = at + 1  # an escaped quote, \", is content

    def _multiline_literal(self) -> None:
        at = self.text.find("'''", self.i + 3)
        if at < 0:
            self.i = self.end
            return
        self._closing_quotes(at, "'")


# One token the nesting scan cares about: a string (skipped whole), a comment, or a bracket.
_NESTING_TOKEN = re.compile(
    r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]', re.S
)


def too_deep(text: str, limit: int) -> Position | None:
    """Where arrays and inline tables first nest more than `limit` deep, or None.

    Iterative, unlike the parsers: it locates the error of a document that `tomllib`
    (which recurses once per level) could not read. Table headers (`[a]`, `[[a]]`) count
    as one or two levels that close on their line, which no real limit comes near.
    """
    depth = 0
    for match in _NESTING_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > limit:
                offset = match.start()
                line = text.count("\n", 0, offset) + 1
                return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
        elif token in "]}":
            depth = max(0, depth - 1)
    return None


# Multi-line strings, then one-line strings and comments, in the order TOML reads them
# (a quote in a comment or a `#` in a string is what it is).
_MULTILINE_STRING = re.compile(r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'', re.S)
_STRING_OR_COMMENT = re.compile(r'(?=["\'#])(?:"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+"|\'[^\'\n]*+\'|#[^\n]*+)')
_STRUCTURE = re.compile(r"[.\[{]")


def keys_and_structure(text: str) -> str:
    """`text` with every string and comment written `s`: what is left are keys, brackets,
    braces and other values, on the lines where they are written. (A quoted key part stays
    a key part; a multi-line string keeps its line breaks.)"""
    if '"""' in text or "'''" in text:
        text = _MULTILINE_STRING.sub(lambda m: "s" + "\n" * m.group().count("\n"), text)
    return _STRING_OR_COMMENT.sub("s", text)


def _column(text: str, stripped: str, line: int, stripped_col: int) -> int:
    """The column in `text` of what is at `stripped_col` of `line` in `stripped` (where
    each string and comment before it is one character); the line's start if that line
    is not the same line of `text` stripped (it is part of a multi-line string)."""
    original = text.split("\n", line)[line - 1]
    if keys_and_structure(original) != stripped.split("\n", line)[line - 1]:
        return 1
    shift = 0
    for match in _STRING_OR_COMMENT.finditer(original):
        if match.start() - shift >= stripped_col - 1:
            break
        shift += len(match.group()) - 1
    return stripped_col + shift


def long_key(text: str, limit: int) -> tuple[Position, str] | None:
    """Where a dotted key or table header of more than `limit` parts is first written, and
    how its line goes on from there (for the message); None if there is none.

    Read before any parser: `tomllib` takes time and memory in the square of a key's
    parts (a 50,000-part key in 100 KB of text: 46 s and 7 GB). A key lies on one line,
    so only lines with `limit` dots are looked at closely, without their strings and
    comments."""
    lines = text.split("\n")
    # Counting per line is done in C: ~0.5 ms for 1,000 peers.
    candidates = [number for number, line in enumerate(lines, 1) if line.count(".") >= limit]
    if not candidates:
        return None
    if '"""' in text or "'''" in text:
        stripped_lines = keys_and_structure(text).split("\n")
    else:
        # Strings and comments end on their line: only the candidate lines are read.
        stripped_lines = list(lines)
        for number in candidates:
            stripped_lines[number - 1] = keys_and_structure(lines[number - 1])
    part = r"[A-Za-z0-9_-]++"
    key = re.compile(rf"{part}(?:[ \t]*+\.[ \t]*+{part}){{{limit}}}")
    for number in candidates:
        found = key.search(stripped_lines[number - 1])
        if found is not None:
            col = _column(text, "\n".join(stripped_lines), number, found.start() + 1)
            return (number, col), text.split("\n", number)[number - 1][col - 1 : col + 39]
    return None


def structure_count(text: str, limit: int) -> tuple[int, Position | None]:
    """How many dots, opening brackets and opening braces are outside strings and
    comments (dotted-key parts, table headers, arrays and inline tables: what makes
    tables), and, if more than `limit`, where the one past it is written.

    Counting the whole text first costs nothing; strings are set aside only when that
    count is over `limit` (addresses in strings have dots too)."""
    rough = text.count(".") + text.count("[") + text.count("{")
    if rough <= limit:
        return rough, None
    stripped = keys_and_structure(text)
    count = 0
    for count, match in enumerate(_STRUCTURE.finditer(stripped), 1):
        if count > limit:
            line, col = _offset_position(stripped, match.start())
            return count, (line, _column(text, stripped, line, col))
    return count, None


def _offset_position(text: str, offset: int) -> Position:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1
