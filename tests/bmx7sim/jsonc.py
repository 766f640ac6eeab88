"""JSON text exactly as bmx7 writes it (json-c's json_object_to_json_string, "spaced").

json-c separates with ", " and ": ", pads braces and brackets with one space
(`{ "a": 1 }`, `[ 1, 2 ]`, empty ones `{ }` / `[ ]`) and escapes "/" as "\\/".
"""

from __future__ import annotations

from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f",
            "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def dumps(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dict):
        if not value:
            return "{ }"
        return "{ " + ", ".join(f"{_string(k)}: {dumps(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[ ]"
        return "[ " + ", ".join(dumps(v) for v in value) + " ]"
    raise TypeError(f"cannot encode {type(value).__name__}")
