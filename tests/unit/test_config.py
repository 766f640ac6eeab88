"""The configuration reader: exact messages with line:col, every error at once, the result."""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import pytest

from bmx7_wg.config import reader
from bmx7_wg.config.model import (
    DEFAULT_MESH_PORT,
    Bmx7Config,
    Config,
    Endpoint,
    InterfaceConfig,
    NamesConfig,
    PeerConfig,
)
from bmx7_wg.config.reader import format_key_path, load, parse
from bmx7_wg.errors import ConfigError
from bmx7_wg.keys import PrivateKey

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "etc" / "bmx7-wg.toml"
PATH = "/etc/bmx7-wg.toml"
KEY_A = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_B = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
NODE_A = "89888EDF9B64A255C3AB1CD3CA9A" + "0" * 28
NODE_B = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF01"


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    # Absent on purpose: the reader must neither need nor create it.
    return str(tmp_path / "state")


def errors(text: str, state_dir: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, PATH, state_dir=state_dir)
    return [str(d) for d in caught.value.diagnostics]


# One case per kind of error: (id, document, every message it must produce).
CASES: list[tuple[str, str, list[str]]] = [
    (
        "syntax error",
        "[interface.wg0]\nmtu = 1420\nlisten_port = = 1\n",
        [f"{PATH}:3:15: invalid TOML: Invalid value"],
    ),
    (
        "table declared twice",
        "[interface.wg0]\nmtu = 1420\n\n[interface.wg0]\n",
        [f'{PATH}:4:15: invalid TOML: Cannot declare "interface.wg0" twice'],
    ),
    (
        "unterminated array",
        "[interface.wg0]\naddresses = [\n",
        [f"{PATH}:3:1: invalid TOML: Invalid value"],
    ),
    (
        "unknown top-level table",
        "[interfaces.wg0]\nmtu = 1420\n",
        [f'{PATH}:1:2: interfaces: unknown key (did you mean "interface"?)'],
    ),
    (
        "unknown top-level key, nothing close",
        "colour = 1\n",
        [f"{PATH}:1:1: colour: unknown key"],
    ),
    (
        "unknown interface key",
        "[interface.wg0]\nmtu = 1420\nlistn_port = 1\n",
        [f'{PATH}:3:1: interface.wg0.listn_port: unknown key (did you mean "listen_port"?)'],
    ),
    (
        "unknown bmx7 key",
        "[bmx7]\nruntimedir = '/run/bmx7'\n",
        [f'{PATH}:2:1: bmx7.runtimedir: unknown key (did you mean "runtime_dir"?)'],
    ),
    (
        "unknown peer key",
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\nallowed_ip = []\n',
        [f'{PATH}:3:1: interface.wg0.peer[0].allowed_ip: unknown key (did you mean "allowed_ips"?)'],
    ),
    (
        "port out of range",
        "# one\n# two\n# three\n\n[interface.wg0]\nmtu = 1420\nlisten_port = 99999\n",
        [f"{PATH}:7:15: interface.wg0.listen_port: 99999 is out of range (1-65535)"],
    ),
    (
        "integer given as a string",
        '[interface.wg0]\nmtu = "1420"\n',
        [f'{PATH}:2:7: interface.wg0.mtu: expected an integer, got a string ("1420")'],
    ),
    (
        "boolean is not an integer",
        "[interface.wg0]\nfwmark = true\n",
        [f"{PATH}:2:10: interface.wg0.fwmark: expected an integer, got a boolean (true)"],
    ),
    (
        "float is not an integer",
        "[interface.wg0]\nmtu = 1420.0\n",
        [f"{PATH}:2:7: interface.wg0.mtu: expected an integer, got a float (1420.0)"],
    ),
    (
        "integer is not a boolean",
        "[interface.wg0]\nroute_allowed_ips = 1\n",
        [
            f"{PATH}:2:21: interface.wg0.route_allowed_ips: "
            "expected a boolean (true or false), got an integer (1)"
        ],
    ),
    (
        "string is not an array",
        '[interface.wg0]\naddresses = "10.0.0.1/24"\n',
        [f'{PATH}:2:13: interface.wg0.addresses: expected an array, got a string ("10.0.0.1/24")'],
    ),
    (
        "date is not a string",
        "[bmx7]\nannounce = 2024-01-01\n",
        [f"{PATH}:2:12: bmx7.announce: expected a string, got a date/time (2024-01-01)"],
    ),
    (
        "bmx7 is not a table",
        "bmx7 = true\n",
        [f"{PATH}:1:8: bmx7: expected a table, got a boolean (true)"],
    ),
    (
        "interface is not a table",
        "[interface]\nwg0 = 5\n",
        [f"{PATH}:2:7: interface.wg0: expected a table, got an integer (5)"],
    ),
    (
        "fwmark out of range",
        "[interface.wg0]\nfwmark = 4294967296\n",
        [f"{PATH}:2:10: interface.wg0.fwmark: 4294967296 is out of range (0-4294967295)"],
    ),
    (
        "mtu below the IPv4 minimum",
        "[interface.wg0]\nmtu = 500\n",
        [f"{PATH}:2:7: interface.wg0.mtu: 500 is out of range (576-65535)"],
    ),
    (
        "mtu below the IPv6 minimum",
        '[interface.wg0]\nmtu = 1000\naddresses = ["fd00::1/64"]\n',
        [f"{PATH}:2:7: interface.wg0.mtu: 1000 is out of range (1280-65535 with IPv6 addresses or mesh)"],
    ),
    (
        "mtu below the mesh minimum",
        "[bmx7]\n[interface.wg0]\nmesh = true\nmtu = 1279\n",
        [f"{PATH}:4:7: interface.wg0.mtu: 1279 is out of range (1280-65535 with IPv6 addresses or mesh)"],
    ),
    (
        "bad choice",
        '[interface.wg0]\nbackend = "kernal"\nkey = "forever"\n',
        [
            f'{PATH}:2:11: interface.wg0.backend: "kernal" is not one of "auto", "kernel", "userspace"'
            ' (did you mean "kernel"?)',
            f'{PATH}:3:7: interface.wg0.key: "forever" is not one of "persistent", "session"',
        ],
    ),
    (
        "bad trust",
        '[bmx7]\ntrust = "lsited"\n',
        [f'{PATH}:2:9: bmx7.trust: "lsited" is not one of "bmx7", "all", "listed" (did you mean "listed"?)'],
    ),
    (
        "relative paths",
        '[bmx7]\nruntime_dir = "run/bmx7"\ntrusted_nodes_dir = ""\n'
        '[interface.wg0]\nprivate_key_file = "wg0.key"\n',
        [
            f'{PATH}:2:15: bmx7.runtime_dir: "run/bmx7" is not an absolute path',
            f'{PATH}:3:21: bmx7.trusted_nodes_dir: "" is not an absolute path',
            f'{PATH}:5:20: interface.wg0.private_key_file: "wg0.key" is not an absolute path',
        ],
    ),
    (
        "path with a NUL",
        '[bmx7]\nruntime_dir = "/run/\\u0000"\n',
        [f'{PATH}:2:15: bmx7.runtime_dir: "/run/\\u0000" contains a NUL character'],
    ),
    (
        "announce name",
        '[bmx7]\nannounce = "wg-bmx7-announcement"\n[bmx7.x]\n',
        [
            f'{PATH}:2:12: bmx7.announce: "wg-bmx7-announcement" is not 1-15 characters of '
            "A-Z, a-z, 0-9, '_', '.', '-' (not starting with '-' or '.', not ending with '.'), "
            "as bmx7 requires",
            f"{PATH}:3:7: bmx7.x: unknown key",
        ],
    ),
    (
        "node ids",
        f'[bmx7]\ntrusted = ["{NODE_A}", "0xAB", 7]\ndenied = ["{NODE_B}", "{NODE_A.lower()}"]\n',
        [
            f'{PATH}:2:72: bmx7.trusted[1]: "0xAB" is not a BMX7 node id (56 hexadecimal characters)',
            f"{PATH}:2:80: bmx7.trusted[2]: expected a string, got an integer (7)",
            f'{PATH}:3:71: bmx7.denied[1]: "{NODE_A}" is also in bmx7.trusted (line 2)',
        ],
    ),
    (
        "interface names",
        '[interface.wg-with-a-long-name]\n[interface."a/b"]\n[interface."."]\n'
        '[interface."wg 0"]\n[interface.""]\n',
        [
            f'{PATH}:1:12: interface.wg-with-a-long-name: "wg-with-a-long-name" is not a valid '
            "interface name (must be 1-15 characters)",
            f'{PATH}:2:12: interface."a/b": "a/b" is not a valid interface name '
            '(must not contain "/", ":", whitespace or control characters)',
            f'{PATH}:3:12: interface.".": "." is not a valid interface name (must not be "." or "..")',
            f'{PATH}:4:12: interface."wg 0": "wg 0" is not a valid interface name '
            '(must not contain "/", ":", whitespace or control characters)',
            f'{PATH}:5:12: interface."": "" is not a valid interface name (must be 1-15 characters)',
        ],
    ),
    (
        "two interfaces on one port",
        "[interface.wg0]\nlisten_port = 51820\n\n[interface.wg1]\nlisten_port = 51820\n",
        [f"{PATH}:5:15: interface.wg1.listen_port: 51820 is already used by interface.wg0 (line 2)"],
    ),
    (
        "two mesh interfaces on the default port",
        "[bmx7]\n[interface.wg0]\nmesh = true\n[interface.wg1]\nmesh = true\n",
        [
            f"{PATH}:4:12: interface.wg1.listen_port: {DEFAULT_MESH_PORT} (the mesh default) "
            "is already used by interface.wg0 (line 2)",
            f"{PATH}:5:8: interface.wg1.mesh: only one interface can carry the mesh; "
            "interface.wg0 already does (line 3)",
        ],
    ),
    (
        "mesh without bmx7",
        "[interface.wg0]\nmesh = true\n",
        [f"{PATH}:2:8: interface.wg0.mesh: mesh = true needs a [bmx7] table"],
    ),
    (
        "addresses",
        '[interface.wg0]\naddresses = ["10.0.0.1/24", "10.0.0.300/24", "fd00::1/129"]\n',
        [
            f'{PATH}:2:29: interface.wg0.addresses[1]: "10.0.0.300/24" is not an interface address'
            ' (like "10.9.0.1/24" or "fd00::1/64")',
            f'{PATH}:2:46: interface.wg0.addresses[2]: "fd00::1/129" is not an interface address'
            ' (like "10.9.0.1/24" or "fd00::1/64")',
        ],
    ),
    (
        "networks with host bits",
        '[interface.wg0]\nannounce_networks = [\n  "10.9.0.1/24",\n  "fd00::1/64",\n]\n'
        'accept_networks = ["10.0.0.0/33"]\n',
        [
            f'{PATH}:3:3: interface.wg0.announce_networks[0]: "10.9.0.1/24" has host bits set'
            ' (did you mean "10.9.0.0/24"?)',
            f'{PATH}:4:3: interface.wg0.announce_networks[1]: "fd00::1/64" has host bits set'
            ' (did you mean "fd00::/64"?)',
            f'{PATH}:6:20: interface.wg0.accept_networks[0]: "10.0.0.0/33" is not a network'
            ' (like "10.9.0.0/24" or "fd00::/64")',
        ],
    ),
    (
        "peer as a table",
        f'[interface.wg0.peer]\npublic_key = "{KEY_A}"\n',
        [
            f"{PATH}:1:16: interface.wg0.peer: expected an array of tables "
            "([[interface.wg0.peer]]), got a table"
        ],
    ),
    (
        "peer without a public key",
        '[[interface.wg0.peer]]\nname = "x"\n[[interface.wg0.peer]]\npublic_key = 5\n',
        [
            f'{PATH}:1:17: interface.wg0.peer[0]: missing required key "public_key"',
            f"{PATH}:4:14: interface.wg0.peer[1].public_key: expected a string, got an integer (5)",
        ],
    ),
    (
        "invalid public keys",
        '[[interface.wg0.peer]]\npublic_key = "abc="\n'
        '[[interface.wg0.peer]]\npublic_key = "!TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWX0="\n'
        '[[interface.wg0.peer]]\npublic_key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="\n',
        [
            f'{PATH}:2:14: interface.wg0.peer[0].public_key: "abc=" is not a WireGuard key'
            " (44 base64 characters ending in '=')",
            f'{PATH}:4:14: interface.wg0.peer[1].public_key: "!TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWX0="'
            " is not a WireGuard key (invalid base64)",
            f'{PATH}:6:14: interface.wg0.peer[2].public_key: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="'
            " is not a WireGuard key (must decode to 32 bytes)",
        ],
    ),
    (
        "duplicate public key",
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\n'
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_B}"\n'
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\n'
        # The same key on another interface is fine.
        f'[[interface.wg1.peer]]\npublic_key = "{KEY_A}"\n',
        [
            f'{PATH}:6:14: interface.wg0.peer[2].public_key: "{KEY_A}" is already used by'
            " interface.wg0.peer[0] (line 2)"
        ],
    ),
    (
        "allowed-ip claimed twice",
        "[interface.wg0]\nmtu = 1420\n\n# first peer\n# ...\n# ...\n"
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\nallowed_ips = ["10.9.1.0/24"]\n\n'
        f'[[interface.wg0.peer]]\nallowed_ips=["10.9.1.0/24", "10.9.2.0/24"]\npublic_key = "{KEY_B}"\n'
        # Another interface may route the same network.
        f'[[interface.wg1.peer]]\npublic_key = "{KEY_B}"\nallowed_ips = ["10.9.1.0/24"]\n',
        [
            f'{PATH}:12:14: interface.wg0.peer[1].allowed_ips[0]: "10.9.1.0/24" is already claimed'
            " by interface.wg0.peer[0] (line 9)"
        ],
    ),
    (
        "allowed-ips with host bits",
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\nallowed_ips = ["10.9.1.1/24", "::/0", "x"]\n',
        [
            f'{PATH}:3:16: interface.wg0.peer[0].allowed_ips[0]: "10.9.1.1/24" has host bits set'
            ' (did you mean "10.9.1.0/24"?)',
            f'{PATH}:3:39: interface.wg0.peer[0].allowed_ips[2]: "x" is not a network'
            ' (like "10.9.0.0/24" or "fd00::/64")',
        ],
    ),
    (
        "endpoints",
        "".join(
            f'[[interface.wg0.peer]]\npublic_key = "{key}"\nendpoint = "{endpoint}"\n'
            for key, endpoint in [
                (KEY_A, "fd00::1:51820"),
                (KEY_B, "vpn.example.org"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "[fd00::1]:0"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAE=", "vpn_host:51820"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAI=", "10.0.0.256:51820"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAM=", "[10.0.0.1]:51820"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQ=", "[fd00::1]51820"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAU=", "host:65536"),
                ("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAY=", ":51820"),
            ]
        ),
        [
            f"{PATH}:3:12: interface.wg0.peer[0].endpoint: "
            '"fd00::1:51820" is not an endpoint (an IPv6 address needs brackets: "[fd00::1]:51820")',
            f"{PATH}:6:12: interface.wg0.peer[1].endpoint: "
            '"vpn.example.org" is not an endpoint (expected "HOST:PORT")',
            f'{PATH}:9:12: interface.wg0.peer[2].endpoint: "[fd00::1]:0" is not an endpoint'
            ' (port "0" is not 1-65535)',
            f'{PATH}:12:12: interface.wg0.peer[3].endpoint: "vpn_host:51820" is not an endpoint'
            ' ("vpn_host" is not a host name)',
            f'{PATH}:15:12: interface.wg0.peer[4].endpoint: "10.0.0.256:51820" is not an endpoint'
            ' ("10.0.0.256" is not an IPv4 address)',
            f'{PATH}:18:12: interface.wg0.peer[5].endpoint: "[10.0.0.1]:51820" is not an endpoint'
            ' ("10.0.0.1" is not an IPv6 address)',
            f'{PATH}:21:12: interface.wg0.peer[6].endpoint: "[fd00::1]51820" is not an endpoint'
            ' (expected "[IPv6]:PORT")',
            f'{PATH}:24:12: interface.wg0.peer[7].endpoint: "host:65536" is not an endpoint'
            ' (port "65536" is not 1-65535)',
            f'{PATH}:27:12: interface.wg0.peer[8].endpoint: ":51820" is not an endpoint'
            ' ("" is not a host name)',
        ],
    ),
    (
        "keepalive",
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\npersistent_keepalive = -1\n',
        [f"{PATH}:3:24: interface.wg0.peer[0].persistent_keepalive: -1 is out of range (0-65535)"],
    ),
    (
        "preshared key file missing or relative",
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_A}"\npreshared_key_file = "/nonexistent/psk"\n'
        f'[[interface.wg0.peer]]\npublic_key = "{KEY_B}"\npreshared_key_file = "psk"\n',
        [
            f'{PATH}:3:22: interface.wg0.peer[0].preshared_key_file: "/nonexistent/psk" does not exist',
            f'{PATH}:6:22: interface.wg0.peer[1].preshared_key_file: "psk" is not an absolute path',
        ],
    ),
    (
        # tomllib lets int()'s digit limit out as a plain ValueError.
        "an integer too long for Python",
        "[interface.wg0]\nlisten_port = " + "1" * 5000 + "\n",
        [f"{PATH}:2:15: invalid TOML: a number with more digits than Python reads (4,300)"],
    ),
    (
        "inline peers and quoted names",
        '[interface."wg.0"]\nmtu = 1\npeer = [{public_key = "x"}]\n',
        [
            f'{PATH}:2:7: interface."wg.0".mtu: 1 is out of range (576-65535)',
            f'{PATH}:3:23: interface."wg.0".peer[0].public_key: "x" is not a WireGuard key'
            " (44 base64 characters ending in '=')",
        ],
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error(text: str, expected: list[str], state_dir: str) -> None:
    assert errors(text, state_dir) == expected


def test_several_errors_at_once_sorted_by_line(state_dir: str) -> None:
    text = f"""\
[interface.wg1]
listen_port = 51820
mesh = true

[bmx7]
trust = "none"

[interface.wg0]
listen_port = 51820
mtu = 99
listn_port = 1

[[interface.wg0.peer]]
public_key = "{KEY_A}"
allowed_ips = ["10.0.0.0/8"]
[[interface.wg0.peer]]
public_key = "{KEY_A}"
allowed_ips = ["10.0.0.0/8", "10.0.0.1/8"]
"""
    assert errors(text, state_dir) == [
        f'{PATH}:6:9: bmx7.trust: "none" is not one of "bmx7", "all", "listed"',
        f"{PATH}:9:15: interface.wg0.listen_port: 51820 is already used by interface.wg1 (line 2)",
        f"{PATH}:10:7: interface.wg0.mtu: 99 is out of range (576-65535)",
        f'{PATH}:11:1: interface.wg0.listn_port: unknown key (did you mean "listen_port"?)',
        f'{PATH}:17:14: interface.wg0.peer[1].public_key: "{KEY_A}" is already used by'
        " interface.wg0.peer[0] (line 14)",
        f'{PATH}:18:16: interface.wg0.peer[1].allowed_ips[0]: "10.0.0.0/8" is already claimed by'
        " interface.wg0.peer[0] (line 15)",
        f'{PATH}:18:30: interface.wg0.peer[1].allowed_ips[1]: "10.0.0.1/8" has host bits set'
        ' (did you mean "10.0.0.0/8"?)',
    ]


def test_a_full_configuration(state_dir: str, tmp_path: Path) -> None:
    psk = tmp_path / "psk"
    psk.write_text(PrivateKey.generate().to_base64() + "\n")
    psk.chmod(0o600)
    text = f"""\
[bmx7]
runtime_dir = "/run/bmx7/"
announce = "wg.mesh_1"
trust = "listed"
trusted = ["{NODE_B.lower()}", "{NODE_A}", "{NODE_B}"]

[interface.wgmesh]
mesh = true
addresses = ["FD00:0::1/64", "10.9.0.1/24"]
announce_networks = ["10.9.0.0/24"]
accept_networks = ["10.0.0.0/8", "fd00::/8"]
backend = "userspace"

[[interface.wgmesh.peer]]
public_key = "{KEY_A}"
endpoint = "vpn.example.org.:51820"
allowed_ips = ["10.9.1.0/24", "10.9.1.7", "10.9.1.0/24", "::/0"]
persistent_keepalive = 25
preshared_key_file = "{psk}"
name = "vpn"

[interface.wg0]
key = "session"
private_key_file = "/nonexistent/wg0.key"
listen_port = 51820
mtu = 576
fwmark = 0xca6c
route_allowed_ips = false
peer = [
  {{ public_key = "{KEY_B}", endpoint = "[2001:db8::1]:1" }},
  {{ public_key = "{KEY_A}", endpoint = "192.0.2.1:65535" }},
]

[interface.wg1]

[names]
hosts_file = "/etc/netns/n1/hosts"
domain = "mesh.example"
"""
    result = parse(text, PATH, state_dir=state_dir)
    assert result == Config(
        path=PATH,
        bmx7=Bmx7Config(
            runtime_dir="/run/bmx7",
            announce="wg.mesh_1",
            trust="listed",
            trusted_nodes_dir="/etc/bmx7/trustedNodes",
            trusted=(NODE_A, NODE_B),
            denied=(),
        ),
        names=NamesConfig(hosts_file="/etc/netns/n1/hosts", domain="mesh.example"),
        interfaces=(
            InterfaceConfig(
                name="wgmesh",
                private_key_file=os.path.join(state_dir, "wgmesh.key"),
                listen_port=DEFAULT_MESH_PORT,
                addresses=("10.9.0.1/24", "fd00::1/64"),
                backend="userspace",
                mesh=True,
                announce_networks=("10.9.0.0/24",),
                accept_networks=("10.0.0.0/8", "fd00::/8"),
                peers=(
                    PeerConfig(
                        public_key=KEY_A,
                        allowed_ips=("10.9.1.0/24", "10.9.1.7/32", "::/0"),
                        endpoint=Endpoint("vpn.example.org.", 51820),
                        persistent_keepalive=25,
                        preshared_key_file=str(psk),
                        name="vpn",
                    ),
                ),
            ),
            InterfaceConfig(
                name="wg0",
                private_key_file="/nonexistent/wg0.key",
                key="session",
                listen_port=51820,
                mtu=576,
                fwmark=0xCA6C,
                route_allowed_ips=False,
                peers=(
                    PeerConfig(public_key=KEY_B, endpoint=Endpoint("2001:db8::1", 1)),
                    PeerConfig(public_key=KEY_A, endpoint=Endpoint("192.0.2.1", 65535)),
                ),
            ),
            InterfaceConfig(name="wg1", private_key_file=os.path.join(state_dir, "wg1.key")),
        ),
    )
    assert str(result.interfaces[1].peers[0].endpoint) == "[2001:db8::1]:1"
    # Positions are kept for later messages (mesh, apply) and left out of equality.
    assert result.positions[("interface", "wgmesh", "peer", 0, "endpoint")] == (16, 1)
    assert result.positions[("interface", "wg0", "peer", 1)] == (31, 3)
    assert result.positions[("interface", "wg1")] == (34, 12)
    assert not os.path.exists(state_dir)


@pytest.mark.parametrize("text", ["", "# nothing\n", "[interface]\n", "[bmx7]\n"])
def test_a_configuration_that_does_nothing_is_valid(text: str, state_dir: str) -> None:
    result = parse(text, PATH, state_dir=state_dir)
    assert result.interfaces == ()
    assert result.bmx7 == (Bmx7Config() if "bmx7" in text else None)


def _key_file(directory: Path, name: str, mode: int, content: str | None = None) -> Path:
    path = directory / name
    path.write_text(PrivateKey.generate().to_base64() + "\n" if content is None else content)
    path.chmod(mode)
    return path


def test_private_key_file_modes(tmp_path: Path, state_dir: str) -> None:
    os.mkdir(state_dir)
    _key_file(Path(state_dir), "wg0.key", 0o644)
    loose = _key_file(tmp_path, "loose.key", 0o640)
    good = _key_file(tmp_path, "good.key", 0o600)
    text = f"""\
[interface.wg0]
[interface.wg1]
private_key_file = "{loose}"
[interface.wg2]
private_key_file = "{good}"
[interface.wg3]
private_key_file = "{tmp_path}/missing.key"
[interface.wg4]
private_key_file = "{tmp_path}"
[interface.wg5]
key = "session"
private_key_file = "{loose}"
"""
    assert errors(text, state_dir) == [
        f'{PATH}:1:12: interface.wg0.private_key_file: "{state_dir}/wg0.key" (the default)'
        " is readable by group or others (mode 0644; chmod 600 it)",
        f'{PATH}:3:20: interface.wg1.private_key_file: "{loose}"'
        " is readable by group or others (mode 0640; chmod 600 it)",
        f'{PATH}:9:20: interface.wg4.private_key_file: "{tmp_path}" is not a regular file (a directory)',
    ]


def test_key_files_without_a_key_are_reported_without_their_content(tmp_path: Path, state_dir: str) -> None:
    secret = "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IHNlY3I"  # base64, one character short
    not_a_key = _key_file(tmp_path, "garbage.key", 0o600, secret + "\n")
    binary = tmp_path / "binary.key"
    binary.write_bytes(b"\xff\xfe" * 30)
    binary.chmod(0o600)
    text = f"""\
[interface.wg0]
private_key_file = "{not_a_key}"
[[interface.wg0.peer]]
public_key = "{KEY_A}"
preshared_key_file = "{binary}"
"""
    messages = errors(text, state_dir)
    assert messages == [
        f'{PATH}:2:20: interface.wg0.private_key_file: "{not_a_key}" does not contain a WireGuard key',
        f'{PATH}:5:22: interface.wg0.peer[0].preshared_key_file: "{binary}" does not contain a WireGuard key',
    ]
    assert not any(secret in m for m in messages)


def test_preshared_key_file_modes(tmp_path: Path, state_dir: str) -> None:
    loose = _key_file(tmp_path, "loose.psk", 0o604)
    good = _key_file(tmp_path, "good.psk", 0o400)
    text = f"""\
[[interface.wg0.peer]]
public_key = "{KEY_A}"
preshared_key_file = "{loose}"
[[interface.wg0.peer]]
public_key = "{KEY_B}"
preshared_key_file = "{good}"
"""
    assert errors(text, state_dir) == [
        f'{PATH}:3:22: interface.wg0.peer[0].preshared_key_file: "{loose}"'
        " is readable by group or others (mode 0604; chmod 600 it)",
    ]


def test_a_peer_with_the_interfaces_own_key(tmp_path: Path, state_dir: str) -> None:
    own = PrivateKey.generate()
    key_file = _key_file(tmp_path, "own.key", 0o600, own.to_base64())
    text = f"""\
[interface.wg0]
private_key_file = "{key_file}"
[[interface.wg0.peer]]
public_key = "{own.public_key()}"
[interface.wg1]
key = "session"
private_key_file = "{key_file}"
[[interface.wg1.peer]]
public_key = "{own.public_key()}"
"""
    messages = errors(text, state_dir)
    assert messages == [
        f'{PATH}:4:14: interface.wg0.peer[0].public_key: "{own.public_key()}"'
        " is this interface's own public key",
    ]
    assert own.to_base64() not in messages[0]


def test_a_node_id_with_a_trailing_line_break_is_refused(state_dir: str) -> None:
    assert errors(f'[bmx7]\ndenied = ["{NODE_A}\\n"]', state_dir) == [
        f'{PATH}:2:11: bmx7.denied[0]: "{NODE_A}\\n" is not a BMX7 node id (56 hexadecimal characters)'
    ]


def test_the_example_is_valid_and_does_nothing() -> None:
    result = load(str(EXAMPLE))
    assert result.interfaces == ()
    assert result.bmx7 is None


def _uncommented_example() -> str:
    # Settings are commented out as "#key = value" and "#[table]"; prose is "# text".
    return re.sub(r"^#(?=[\[a-z_])", "", EXAMPLE.read_text(), flags=re.M)


def test_the_example_shows_every_setting_and_is_valid_when_uncommented(state_dir: str) -> None:
    text = _uncommented_example()
    for section, settings in [
        ("[bmx7]", reader.BMX7_SETTINGS),
        ("[interface.wgmesh]", reader.INTERFACE_SETTINGS),
        ("[[interface.wgmesh.peer]]", reader.PEER_SETTINGS),
    ]:
        assert f"\n{section}\n" in text
        for name in settings:
            if name != "peer":
                assert re.search(rf"^{name} = ", text, re.M), f"{section} {name} is not in the example"
    # Everything but the preshared key file, which the example only names, is valid.
    assert errors(text, state_dir) == [
        f"{PATH}:{_line_of(text, 'preshared_key_file =')}:22: interface.wgmesh.peer[0].preshared_key_file:"
        ' "/etc/bmx7-wg/psk/vpn" does not exist'
    ]


def _line_of(text: str, start: str) -> int:
    return next(n for n, line in enumerate(text.split("\n"), 1) if line.startswith(start))


@pytest.mark.parametrize(
    ("settings", "model"),
    [
        (reader.BMX7_SETTINGS, Bmx7Config),
        (reader.INTERFACE_SETTINGS, InterfaceConfig),
        (reader.PEER_SETTINGS, PeerConfig),
    ],
)
def test_setting_defaults_are_the_models(settings: dict[str, reader.Setting], model: type) -> None:
    fields = {f.name: f.default for f in dataclasses.fields(model)}
    for name, setting in settings.items():
        if name == "peer":
            continue
        if fields[name] is dataclasses.MISSING:
            continue  # required, or derived (private_key_file)
        assert setting.default == fields[name], name


def test_load_reports_an_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as caught:
        load(missing)
    assert str(caught.value) == f"{missing}:1:1: cannot read the file: No such file or directory"


def test_load_reports_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'# \xc3\xa9\n[bmx7]\nannounce = "a\xffb"\n')
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    assert str(caught.value) == f"{path}:3:14: not valid UTF-8"


def test_load_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "bmx7-wg.toml"
    path.write_text("[interface.wg0]\nlisten_port = 51820\n")
    result = load(str(path), state_dir="/nonexistent")
    assert result.path == str(path)
    assert result.interfaces[0].private_key_file == "/nonexistent/wg0.key"


@pytest.mark.parametrize(
    ("path", "text"),
    [
        (("interface", "wg0", "peer", 1, "allowed_ips", 0), "interface.wg0.peer[1].allowed_ips[0]"),
        (("interface", "wg.0", "mtu"), 'interface."wg.0".mtu'),
        (("bmx7",), "bmx7"),
    ],
)
def test_format_key_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_key_path(path) == text


def test_reading_many_peers(state_dir: str) -> None:
    peers = "".join(
        f'[[interface.wg0.peer]]\npublic_key = "{PrivateKey(n.to_bytes(32, "big")).to_base64()}"\n'
        f'allowed_ips = ["10.{n >> 8 & 255}.{n & 255}.0/24"]\nendpoint = "192.0.2.1:{1 + n}"\n'
        for n in range(10_000)
    )
    result = parse(peers, PATH, state_dir=state_dir)
    assert len(result.interfaces[0].peers) == 10_000


def test_grace_defaults_to_30_seconds(state_dir: str) -> None:
    assert parse("[bmx7]\n", PATH, state_dir=state_dir).bmx7 == Bmx7Config(grace=30)
    cfg = parse("[bmx7]\ngrace = 0\n", PATH, state_dir=state_dir)
    assert cfg.bmx7 is not None and cfg.bmx7.grace == 0
    assert errors("[bmx7]\ngrace = -1\n", state_dir) == [
        f"{PATH}:2:9: bmx7.grace: -1 is out of range (0-86400)"
    ]
    assert errors('[bmx7]\ngrace = "30s"\n', state_dir) == [
        f'{PATH}:2:9: bmx7.grace: expected an integer, got a string ("30s")'
    ]


def test_names_settings(state_dir: str) -> None:
    assert parse("", PATH).names == NamesConfig(hosts_file="")  # the tests' BMX7_WG_HOSTS_FILE
    assert parse('[names]\nhosts_file = ""\n', PATH).names.hosts_file == ""
    assert parse('[names]\nhosts_file = "/etc//hosts"\n', PATH).names.hosts_file == "/etc/hosts"
    assert errors('[names]\nhosts_file = "hosts"\ndomain = "Mesh"\n', state_dir) == [
        f'{PATH}:2:14: names.hosts_file: "hosts" is not an absolute path',
        f'{PATH}:3:10: names.domain: "Mesh" must be written in lower case'
        " (host names are compared case-insensitively)",
    ]
    assert errors('[names]\ndomain = "a..b"\n', state_dir) == [
        f"{PATH}:2:10: names.domain: \"a..b\" has '', which is not a DNS label"
        " (1-63 characters of a-z, 0-9 and '-', not at either end)"
    ]
    assert errors('[names]\ndomain = "-x.\\u001b"\n', state_dir)[0].startswith(f"{PATH}:2:10: names.domain: ")
