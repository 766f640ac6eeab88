"""Fuzzing the configuration reader: random TOML documents, mutations of valid ones, bytes.

Every input must give a `Config` or a `ConfigError` whose diagnostics point into the
file; never another exception. A configuration that is accepted must never make the
planner touch an interface that is neither declared nor marked as managed.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from bmx7_wg.config import reader
from bmx7_wg.config.model import Config
from bmx7_wg.errors import ConfigError, ConflictError
from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.desired import InterfaceInputs, desired_state
from bmx7_wg.plan.planner import plan
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState
from tests.fuzz.profile import FUZZ, count

PATH = "/etc/bmx7-wg.toml"
OWN_KEY = PrivateKey.generate()
PUBLIC_KEYS = [PrivateKey.generate().public_key() for _ in range(4)]


# --------------------------------------------------------------------- files the configs name


class Files:
    """Key files of every kind a configuration can point at, in one private directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.state_dir = str(root / "state")  # absent: default key files do not exist
        self.good = root / "good.key"
        self.open_mode = root / "open.key"
        self.garbage = root / "garbage.key"
        self.directory = root / "dir.key"
        self.good.write_text(PrivateKey.generate().to_base64() + "\n")
        self.good.chmod(0o600)
        self.open_mode.write_text(PrivateKey.generate().to_base64() + "\n")
        self.open_mode.chmod(0o644)
        self.garbage.write_bytes(b"\xff\x00 not a key\n")
        self.garbage.chmod(0o600)
        self.directory.mkdir()

    def paths(self) -> list[str]:
        names = [self.good, self.open_mode, self.garbage, self.directory, self.root / "missing.key"]
        return [str(p) for p in names] + ["relative.key", str(self.root) + "/../" + self.good.name, "/"]


_tmp = tempfile.TemporaryDirectory(prefix="bmx7wg-fuzz-")
FILES = Files(Path(_tmp.name))


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    _tmp.cleanup()


# --------------------------------------------------------------------- a small TOML writer


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _string(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def _body(table: dict[str, Any]) -> list[str]:
    return [f"{_key(k)} = {_value(v)}" for k, v in table.items()]


def to_toml(doc: dict[str, Any], headers: bool) -> str:
    """Write `doc` as TOML: with [table] headers the way users do, or all inline."""
    if not headers:
        return "\n".join(_body(doc)) + "\n"
    lines: list[str] = []
    bmx7 = doc.get("bmx7")
    if isinstance(bmx7, dict):
        lines += ["[bmx7]", *_body(bmx7), ""]
    elif "bmx7" in doc:
        lines += [f"bmx7 = {_value(bmx7)}"]
    interfaces = doc.get("interface")
    if isinstance(interfaces, dict):
        for name, table in interfaces.items():
            if not isinstance(table, dict):
                lines += [f"interface.{_key(name)} = {_value(table)}", ""]
                continue
            peers = table.get("peer")
            rest = {k: v for k, v in table.items() if k != "peer"}
            lines += [f"[interface.{_key(name)}]", *_body(rest), ""]
            if isinstance(peers, list) and all(isinstance(p, dict) for p in peers):
                for peer in peers:
                    lines += [f"[[interface.{_key(name)}.peer]]", *_body(peer), ""]
            elif "peer" in table:
                # A non-table value for `peer` must come before any sub-table: put it inline.
                lines.insert(lines.index(f"[interface.{_key(name)}]") + 1, f"peer = {_value(peers)}")
    elif "interface" in doc:
        lines.insert(0, f"interface = {_value(interfaces)}")
    for k, v in doc.items():
        if k not in ("bmx7", "interface"):
            lines.insert(0, f"{_key(k)} = {_value(v)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------- documents

NODE_IDS = ["89888EDF9B64A255C3AB1CD3CA9A" + "0" * 28, "ab" * 28, "A" * 55, "G" * 56, "0" * 57]

scalars = st.one_of(
    st.text(max_size=30),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, 576, 1279, 1280, 1420, 65535, 65536, -1, 2**32 - 1, 2**32, 51820]),
    st.booleans(),
    st.floats(allow_nan=True),
    st.dates(),
    st.times(),
)

networks = st.sampled_from(
    [
        "10.9.0.0/24",
        "10.9.0.1/24",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::/0",
        "fd00::/64",
        "fd77::/16",
        "fd77::1/128",
        "10.77.0.300/24",
        "::ffff:1.2.3.4/128",
        "10.9.1.0/24",
        "1.2.3.4",
        "fe80::/10",
        "10.9.0.0/33",
        "fd00::/129",
        "",
    ]
)
addresses = st.sampled_from(
    ["10.9.0.1/24", "fd00::1/64", "10.9.0.1", "10.9.0.0/24", "300.1.1.1/8", "fd77::1/128"]
)
endpoints = st.sampled_from(
    [
        "vpn.example.org:51820",
        "192.0.2.1:51820",
        "[fd00::1]:51820",
        "fd00::1:51820",
        "[::1]:0",
        "host:99999",
        "-bad-.example:1",
        "a..b:1",
        "1.2.3.999:1",
        "[fd70::1]:40456",
        ":1",
        "x:",
    ]
)

VALUE_POOLS: dict[str, Any] = {
    "runtime_dir": st.sampled_from(["/var/run/bmx7", "run", "/tmp/x\x00y", str(FILES.root)]),
    "announce": st.sampled_from(["wg-bmx7", "x" * 16, "bad name", "", "a.b_c-9"]),
    "trust": st.sampled_from(["bmx7", "all", "listed", "some", "BMX7"]),
    "trusted_nodes_dir": st.sampled_from(["/etc/bmx7/trustedNodes", "rel"]),
    "trusted": st.lists(st.sampled_from(NODE_IDS), max_size=3),
    "denied": st.lists(st.sampled_from(NODE_IDS), max_size=3),
    "private_key_file": st.sampled_from(FILES.paths()),
    "key": st.sampled_from(["persistent", "session", "ephemeral"]),
    "listen_port": st.sampled_from([1, 40456, 51820, 65535, 0, 65536, 51820]),
    "mtu": st.sampled_from([576, 1279, 1280, 1420, 65535, 575, 65536]),
    "fwmark": st.sampled_from([0, 1, 2**32 - 1, 2**32, -1]),
    "addresses": st.lists(addresses, max_size=4),
    "backend": st.sampled_from(["auto", "kernel", "userspace", "wireguard"]),
    "mesh": st.booleans(),
    "announce_networks": st.lists(networks, max_size=4),
    "accept_networks": st.lists(networks, max_size=4),
    "route_allowed_ips": st.booleans(),
    "public_key": st.sampled_from(
        [*PUBLIC_KEYS, OWN_KEY.public_key(), "nope", "A" * 44, " " + PUBLIC_KEYS[0]]
    ),
    "endpoint": endpoints,
    "allowed_ips": st.lists(networks, max_size=4),
    "persistent_keepalive": st.sampled_from([0, 25, 65535, 65536, -1]),
    "preshared_key_file": st.sampled_from(FILES.paths()),
    "name": st.text(max_size=10),
}


def _value_for(key: str) -> st.SearchStrategy[Any]:
    pool = VALUE_POOLS.get(key)
    anything = st.one_of(scalars, st.lists(scalars, max_size=3))
    return anything if pool is None else st.one_of(pool, pool, pool, anything)


def _table(keys: list[str], extra: st.SearchStrategy[dict[str, Any]] | None = None) -> st.SearchStrategy[Any]:
    junk_keys = st.sampled_from([*keys, "listen_prot", "Mtu", "peers", "", "ключ"]) | st.text(max_size=8)

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        chosen = draw(st.lists(st.sampled_from(keys) | junk_keys, max_size=len(keys), unique=True))
        table = {k: draw(_value_for(k)) for k in chosen}
        if extra is not None:
            table.update(draw(extra))
        return table

    return build()


peer_tables = _table(list(reader.PEER_SETTINGS))
interface_names = st.sampled_from(
    ["wg0", "wgmesh", "wg1", "a" * 16, "x/y", "..", "eth 0", "ünï", ""]
) | st.text(max_size=16)
interface_tables = _table(
    [k for k in reader.INTERFACE_SETTINGS if k != "peer"],
    st.fixed_dictionaries({}, optional={"peer": st.one_of(st.lists(peer_tables, max_size=4), scalars)}),
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "bmx7": st.one_of(_table(list(reader.BMX7_SETTINGS)), scalars),
        "interface": st.one_of(st.dictionaries(interface_names, interface_tables, max_size=3), scalars),
        "junk": scalars,
    },
)

VALID = [
    f"""[interface.wg0]
listen_port = 51820
addresses = ["10.9.0.1/24"]
private_key_file = "{FILES.good}"

[[interface.wg0.peer]]
name = "vpn"
public_key = "{PUBLIC_KEYS[0]}"
endpoint = "vpn.example.org:51820"
allowed_ips = ["10.9.1.0/24"]
persistent_keepalive = 25
""",
    f"""[bmx7]
runtime_dir = "/var/run/bmx7"
announce = "wg-bmx7"
trust = "bmx7"
trusted = ["{NODE_IDS[0]}"]

[interface.wgmesh]
mesh = true
private_key_file = "{FILES.good}"
announce_networks = ["10.9.0.0/24"]
accept_networks = ["10.0.0.0/8"]

[[interface.wgmesh.peer]]
public_key = "{PUBLIC_KEYS[1]}"
endpoint = "[fd00::1]:51820"
allowed_ips = ["fd00::/64", "10.9.2.0/24"]
""",
    (Path(__file__).resolve().parents[2] / "etc" / "bmx7-wg.toml").read_text(),
]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """A valid configuration with a few random edits: what a typo or a bad merge makes."""
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "dup_line", "drop_line", "swap"]))
        pos = draw(st.integers(0, len(text)))
        if kind == "insert":
            piece = draw(
                st.sampled_from(
                    [
                        '"',
                        "[",
                        "]",
                        "=",
                        "\n",
                        "#",
                        ",",
                        "{",
                        "}",
                        "'''",
                        '"""',
                        "\\",
                        "\r",
                        "\x00",
                        "[[",
                        ".",
                        " = 1",
                        "\ufeff",
                    ]
                )
                | st.text(max_size=5)
            )
            text = text[:pos] + piece + text[pos:]
        elif kind == "delete":
            end = draw(st.integers(pos, min(len(text), pos + 20)))
            text = text[:pos] + text[end:]
        elif kind == "replace" and pos < len(text):
            text = text[:pos] + draw(st.characters()) + text[pos + 1 :]
        else:
            lines = text.split("\n")
            i = draw(st.integers(0, len(lines) - 1))
            j = draw(st.integers(0, len(lines) - 1))
            if kind == "dup_line":
                lines.insert(j, lines[i])
            elif kind == "drop_line":
                del lines[i]
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


# --------------------------------------------------------------------- the properties


def check_parse(text: str) -> Config | None:
    """Parse; assert that a refusal is a proper ConfigError pointing into the text."""
    try:
        result = reader.parse(text, PATH, state_dir=FILES.state_dir)
    except ConfigError as exc:
        assert exc.diagnostics, "a ConfigError must list at least one problem"
        lines = text.count("\n") + 1
        for d in exc.diagnostics:
            assert d.path == PATH
            assert 1 <= d.line <= lines + 1, (d, lines)
            assert d.col >= 1, d
            assert d.message and "\n" not in d.message.strip("\n"), d
            assert str(d).startswith(f"{PATH}:{d.line}:{d.col}: ")
        return None
    assert isinstance(result, Config)
    # Deterministic: the same text always reads the same.
    assert reader.parse(text, PATH, state_dir=FILES.state_dir) == result
    return result


def check_planner_stays_on_managed(cfg: Config, foreign: list[tuple[str, bool, bool]]) -> None:
    """Plan the config against a namespace holding foreign interfaces: (name, is WireGuard,
    managed). No action may name an interface that is neither declared nor managed."""
    inputs = {}
    for iface in cfg.interfaces:
        psks = {p.preshared_key_file: PresharedKey(b"\x01" * 32) for p in iface.peers if p.preshared_key_file}
        inputs[iface.name] = InterfaceInputs("userspace", OWN_KEY, psks)
    desired = desired_state(cfg, inputs, lambda host, port: f"192.0.2.9:{port}")
    observed: dict[str, ObservedInterface] = {}
    for index, (name, wireguard, managed) in enumerate(foreign, start=2):
        observed[name] = ObservedInterface(
            name=name,
            ifindex=index,
            implementation="userspace" if wireguard else None,
            managed=managed,
            mtu=1500,
            up=True,
            addresses=frozenset({"192.0.2.1/24"}),
            routes=frozenset(),
            device=Device() if wireguard else None,
        )
    declared = {i.name for i in cfg.interfaces}
    try:
        actions = plan(desired, ObservedState(observed))
    except ConflictError:
        assert any(name in declared and not wg for name, wg, _ in foreign)
        return
    allowed = declared | {name for name, _, managed in foreign if managed}
    for action in actions:
        assert action.interface in allowed, (action, allowed)
        if action.to_json()["action"] == "delete_link":
            assert observed[action.interface].managed
    # The JSON of a plan never carries the private key.
    text = json.dumps([a.to_json() for a in actions])
    assert OWN_KEY.to_base64() not in text and OWN_KEY.raw.hex() not in text


foreign_interfaces = st.lists(
    st.tuples(st.sampled_from(["wg0", "wgmesh", "eth0", "wg1", "lo", "br0"]), st.booleans(), st.booleans()),
    max_size=4,
    unique_by=lambda t: t[0],
)


@FUZZ
@given(doc=documents, headers=st.booleans(), foreign=foreign_interfaces)
def test_random_documents(doc: dict[str, Any], headers: bool, foreign: list[tuple[str, bool, bool]]) -> None:
    count("config: random TOML documents")
    try:
        text = to_toml(doc, headers)
    except TypeError:
        assume(False)
        return
    cfg = check_parse(text)
    if cfg is not None:
        count("config: random documents accepted and planned")
        check_planner_stays_on_managed(cfg, foreign)


@FUZZ
@given(text=mutated(), foreign=foreign_interfaces)
def test_mutated_valid_configs(text: str, foreign: list[tuple[str, bool, bool]]) -> None:
    count("config: mutations of valid configs")
    cfg = check_parse(text)
    if cfg is not None:
        check_planner_stays_on_managed(cfg, foreign)


@FUZZ
@given(text=st.text(max_size=300))
def test_random_text(text: str) -> None:
    count("config: random text")
    check_parse(text)


@FUZZ
@given(data=st.binary(max_size=300) | mutated().map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_random_bytes_through_load(data: bytes) -> None:
    count("config: random bytes read from a file")
    path = FILES.root / "fuzz.toml"
    path.write_bytes(data)
    try:
        reader.load(str(path), state_dir=FILES.state_dir)
    except ConfigError as exc:
        for d in exc.diagnostics:
            assert d.line >= 1 and d.col >= 1, d
    finally:
        os.unlink(path)


def test_every_valid_seed_is_valid() -> None:
    # The mutation seeds must themselves be accepted, or the mutations test little.
    for text in VALID[:2]:
        assert check_parse(text) is not None
