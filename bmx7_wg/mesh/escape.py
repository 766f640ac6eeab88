"""Text that other mesh nodes chose, made safe to print, log and put in JSON.

A node's host name and anything quoted from its announcement reach a terminal
(`show`, `plan`), the journal and `--json` output. Unescaped, a name could carry ANSI
escape sequences that rewrite the terminal, or newlines that forge log lines. Such text
passes through `escape` where it is read from bmx7 (mesh/bmx7.py) or quoted from a
payload (mesh/announce.py), so that every consumer gets the same safe text.
"""

from __future__ import annotations


def escape(text: str) -> str:
    """`text` with every character that is not printable written as a visible escape
    (`\\n`, `\\x1b`, `\\u202e`); printable text, backslashes included, is unchanged."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escaped(c) for c in text)


def _escaped(char: str) -> str:
    # repr() spells control characters as \n, \t, \x1b, \u202e ...; strip its quotes.
    return repr(char)[1:-1]
