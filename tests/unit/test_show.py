"""`show`'s JSON and text, from an observed state built by hand (show.py is pure)."""

from __future__ import annotations

import json

import pytest

from bmx7_wg import show
from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState, Peer, PeerStats

# RFC 7748, section 6.1: Alice's private key and the public key `wg pubkey` prints for it.
PRIVATE = PrivateKey(bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"))
PUBLIC = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
VPN = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
MESH = "TrMvSoP4jYQlY6RIzBgbssQqY3vxI2Pi+y71lOWWXX0="
NODE = "89888EDF9B64A255C3AB1CD3CA9A0123456789ABCDEF0123456789AB"
HANDSHAKE = 1_700_000_000.5

OBSERVED = ObservedState(
    {
        "wg0": ObservedInterface(
            name="wg0",
            ifindex=5,
            implementation="userspace",
            managed=True,
            mtu=1420,
            up=True,
            addresses=frozenset({"fd77::1/128", "10.9.0.1/24"}),
            routes=frozenset({"fd77::/16"}),
            device=Device(
                private_key=PRIVATE,
                listen_port=51820,
                fwmark=0x42,
                peers={
                    VPN: Peer(
                        VPN,
                        frozenset({"fd00::/64", "10.9.1.0/24"}),
                        "192.0.2.1:51820",
                        25,
                        PresharedKey(b"\1" * 32),
                    ),
                    MESH: Peer(MESH),
                },
                stats={VPN: PeerStats(HANDSHAKE, rx_bytes=1536, tx_bytes=3 * 1024 * 1024)},
            ),
        ),
        "eth9": ObservedInterface(
            name="eth9",
            ifindex=3,
            implementation=None,
            managed=False,
            mtu=1500,
            up=False,
            addresses=frozenset(),
            routes=frozenset(),
            device=None,
        ),
    }
)
LABELS = {"wg0": {VPN: "vpn", MESH: f"n2|{NODE}"}}
HOST_NAMES = {"fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a": ("n2.mesh", "89888edf.mesh")}


def test_json() -> None:
    data = show.interfaces_json(OBSERVED, LABELS, HOST_NAMES)
    assert data == [
        {
            "name": "eth9",
            "backend": None,
            "managed": False,
            "up": False,
            "mtu": 1500,
            "addresses": [],
            "routes": [],
            "public_key": None,
            "listen_port": None,
            "fwmark": 0,
            "peers": [],
        },
        {
            "name": "wg0",
            "backend": "userspace",
            "managed": True,
            "up": True,
            "mtu": 1420,
            "addresses": ["10.9.0.1/24", "fd77::1/128"],
            "routes": ["fd77::/16"],
            "public_key": PUBLIC,
            "listen_port": 51820,
            "fwmark": 0x42,
            "peers": [
                {
                    "public_key": MESH,
                    "name": "n2",
                    "endpoint": None,
                    "allowed_ips": [],
                    "persistent_keepalive": 0,
                    "preshared_key": False,
                    "latest_handshake": 0,
                    "rx_bytes": 0,
                    "tx_bytes": 0,
                    "node_id": NODE,
                    "short_id": "89888EDF",
                    "tunnel_address": "fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a",
                    "host_names": ["n2.mesh", "89888edf.mesh"],
                },
                {
                    "public_key": VPN,
                    "name": "vpn",
                    "endpoint": "192.0.2.1:51820",
                    "allowed_ips": ["10.9.1.0/24", "fd00::/64"],
                    "persistent_keepalive": 25,
                    "preshared_key": True,
                    "latest_handshake": 1_700_000_000,
                    "rx_bytes": 1536,
                    "tx_bytes": 3145728,
                },
            ],
        },
    ]
    text = json.dumps(data)
    assert PRIVATE.raw.hex() not in text and PRIVATE.to_base64() not in text
    assert (b"\1" * 32).hex() not in text


def test_text() -> None:
    data = show.interfaces_json(OBSERVED, LABELS, HOST_NAMES)
    assert show.render_text(data, now=HANDSHAKE + 3725) == "\n".join(
        [
            "interface: eth9 (not WireGuard, not managed)",
            "  state: down, mtu 1500",
            "  addresses: (none)",
            "",
            "interface: wg0 (userspace, managed)",
            f"  public key: {PUBLIC}",
            "  listening port: 51820",
            "  fwmark: 0x42",
            "  state: up, mtu 1420",
            "  addresses: 10.9.0.1/24, fd77::1/128",
            "",
            f"  peer: {MESH} (n2)",
            "    mesh node: 89888EDF  tunnel address: fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a",
            "    names: n2.mesh, 89888edf.mesh",
            "    allowed ips: (none)",
            "    latest handshake: never",
            "    transfer: 0 B received, 0 B sent",
            "",
            f"  peer: {VPN} (vpn)",
            "    endpoint: 192.0.2.1:51820",
            "    allowed ips: 10.9.1.0/24, fd00::/64",
            "    latest handshake: 1 h 2 min ago",
            "    transfer: 1.50 KiB received, 3.00 MiB sent",
            "    persistent keepalive: every 25 seconds",
        ]
    )


@pytest.mark.parametrize(
    ("ago", "text"),
    [(0, "0 seconds ago"), (1, "1 second ago"), (59, "59 seconds ago"), (61, "1 min 1 s ago"),
     (7322, "2 h 2 min ago"), (-5, "0 seconds ago")],
)
def test_handshake_age(ago: int, text: str) -> None:
    data = show.interfaces_json(OBSERVED, {})
    assert f"latest handshake: {text}" in show.render_text(data, now=int(HANDSHAKE) + ago)


def test_nothing_to_show() -> None:
    assert show.interfaces_json(ObservedState({}), {}) == []
    assert show.render_text([]) == ""
