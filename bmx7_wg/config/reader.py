"""Read the configuration file into a validated `Config`, or list every problem in it.

Each section is one table of settings (key, parser, default). A parser checks a raw
TOML value and returns it in canonical form, or raises `_Invalid` with the reason; the
reader turns that into a `Diagnostic` located at the value and goes on, so that one run
of `bmx7-wg check` shows every problem. Checks that span several keys (ports, peers'
allowed-ips, key files) run after a section is read. Reading touches nothing: it only
reads the file and looks at key files.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import stat
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from bmx7_wg.base.dnsname import domain_problem
from bmx7_wg.base.iptext import canonical_address, canonical_network, ipv6_zone
from bmx7_wg.base.nodeid import NODE_ID_RE
from bmx7_wg.base.smsname import sms_name_problem
from bmx7_wg.config.model import (
    DEFAULT_GRACE,
    DEFAULT_HOSTS_FILE,
    DEFAULT_MESH_PORT,
    DEFAULT_METRICS_TEXTFILE,
    DEFAULT_NAMES_DOMAIN,
    DEFAULT_STATE_DIR,
    Bmx7Config,
    Config,
    Endpoint,
    InterfaceConfig,
    MetricsConfig,
    NamesConfig,
    PeerConfig,
)
from bmx7_wg.config.positions import KeyPath, Positions, SourceMap, long_key, structure_count, too_deep
from bmx7_wg.errors import ConfigError, Diagnostic, KeyFileError
from bmx7_wg.keys import PrivateKey, decode_key, file_type, key_file_problem, read_key_file

__all__ = [
    "BMX7_SETTINGS",
    "INTERFACE_SETTINGS",
    "NAMES_SETTINGS",
    "PEER_SETTINGS",
    "TOP_SETTINGS",
    "Setting",
    "format_key_path",
    "load",
    "parse",
]

MIN_MTU = 576  # the smallest IPv4 datagram every host must accept
MIN_MTU_IPV6 = 1280  # IPv6's minimum link MTU
_MAX_SHOWN = 60  # characters of a wrong value quoted back in a message
# Nesting that is reported, when it is too deep for the parsers (tomllib gives up at a few
# hundred levels, depending on the stack); the configuration itself needs two.
MAX_NESTING = 100
# A configuration of 10,000 peers is about 1.5 MB; a larger file is refused unread. The
# bound is also one on the time the parsers and the position scan may take (the service
# reads the file between two watchdog pings): a 4 MiB file of the worst shape the bounds
# below allow is read in a few seconds.
MAX_CONFIG_SIZE = 4 * 2**20
# Problems listed at most; the rest are counted (each costs a position, a suggestion).
MAX_DIAGNOSTICS = 100
# Bounds checked before the parsers see the text: tomllib's time and memory grow with the
# square of a dotted key's parts (50,000 parts in 100 KB: 46 s, 7 GB) and with the tables
# a document makes (each table header, inline table and dotted-key part). The deepest key
# of the configuration has three parts (`interface.NAME.peer`); 10,000 peers written as
# the example file writes them come to ~110,000 dots, brackets and braces, strings aside.
MAX_KEY_PARTS = 16
MAX_STRUCTURE = 250_000


class _Invalid(Exception):
    """A value is wrong. The message says why; the reader prefixes the key path."""


# A parser checks one raw TOML value found at a key path and returns its canonical form.
# It raises _Invalid for a problem with the value as a whole and reports problems of
# single elements itself (so that every wrong element of a list is shown).
Parser = Callable[[object, KeyPath, "_Reader"], Any]


@dataclass(frozen=True)
class Setting:
    """One key of a section: its name, how to read it, and its value when absent."""

    name: str
    parse: Parser
    default: object


_REQUIRED = object()  # the default of a setting that must be given
_INVALID = object()  # what the reader returns for a value it reported as wrong


# ---------------------------------------------------------------------------------------
# Entry points


def load(path: str, *, state_dir: str = DEFAULT_STATE_DIR) -> Config:
    """Read and validate the configuration file at `path`; raise ConfigError if it is wrong."""
    try:
        data = _read_config_file(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigError([Diagnostic(path, 1, 1, f"cannot read the file: {reason}")]) from None
    except _Invalid as exc:
        raise ConfigError([Diagnostic(path, 1, 1, f"cannot read the file: {exc}")]) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        col = len(data[line_start : exc.start].decode("utf-8", "replace")) + 1
        raise ConfigError([Diagnostic(path, line, col, "not valid UTF-8")]) from None
    return parse(text, path, state_dir=state_dir)


def _read_config_file(path: str) -> bytes:
    """The bytes of a regular file of at most MAX_CONFIG_SIZE; _Invalid if it is not one.

    Opened without blocking and checked on the open descriptor: `-c` given a FIFO would
    wait for a writer forever, and a device (/dev/zero) or a huge file would be read
    into memory whole. A symlink is followed: /etc/bmx7-wg.toml may well be one.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _Invalid(f"it is {file_type(st.st_mode)}, not a regular file")
        if st.st_size > MAX_CONFIG_SIZE:
            raise _Invalid(f"it is larger than {MAX_CONFIG_SIZE // 2**20} MiB ({st.st_size} bytes)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(MAX_CONFIG_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_CONFIG_SIZE:
        raise _Invalid(f"it is larger than {MAX_CONFIG_SIZE // 2**20} MiB")
    return data


def parse(text: str, path: str, *, state_dir: str = DEFAULT_STATE_DIR) -> Config:
    """Validate configuration `text` read from `path` (used in messages only).

    Returns the `Config`, or raises ConfigError listing every problem, sorted by position.
    """
    too_large = _too_large(text, path)
    if too_large is not None:
        raise ConfigError([too_large])
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([_syntax_error(str(exc), text, path)]) from None
    except ValueError:
        # tomllib lets int()'s limit on digits (4,300) escape as a plain ValueError.
        raise ConfigError([_too_many_digits(text, path)]) from None
    except RecursionError:
        # tomllib recurses once per level of nested arrays and inline tables.
        raise ConfigError([_too_deep(text, path)]) from None
    try:
        return _validate(document, text, path, state_dir)
    except RecursionError:
        # What tomllib just managed, the position scanner (also recursive) may not.
        raise ConfigError([_too_deep(text, path)]) from None


def _validate(document: dict[str, Any], text: str, path: str, state_dir: str) -> Config:
    reader = _Reader(path, Positions(text), state_dir)
    reader.has_bmx7 = isinstance(document.get("bmx7"), dict)
    values = reader.table(document, (), TOP_SETTINGS)
    # A section of the wrong type (`interface = ""`) was reported already; the checks
    # across interfaces then run on nothing.
    bmx7 = values.get("bmx7")
    if bmx7 is _INVALID:
        bmx7 = None
    interfaces = values.get("interface", ())
    if interfaces is _INVALID:
        interfaces = ()
    names = values.get("names")
    if names is None or names is _INVALID:
        names = NamesConfig(hosts_file=default_hosts_file())
    metrics = values.get("metrics")
    if not isinstance(metrics, MetricsConfig):
        metrics = MetricsConfig()
    _check_listen_ports(interfaces, reader)
    _check_one_mesh_interface(interfaces, reader)
    if reader.diagnostics:
        shown = sorted(reader.diagnostics, key=lambda d: (d.line, d.col))
        if reader.unlisted:
            last = shown[-1]
            shown.append(Diagnostic(path, last.line, last.col, f"... and {reader.unlisted:,} more problems"))
        raise ConfigError(shown)
    return Config(
        path=path, interfaces=interfaces, bmx7=bmx7, names=names, metrics=metrics, positions=reader.positions
    )


def default_hosts_file() -> str:
    """The hosts file the names go to when the file does not say: /etc/hosts, or
    `BMX7_WG_HOSTS_FILE` (tests and labs: "" keeps the machine's /etc/hosts untouched)."""
    return os.environ.get("BMX7_WG_HOSTS_FILE", DEFAULT_HOSTS_FILE)


_TOML_ERROR = re.compile(
    r"(?P<message>.*) \(at (?:line (?P<line>\d+), column (?P<col>\d+)|end of document)\)", re.S
)
_TUPLE_REPR = re.compile(r"\((?:'[^'\\]*'|\"[^\"\\]*\")(?:, (?:'[^'\\]*'|\"[^\"\\]*\"))*,?\)")


def _too_many_digits(text: str, path: str) -> Diagnostic:
    match = re.search(r"[0-9_]{4000,}", text)
    start = match.start() if match else 0
    line = text.count("\n", 0, start) + 1
    col = start - (text.rfind("\n", 0, start) + 1) + 1
    return Diagnostic(path, line, col, "invalid TOML: a number with more digits than Python reads (4,300)")


def _too_large(text: str, path: str) -> Diagnostic | None:
    """A key of too many parts, or too many tables, located; None if the text is within
    the bounds (MAX_KEY_PARTS, MAX_STRUCTURE)."""
    found = long_key(text, MAX_KEY_PARTS)
    if found is not None:
        (line, col), start = found
        shown = start if len(start) < 40 else start[:37] + "..."
        return Diagnostic(
            path, line, col, f"key {shown!r} has more than {MAX_KEY_PARTS} dotted parts"
        )
    count, where = structure_count(text, MAX_STRUCTURE)
    if where is not None:
        line, col = where
        return Diagnostic(
            path,
            line,
            col,
            f"more than {MAX_STRUCTURE:,} table headers, arrays, inline tables and dotted-key "
            f"parts ({count:,} so far); the file is not read further",
        )
    return None


def _too_deep(text: str, path: str) -> Diagnostic:
    line, col = too_deep(text, MAX_NESTING) or (1, 1)
    return Diagnostic(
        path, line, col, f"invalid TOML: arrays or inline tables nested more than {MAX_NESTING} deep"
    )


def _syntax_error(message: str, text: str, path: str) -> Diagnostic:
    match = _TOML_ERROR.fullmatch(message)
    if match is None:
        return Diagnostic(path, 1, 1, f"invalid TOML: {message}")
    if match["line"]:
        line, col = int(match["line"]), int(match["col"])
    else:
        lines = text.split("\n")
        line, col = len(lines), len(lines[-1]) + 1
    import ast  # only for messages, like difflib below: neither is loaded on the way to a valid file

    # tomllib names keys as Python tuples, "Cannot declare ('interface', 'wg0') twice";
    # users wrote interface.wg0.
    detail = _TUPLE_REPR.sub(lambda m: f'"{format_key_path(ast.literal_eval(m.group()))}"', match["message"])
    return Diagnostic(path, line, col, f"invalid TOML: {detail}")


# ---------------------------------------------------------------------------------------
# The reader: walks a table by its settings and collects diagnostics.


class _Reader:
    def __init__(self, path: str, positions: Positions, state_dir: str) -> None:
        self.path = path
        self.positions = positions
        self.state_dir = state_dir
        self.has_bmx7 = False
        self.diagnostics: list[Diagnostic] = []
        self.unlisted = 0  # problems past MAX_DIAGNOSTICS
        # Where each canonical list element was written: (list path, value) -> element path.
        self._origins: dict[tuple[KeyPath, object], KeyPath] = {}

    @property
    def source(self) -> SourceMap:
        return self.positions.source

    @property
    def full(self) -> bool:
        return len(self.diagnostics) >= MAX_DIAGNOSTICS

    def at_value(self, path: KeyPath, message: str) -> None:
        if self.full:
            self.unlisted += 1
            return
        self._add(self.source.value(path), path, message)

    def at_key(self, path: KeyPath, message: str) -> None:
        if self.full:
            self.unlisted += 1
            return
        self._add(self.source.key(path), path, message)

    def _add(self, where: tuple[int, int], path: KeyPath, message: str) -> None:
        text = f"{format_key_path(path)}: {message}" if path else message
        self.diagnostics.append(Diagnostic(self.path, where[0], where[1], text))

    def line(self, path: KeyPath) -> int:
        return self.source.value(path)[0]

    def note_origin(self, list_path: KeyPath, value: object, element: KeyPath) -> None:
        self._origins.setdefault((list_path, value), element)

    def origin(self, list_path: KeyPath, value: object) -> KeyPath:
        return self._origins.get((list_path, value), list_path)

    def read(self, raw: object, path: KeyPath, parser: Parser) -> Any:
        """Parse one value; on a problem report it and return _INVALID."""
        try:
            return parser(raw, path, self)
        except _Invalid as exc:
            self.at_value(path, str(exc))
            return _INVALID

    def table(self, raw: object, path: KeyPath, settings: Mapping[str, Setting]) -> dict[str, Any]:
        """The values of a table's keys (_INVALID for wrong ones, which are reported, as
        are unknown keys)."""
        if not isinstance(raw, dict):
            raise _Invalid(_expected("a table", raw))
        values: dict[str, Any] = {}
        for key, item in raw.items():
            setting = settings.get(key)
            if setting is None:
                if self.full:
                    self.unlisted += 1  # (without the cost of a suggestion)
                else:
                    self.at_key((*path, key), f"unknown key{_did_you_mean(key, settings)}")
                continue
            values[key] = self.read(item, (*path, key), setting.parse)
        return values

    def with_defaults(
        self, values: dict[str, Any], path: KeyPath, settings: Mapping[str, Setting]
    ) -> dict[str, Any] | None:
        """Every setting's value, given or default; None if a required one is missing or
        wrong. A wrong value was reported already and stands in as its default, so that
        the checks across keys still run."""
        complete: dict[str, Any] = {}
        for name, setting in settings.items():
            value = values.get(name, _REQUIRED)
            if value is _REQUIRED and setting.default is _REQUIRED:
                self.at_key(path, f'missing required key "{name}"')
            complete[name] = setting.default if value is _REQUIRED or value is _INVALID else value
        if any(value is _REQUIRED for value in complete.values()):
            return None
        return complete


def format_key_path(path: Iterable[str | int]) -> str:
    """("interface", "wg0", "peer", 1, "allowed_ips") -> interface.wg0.peer[1].allowed_ips"""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            name = part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else json.dumps(part)
            text += f".{name}" if text else name
    return text


def _did_you_mean(key: str, settings: Iterable[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, list(settings), n=1)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _show(value: object) -> str:
    """A value as TOML would write it, shortened: quoted back in messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 4] + '..."'
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _quote(path: str) -> str:
    """A file path quoted whole: unlike other values it is only useful complete."""
    return json.dumps(path, ensure_ascii=False)


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return f"a boolean ({_show(value)})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a float ({value})"
    if isinstance(value, str):
        return f"a string ({_show(value)})"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a date/time ({_show(value)})"


def _expected(what: str, value: object) -> str:
    return f"expected {what}, got {_describe(value)}"


# ---------------------------------------------------------------------------------------
# Parsers of single values


def _text(check: Callable[[str], object] | None = None) -> Parser:
    """A string; `check` returns its canonical form or raises ValueError with the reason."""

    def parse(raw: object, path: KeyPath, reader: _Reader) -> object:
        if not isinstance(raw, str):
            raise _Invalid(_expected("a string", raw))
        if check is None:
            return raw
        try:
            return check(raw)
        except ValueError as exc:
            raise _Invalid(str(exc)) from None

    return parse


def _integer(low: int, high: int) -> Parser:
    def parse(raw: object, path: KeyPath, reader: _Reader) -> int:
        # bool is a subclass of int in Python, but `mtu = true` is not a number.
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise _Invalid(_expected("an integer", raw))
        if not low <= raw <= high:
            raise _Invalid(f"{raw} is out of range ({low}-{high})")
        return raw

    return parse


def _boolean(raw: object, path: KeyPath, reader: _Reader) -> bool:
    if not isinstance(raw, bool):
        raise _Invalid(_expected("a boolean (true or false)", raw))
    return raw


def _choice(*options: str) -> Parser:
    def check(text: str) -> str:
        if text not in options:
            listed = ", ".join(f'"{o}"' for o in options)
            raise ValueError(f"{_show(text)} is not one of {listed}{_did_you_mean(text, options)}")
        return text

    return _text(check)


def _list_of(element: Parser) -> Parser:
    """An array of distinct values, returned sorted; every wrong element is reported."""

    def parse(raw: object, path: KeyPath, reader: _Reader) -> tuple[Any, ...]:
        if not isinstance(raw, list):
            raise _Invalid(_expected("an array", raw))
        found: set[Any] = set()
        for index, item in enumerate(raw):
            value = reader.read(item, (*path, index), element)
            if value is not _INVALID:
                found.add(value)
                reader.note_origin(path, value, (*path, index))
        return tuple(sorted(found))

    return parse


def _absolute_path(text: str) -> str:
    if not os.path.isabs(text):
        raise ValueError(f"{_quote(text)} is not an absolute path")
    if "\0" in text:
        raise ValueError(f"{_quote(text)} contains a NUL character")
    return os.path.normpath(text)


def _zone_refused(text: str, what: str) -> None:
    zone = ipv6_zone(text)
    if zone is not None:
        raise ValueError(
            f"{_show(text)} has an IPv6 zone ({_show(zone)}): remove it ({what} has no zone)"
        )


def _interface_address(text: str) -> str:
    _zone_refused(text, "an interface address")
    try:
        return str(ipaddress.ip_interface(text))
    except ValueError:
        raise ValueError(
            f'{_show(text)} is not an interface address (like "10.9.0.1/24" or "fd00::1/64")'
        ) from None


def _network(text: str) -> str:
    if canonical_network(text) is not None:
        return text
    _zone_refused(text, "a network")
    try:
        return str(ipaddress.ip_network(text))
    except ValueError:
        pass
    try:
        meant = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ValueError(f'{_show(text)} is not a network (like "10.9.0.0/24" or "fd00::/64")') from None
    raise ValueError(f'{_show(text)} has host bits set (did you mean "{meant}"?)')


def _public_key(text: str) -> str:
    try:
        decode_key(text)
    except ValueError as exc:
        raise ValueError(f"{_show(text)} is {exc}") from None
    return text.strip()


def _node_id(text: str) -> str:
    if not NODE_ID_RE.fullmatch(text):
        raise ValueError(f"{_show(text)} is not a BMX7 node id (56 hexadecimal characters)")
    return text.upper()


def _sms_name(text: str) -> str:
    problem = sms_name_problem(text)
    if problem is not None:
        raise ValueError(f"{_show(text)} {problem}")
    return text


_PORT = re.compile(r"[0-9]{1,5}")
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def _endpoint(text: str) -> Endpoint:
    """An endpoint written as HOST:PORT, IPv4:PORT or [IPv6]:PORT. Host names are kept as
    they are: apply resolves them."""
    shown = _show(text)
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]:")
        if not bracket:
            raise ValueError(f'{shown} is not an endpoint (expected "[IPv6]:PORT")')
        zone = ipv6_zone(host)
        if zone is not None:
            raise ValueError(
                f"{shown} has an IPv6 zone ({_show(zone)}): WireGuard drops it from an endpoint "
                "(use an address that is not link-local, or remove the zone)"
            )
        try:
            if canonical_address(host) != 6:
                ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{shown} is not an endpoint ({_show(host)} is not an IPv6 address)") from None
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            raise ValueError(f'{shown} is not an endpoint (expected "HOST:PORT")')
        if ":" in host:
            raise ValueError(
                f'{shown} is not an endpoint (an IPv6 address needs brackets: "[{host}]:{port}")'
            )
        _check_host(host, shown)
    if not _PORT.fullmatch(port) or not 1 <= int(port) <= 65535:
        raise ValueError(f"{shown} is not an endpoint (port {_show(port)} is not 1-65535)")
    return Endpoint(host=host, port=int(port))


def _check_host(host: str, shown: str) -> None:
    if re.fullmatch(r"[0-9.]+", host):
        if canonical_address(host) == 4:
            return
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError(f"{shown} is not an endpoint ({_show(host)} is not an IPv4 address)") from None
        return
    name = host[:-1] if host.endswith(".") else host
    if not name or len(name) > 253 or not all(_HOST_LABEL.fullmatch(p) for p in name.split(".")):
        raise ValueError(f"{shown} is not an endpoint ({_show(host)} is not a host name)")


def _key_in_file(path: str) -> PrivateKey | None:
    """The key a file holds if it is a usable key file this process may read; None
    otherwise (problems are reported by keys.key_file_problem)."""
    try:
        return read_key_file(path)
    except KeyFileError:
        return None


def _preshared_key_file(text: str) -> str:
    path = _absolute_path(text)
    problem = key_file_problem(path, must_exist=True, private=False)
    if problem is not None:
        raise ValueError(f"{_quote(path)} {problem}")
    return path


# Names the kernel takes but that mean something else to it or to the tools around it.
_RESERVED_NAMES = {
    "all": "reserved: /proc/sys/net/*/conf/all means every interface",
    "default": "reserved: /proc/sys/net/*/conf/default means interfaces yet to come",
    "lo": "reserved: the loopback interface",
}


def _interface_name(name: str) -> str | None:
    """Why `name` cannot be the name of an interface bmx7-wg makes, or None.

    The kernel's dev_valid_name (1-15 bytes, not "." or "..", no "/", ":" or
    whitespace), and what it or the tools treat specially: "%" makes the kernel pick a
    number in its place, a leading "-" reads as an option to `ip` and wireguard-go
    (`wireguard-go -h` makes an interface named "-h"), and the names in _RESERVED_NAMES.
    """
    if not 1 <= len(name.encode()) <= 15:
        return "must be 1-15 characters"
    if name in (".", ".."):
        return 'must not be "." or ".."'
    if any(c in "/:" or c.isspace() or not c.isprintable() for c in name):
        return 'must not contain "/", ":", whitespace or control characters'
    if "%" in name:
        return 'must not contain "%": the kernel replaces "%d" by a free number'
    if name.startswith("-"):
        return 'must not start with "-": tools read it as an option'
    return _RESERVED_NAMES.get(name)


# ---------------------------------------------------------------------------------------
# Sections


def _peer(raw: object, path: KeyPath, reader: _Reader) -> PeerConfig | None:
    values = reader.with_defaults(reader.table(raw, path, PEER_SETTINGS), path, PEER_SETTINGS)
    return None if values is None else PeerConfig(**values)


def _peers(raw: object, path: KeyPath, reader: _Reader) -> tuple[PeerConfig | None, ...]:
    if not isinstance(raw, list):
        header = f"[[{format_key_path(path)}]]"
        raise _Invalid(_expected(f"an array of tables ({header})", raw))
    # A wrong peer stays as None so that the peers after it keep their index in messages.
    peers: list[PeerConfig | None] = []
    for index, item in enumerate(raw):
        read = reader.read(item, (*path, index), _peer)
        peers.append(read if isinstance(read, PeerConfig) else None)
    return tuple(peers)


def _interface(raw: object, path: KeyPath, reader: _Reader) -> InterfaceConfig:
    name = str(path[-1])
    given = reader.table(raw, path, INTERFACE_SETTINGS)
    values = reader.with_defaults(given, path, INTERFACE_SETTINGS)
    assert values is not None  # no interface setting is required
    if values["private_key_file"] is None:
        values["private_key_file"] = os.path.join(reader.state_dir, f"{name}.key")
    # A wrong listen_port was reported already; a mesh default in its place would only
    # add a misleading port conflict.
    if values["mesh"] and "listen_port" not in given:
        values["listen_port"] = DEFAULT_MESH_PORT
    indexed_peers: list[tuple[int, PeerConfig]] = [
        (i, p) for i, p in enumerate(values["peer"]) if p is not None
    ]
    del values["peer"]
    interface = InterfaceConfig(name=name, peers=tuple(p for _, p in indexed_peers), **values)
    _check_interface(interface, path, given.get("private_key_file"), reader)
    _check_peers(interface, indexed_peers, path, reader)
    return interface


def _check_interface(
    interface: InterfaceConfig, path: KeyPath, key_file_given: object, reader: _Reader
) -> None:
    if interface.mesh and not reader.has_bmx7:
        reader.at_value((*path, "mesh"), "mesh = true needs a [bmx7] table")
    needs_ipv6_mtu = interface.mesh or any(":" in a for a in interface.addresses)
    if needs_ipv6_mtu and interface.mtu < MIN_MTU_IPV6:
        reader.at_value(
            (*path, "mtu"),
            f"{interface.mtu} is out of range ({MIN_MTU_IPV6}-65535 with IPv6 addresses or mesh)",
        )
    # A session key never touches the file; a wrong path was reported already.
    if interface.key == "persistent" and key_file_given is not _INVALID:
        problem = key_file_problem(interface.private_key_file, must_exist=False)
        if problem is not None:
            default = "" if key_file_given is not None else " (the default)"
            reader.at_value(
                (*path, "private_key_file"),
                f"{_quote(interface.private_key_file)}{default} {problem}",
            )


def _check_peers(
    interface: InterfaceConfig,
    peers: list[tuple[int, PeerConfig]],
    path: KeyPath,
    reader: _Reader,
) -> None:
    """Peers of one interface must differ in key and must not claim the same allowed-ip."""
    own_key = _own_public_key(interface) if peers else None
    # Owners by peer index; key paths are only built for a message (10,000 peers).
    key_owner: dict[str, int] = {}
    ip_owner: dict[str, int] = {}
    for index, peer in peers:
        first = key_owner.setdefault(peer.public_key, index)
        if peer.public_key == own_key or first != index:
            key_path = (*path, "peer", index, "public_key")
            if peer.public_key == own_key:
                reader.at_value(key_path, f"{_show(peer.public_key)} is this interface's own public key")
            if first != index:
                first_path = (*path, "peer", first)
                reader.at_value(
                    key_path,
                    f"{_show(peer.public_key)} is already used by {format_key_path(first_path)}"
                    f" (line {reader.line((*first_path, 'public_key'))})",
                )
        for network in peer.allowed_ips:
            claimed = ip_owner.setdefault(network, index)
            if claimed != index:
                claimed_path = (*path, "peer", claimed)
                line = reader.line(reader.origin((*claimed_path, "allowed_ips"), network))
                reader.at_value(
                    reader.origin((*path, "peer", index, "allowed_ips"), network),
                    f"{_show(network)} is already claimed by {format_key_path(claimed_path)} (line {line})",
                )


def _own_public_key(interface: InterfaceConfig) -> str | None:
    """The interface's public key if its key file can be read now; None otherwise (a new
    or session key, or a file only root may read): then the check waits for apply."""
    if interface.key != "persistent":
        return None
    key = _key_in_file(interface.private_key_file)
    return None if key is None else key.public_key()


def _interfaces(raw: object, path: KeyPath, reader: _Reader) -> tuple[InterfaceConfig, ...]:
    if not isinstance(raw, dict):
        raise _Invalid(_expected("a table", raw))
    interfaces = []
    for name, item in raw.items():
        where = (*path, name)
        problem = _interface_name(name)
        if problem is not None:
            reader.at_key(where, f"{_show(name)} is not a valid interface name ({problem})")
            continue
        interface = reader.read(item, where, _interface)
        if isinstance(interface, InterfaceConfig):
            interfaces.append(interface)
    return tuple(interfaces)


def _check_one_mesh_interface(interfaces: tuple[InterfaceConfig, ...], reader: _Reader) -> None:
    # One node publishes one announcement under one SMS name, so one interface carries the mesh.
    mesh = [i for i in interfaces if i.mesh]
    for interface in mesh[1:]:
        first: KeyPath = ("interface", mesh[0].name, "mesh")
        reader.at_value(
            ("interface", interface.name, "mesh"),
            f"only one interface can carry the mesh; {format_key_path(first[:-1])} already does "
            f"(line {reader.line(first)})",
        )


def _check_listen_ports(interfaces: tuple[InterfaceConfig, ...], reader: _Reader) -> None:
    owner: dict[int, KeyPath] = {}
    for interface in interfaces:
        if interface.listen_port is None:
            continue
        port_path: KeyPath = ("interface", interface.name, "listen_port")
        first = owner.setdefault(interface.listen_port, port_path)
        if first != port_path:
            given = port_path in reader.source.values
            port = f"{interface.listen_port}{'' if given else ' (the mesh default)'}"
            reader.at_value(
                port_path,
                f"{port} is already used by {format_key_path(first[:-1])} (line {reader.line(first)})",
            )


def _bmx7(raw: object, path: KeyPath, reader: _Reader) -> Bmx7Config:
    values = reader.with_defaults(reader.table(raw, path, BMX7_SETTINGS), path, BMX7_SETTINGS)
    assert values is not None  # no bmx7 setting is required
    for node_id in set(values["trusted"]) & set(values["denied"]):
        trusted_at = reader.origin((*path, "trusted"), node_id)
        reader.at_value(
            reader.origin((*path, "denied"), node_id),
            f"{_show(node_id)} is also in {format_key_path(path)}.trusted (line {reader.line(trusted_at)})",
        )
    return Bmx7Config(**values)


def _names(raw: object, path: KeyPath, reader: _Reader) -> NamesConfig:
    values = reader.table(raw, path, NAMES_SETTINGS)
    if "hosts_file" not in values:
        values["hosts_file"] = default_hosts_file()
    complete = reader.with_defaults(values, path, NAMES_SETTINGS)
    assert complete is not None  # no names setting is required
    return NamesConfig(**complete)


def _hosts_file(text: str) -> str:
    return text and _absolute_path(text)  # "": no names


def _domain(text: str) -> str:
    problem = domain_problem(text)
    if problem is not None:
        raise ValueError(f"{_quote(text)} {problem}")
    return text


def _metrics(raw: object, path: KeyPath, reader: _Reader) -> MetricsConfig:
    values = reader.with_defaults(reader.table(raw, path, METRICS_SETTINGS), path, METRICS_SETTINGS)
    assert values is not None  # no metrics setting is required
    return MetricsConfig(**values)


def _textfile(text: str) -> str:
    """"" (no file) or an absolute path ending in .prom (node_exporter reads no other)."""
    if text == "":
        return text
    path = _absolute_path(text)
    if not path.endswith(".prom"):
        raise ValueError(f"{_quote(text)} does not end in .prom (node_exporter reads no other file)")
    return path


def _settings(*settings: Setting) -> dict[str, Setting]:
    return {s.name: s for s in settings}


BMX7_SETTINGS = _settings(
    Setting("runtime_dir", _text(_absolute_path), "/var/run/bmx7"),
    Setting("announce", _text(_sms_name), "wg-bmx7"),
    Setting("trust", _choice("bmx7", "all", "listed"), "bmx7"),
    Setting("trusted_nodes_dir", _text(_absolute_path), "/etc/bmx7/trustedNodes"),
    Setting("trusted", _list_of(_text(_node_id)), ()),
    Setting("denied", _list_of(_text(_node_id)), ()),
    Setting("grace", _integer(0, 86400), DEFAULT_GRACE),
)

NAMES_SETTINGS = _settings(
    Setting("hosts_file", _text(_hosts_file), DEFAULT_HOSTS_FILE),
    Setting("domain", _text(_domain), DEFAULT_NAMES_DOMAIN),
)

INTERFACE_SETTINGS = _settings(
    # None: <state_dir>/<name>.key.
    Setting("private_key_file", _text(_absolute_path), None),
    Setting("key", _choice("persistent", "session"), "persistent"),
    # None: the kernel picks a port; a mesh interface gets DEFAULT_MESH_PORT.
    Setting("listen_port", _integer(1, 65535), None),
    # 576 is the floor; with IPv6 or mesh it is 1280, checked once addresses are known.
    Setting("mtu", _integer(MIN_MTU, 65535), 1420),
    Setting("fwmark", _integer(0, 2**32 - 1), 0),
    Setting("addresses", _list_of(_text(_interface_address)), ()),
    Setting("backend", _choice("auto", "kernel", "userspace"), "auto"),
    Setting("mesh", _boolean, False),
    Setting("announce_networks", _list_of(_text(_network)), ()),
    Setting("accept_networks", _list_of(_text(_network)), ()),
    Setting("route_allowed_ips", _boolean, True),
    Setting("peer", _peers, ()),
)

PEER_SETTINGS = _settings(
    Setting("public_key", _text(_public_key), _REQUIRED),
    Setting("endpoint", _text(_endpoint), None),
    Setting("allowed_ips", _list_of(_text(_network)), ()),
    Setting("persistent_keepalive", _integer(0, 65535), 0),
    Setting("preshared_key_file", _text(_preshared_key_file), None),
    Setting("name", _text(), None),
)

METRICS_SETTINGS = _settings(
    Setting("textfile", _text(_textfile), DEFAULT_METRICS_TEXTFILE),
)

TOP_SETTINGS = _settings(
    Setting("bmx7", _bmx7, None),
    Setting("names", _names, None),
    Setting("metrics", _metrics, None),
    Setting("interface", _interfaces, ()),
)
