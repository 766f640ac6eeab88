"""The kernel WireGuard message conversions, on messages captured from Debian's kernel.

The captures come from `WireGuard().info()` inside vm/run (Debian bookworm's kernel
6.1) with pyroute2 0.7.2 and 0.9.7, which parse them alike; keys arrive as base64
bytes. The keys below are throwaway test keys.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest

from bmx7_wg.errors import ApplyError, BackendUnavailable
from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.state import Device, Peer, PeerStats
from bmx7_wg.wireguard.kernel import (
    MAX_ALLOWED_IPS_PER_ENTRY,
    MAX_REQUEST_BYTES,
    WGPEER_F_REMOVE_ME,
    WGPEER_F_REPLACE_ALLOWEDIPS,
    WGPEER_F_UPDATE_ONLY,
    ZERO_KEY,
    KernelWireGuardError,
    KernelWireGuardUnavailable,
    MalformedMessage,
    device_from_messages,
    set_requests,
)

PRIVATE = "MKBs4/oICLrYdHAuM0j1gGB084/rb4gD3vUCxoZWlH0="
PEER1 = "IYA3gLzsuVnhVcBVcHs5wMsOFtvpzrldm8d6ibLK/Qc="
PEER2 = "5LHWBXi1nK/3z5fRUhiO2sIup5FOAlZlsgKXErOArCQ="
PSK = "/dYgz4UtGY465lBZE7KK0p5LKb+h0VFV7ANANzwDfs4="

# `wg set wgc0 private-key K listen-port 51000 fwmark 0x4d
#    peer PEER1 preshared-key P allowed-ips 10.0.0.2/32,fd77:1::/64 endpoint 127.0.0.1:51001
#        persistent-keepalive 1
#    peer PEER2 endpoint [fd70::2]:40456 allowed-ips 192.168.0.0/16`, after one handshake.
CAPTURED: list[dict[str, Any]] = [{
    "cmd": 0, "version": 1, "reserved": 0,
    "attrs": [
        ("WGDEVICE_A_LISTEN_PORT", 51000),
        ("WGDEVICE_A_FWMARK", 77),
        ("WGDEVICE_A_IFINDEX", 3),
        ("WGDEVICE_A_IFNAME", "wgc0"),
        ("WGDEVICE_A_PRIVATE_KEY", PRIVATE.encode()),
        ("WGDEVICE_A_PUBLIC_KEY", b"CijJpsim+oacF5cnQF4lzPl9BGUctIyAQD0t7yp+dz0="),
        ("WGDEVICE_A_PEERS", [
            {"attrs": [
                ("WGPEER_A_PUBLIC_KEY", PEER1.encode()),
                ("WGPEER_A_PRESHARED_KEY", PSK.encode()),
                ("WGPEER_A_LAST_HANDSHAKE_TIME", {
                    "tv_sec": 1795547245, "tv_nsec": 253937800,
                    "latest handshake": "Sat Nov 24 18:27:25 2026",
                }),
                ("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 1),
                ("WGPEER_A_TX_BYTES", 244),
                ("WGPEER_A_RX_BYTES", 92),
                ("WGPEER_A_PROTOCOL_VERSION", 1),
                ("WGPEER_A_ENDPOINT",
                 {"family": 2, "port": 51001, "addr": "127.0.0.1", "__pad": ()}),
                ("WGPEER_A_ALLOWEDIPS", [
                    {"attrs": [
                        ("WGALLOWEDIP_A_CIDR_MASK", 32),
                        ("WGALLOWEDIP_A_FAMILY", 2),
                        ("WGALLOWEDIP_A_IPADDR", "0a:00:00:02"),
                    ], "addr": "10.0.0.2/32"},
                    {"attrs": [
                        ("WGALLOWEDIP_A_CIDR_MASK", 64),
                        ("WGALLOWEDIP_A_FAMILY", 10),
                        ("WGALLOWEDIP_A_IPADDR", "fd:77:00:01:00:00:00:00:00:00:00:00:00:00:00:00"),
                    ], "addr": "fd77:1::/64"},
                ]),
            ]},
            {"attrs": [
                ("WGPEER_A_PUBLIC_KEY", PEER2.encode()),
                ("WGPEER_A_PRESHARED_KEY", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
                ("WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 0, "tv_nsec": 0}),
                ("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 0),
                ("WGPEER_A_TX_BYTES", 0),
                ("WGPEER_A_RX_BYTES", 0),
                ("WGPEER_A_PROTOCOL_VERSION", 1),
                ("WGPEER_A_ENDPOINT", {
                    "family": 10, "port": 40456, "flowinfo": 0, "addr": "fd70::2", "scope_id": 0,
                }),
                ("WGPEER_A_ALLOWEDIPS", [
                    {"attrs": [
                        ("WGALLOWEDIP_A_CIDR_MASK", 16),
                        ("WGALLOWEDIP_A_FAMILY", 2),
                        ("WGALLOWEDIP_A_IPADDR", "c0:a8:00:00"),
                    ], "addr": "192.168.0.0/16"},
                ]),
            ]},
        ]),
    ],
}]

# `ip link add wgc2 type wireguard` and nothing else.
CAPTURED_FRESH: list[dict[str, Any]] = [{
    "cmd": 0, "version": 1, "reserved": 0,
    "attrs": [
        ("WGDEVICE_A_LISTEN_PORT", 0),
        ("WGDEVICE_A_FWMARK", 0),
        ("WGDEVICE_A_IFINDEX", 5),
        ("WGDEVICE_A_IFNAME", "wgc2"),
    ],
}]


def allowed(mask: int, family: int, hexaddr: str) -> dict[str, Any]:
    return {"attrs": [
        ("WGALLOWEDIP_A_CIDR_MASK", mask),
        ("WGALLOWEDIP_A_FAMILY", family),
        ("WGALLOWEDIP_A_IPADDR", hexaddr),
    ]}


def device_attrs(extra: list[Any]) -> dict[str, Any]:
    return {"cmd": 0, "version": 1, "reserved": 0, "attrs": [
        ("WGDEVICE_A_LISTEN_PORT", 7),
        ("WGDEVICE_A_FWMARK", 0),
        ("WGDEVICE_A_IFINDEX", 4),
        ("WGDEVICE_A_IFNAME", "wgx1"),
        *extra,
    ]}


# The shape of a dump too large for one message (seen with 3,000 allowed IPs on one
# peer): every message repeats the device, and a peer cut short continues in the next
# message as an entry with only its public key and more allowed IPs.
CAPTURED_SPLIT = [
    device_attrs([("WGDEVICE_A_PEERS", [{"attrs": [
        ("WGPEER_A_PUBLIC_KEY", PEER1.encode()),
        ("WGPEER_A_PRESHARED_KEY", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
        ("WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 0, "tv_nsec": 0}),
        ("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 0),
        ("WGPEER_A_TX_BYTES", 0),
        ("WGPEER_A_RX_BYTES", 0),
        ("WGPEER_A_PROTOCOL_VERSION", 1),
        ("WGPEER_A_ALLOWEDIPS", [allowed(24, 2, "0a:00:00:00"), allowed(24, 2, "0a:00:01:00")]),
    ]}])]),
    device_attrs([("WGDEVICE_A_PEERS", [{"attrs": [
        ("WGPEER_A_PUBLIC_KEY", PEER1.encode()),
        ("WGPEER_A_ALLOWEDIPS", [allowed(24, 2, "0a:00:02:00")]),
    ]}])]),
    device_attrs([("WGDEVICE_A_PEERS", [
        {"attrs": [
            ("WGPEER_A_PUBLIC_KEY", PEER1.encode()),
            ("WGPEER_A_ALLOWEDIPS", [allowed(24, 2, "0a:00:03:00")]),
        ]},
        {"attrs": [
            ("WGPEER_A_PUBLIC_KEY", PEER2.encode()),
            ("WGPEER_A_PRESHARED_KEY", b"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("WGPEER_A_LAST_HANDSHAKE_TIME", {"tv_sec": 0, "tv_nsec": 0}),
            ("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", 0),
            ("WGPEER_A_TX_BYTES", 0),
            ("WGPEER_A_RX_BYTES", 0),
            ("WGPEER_A_PROTOCOL_VERSION", 1),
            ("WGPEER_A_ENDPOINT", {"family": 2, "port": 5, "addr": "1.2.3.4", "__pad": []}),
            ("WGPEER_A_ALLOWEDIPS", [allowed(16, 2, "0b:c8:00:00")]),
        ]},
    ])]),
]


# --- reading ------------------------------------------------------------------------


def test_captured_device() -> None:
    device = device_from_messages(CAPTURED)
    assert device == Device(
        private_key=PrivateKey.from_base64(PRIVATE),
        listen_port=51000,
        fwmark=0x4D,
        peers={
            PEER1: Peer(
                public_key=PEER1,
                allowed_ips=frozenset({"10.0.0.2/32", "fd77:1::/64"}),
                endpoint="127.0.0.1:51001",
                persistent_keepalive=1,
                preshared_key=PresharedKey(base64.b64decode(PSK)),
            ),
            PEER2: Peer(
                public_key=PEER2,
                allowed_ips=frozenset({"192.168.0.0/16"}),
                endpoint="[fd70::2]:40456",
            ),
        },
    )
    assert device.stats == {
        PEER1: PeerStats(last_handshake=1795547245.2539378, rx_bytes=92, tx_bytes=244),
        PEER2: PeerStats(),
    }


def test_captured_device_as_plain_lists_and_strings() -> None:
    # The same dump copied as JSON would hold it: lists instead of tuples, str keys.
    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        if isinstance(value, bytes):
            return value.decode()
        return value

    assert device_from_messages(plain(CAPTURED)) == device_from_messages(CAPTURED)


def test_fresh_device_is_empty() -> None:
    assert device_from_messages(CAPTURED_FRESH) == Device()


def test_zero_private_key_reads_as_none() -> None:
    messages = copy.deepcopy(CAPTURED_FRESH)
    messages[0]["attrs"].append(("WGDEVICE_A_PRIVATE_KEY", ZERO_KEY.encode()))
    assert device_from_messages(messages).private_key is None


def test_split_dump_is_merged() -> None:
    device = device_from_messages(CAPTURED_SPLIT)
    assert device.listen_port == 7
    assert device.peers == {
        PEER1: Peer(PEER1, frozenset({"10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"})),
        PEER2: Peer(PEER2, frozenset({"11.200.0.0/16"}), "1.2.3.4:5"),
    }


def test_ipv6_spelling_matches_ipaddress() -> None:
    messages = device_attrs([("WGDEVICE_A_PEERS", [{"attrs": [
        ("WGPEER_A_PUBLIC_KEY", PEER1.encode()),
        ("WGPEER_A_ENDPOINT", {"family": 10, "port": 1, "addr": "::ffff:1.2.3.4"}),
        ("WGPEER_A_ALLOWEDIPS",
         [allowed(128, 10, "00:00:00:00:00:00:00:00:00:00:ff:ff:01:02:03:04")]),
    ]}])])
    peer = device_from_messages([messages]).peers[PEER1]
    assert peer.endpoint == "[::ffff:102:304]:1"
    assert peer.allowed_ips == frozenset({"::ffff:102:304/128"})


@pytest.mark.parametrize("broken", [
    [("WGPEER_A_ENDPOINT", {"family": 2, "port": 1, "addr": "1.2.3.4"})],  # no public key
    [("WGPEER_A_PUBLIC_KEY", b"short")],
    [("WGPEER_A_PUBLIC_KEY", PEER1.encode()),
     ("WGPEER_A_ALLOWEDIPS", [{"attrs": [("WGALLOWEDIP_A_FAMILY", 2)]}])],
])
def test_malformed_messages_raise(broken: list[Any]) -> None:
    with pytest.raises(MalformedMessage):
        device_from_messages([device_attrs([("WGDEVICE_A_PEERS", [{"attrs": broken}])])])


# --- writing ------------------------------------------------------------------------


def peer_entries(request: list[Any]) -> list[dict[str, Any]]:
    return [dict(e["attrs"]) for name, v in request if name == "WGDEVICE_A_PEERS" for e in v]


def key() -> str:
    return PrivateKey.generate().public_key()


def test_no_change_sends_nothing() -> None:
    assert set_requests(DeviceChange("wg0")) == []


def test_device_settings() -> None:
    private = PrivateKey.generate()
    (request,) = set_requests(DeviceChange("wg0", private_key=private, listen_port=0, fwmark=7))
    assert request == [
        ("WGDEVICE_A_IFNAME", "wg0"),
        ("WGDEVICE_A_PRIVATE_KEY", private.to_base64()),
        ("WGDEVICE_A_LISTEN_PORT", 0),
        ("WGDEVICE_A_FWMARK", 7),
    ]


def test_remove_add_update_flags_and_fields() -> None:
    gone, new, changed = key(), key(), key()
    psk = PresharedKey(bytes(range(32)))
    add = Peer(new, frozenset({"10.0.0.0/24"}), "[fd70::1]:40456", 25, psk)
    update = Peer(changed, frozenset({"10.1.0.0/24"}), "192.0.2.1:1", 0, None)
    (request,) = set_requests(DeviceChange(
        "wg0", remove_peers=(gone,), add_peers=(add,),
        update_peers=((update, ("persistent_keepalive", "preshared_key")),),
    ))
    assert request[0] == ("WGDEVICE_A_IFNAME", "wg0")
    removed, added, updated = peer_entries(request)
    assert removed == {"WGPEER_A_PUBLIC_KEY": gone, "WGPEER_A_FLAGS": WGPEER_F_REMOVE_ME}
    assert added["WGPEER_A_FLAGS"] == WGPEER_F_REPLACE_ALLOWEDIPS
    assert added["WGPEER_A_ENDPOINT"] == {"addr": "fd70::1", "port": 40456}
    assert added["WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL"] == 25
    assert added["WGPEER_A_PRESHARED_KEY"] == base64.b64encode(psk.raw).decode()
    assert [a["attrs"] for a in added["WGPEER_A_ALLOWEDIPS"]] == [[
        ("WGALLOWEDIP_A_FAMILY", 2),
        ("WGALLOWEDIP_A_IPADDR", bytes([10, 0, 0, 0])),
        ("WGALLOWEDIP_A_CIDR_MASK", 24),
    ]]
    # Only the changed fields, for an existing peer only; a preshared key now None is zeroed.
    assert updated == {
        "WGPEER_A_PUBLIC_KEY": changed,
        "WGPEER_A_FLAGS": WGPEER_F_UPDATE_ONLY,
        "WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL": 0,
        "WGPEER_A_PRESHARED_KEY": ZERO_KEY,
    }


def test_update_of_allowed_ips_replaces_them() -> None:
    peer = Peer(key(), frozenset())
    (request,) = set_requests(DeviceChange("wg0", update_peers=((peer, ("allowed_ips",)),)))
    (entry,) = peer_entries(request)
    assert entry["WGPEER_A_FLAGS"] == WGPEER_F_UPDATE_ONLY | WGPEER_F_REPLACE_ALLOWEDIPS
    assert entry["WGPEER_A_ALLOWEDIPS"] == []


def test_an_added_peer_sends_no_empty_fields() -> None:
    peer = Peer(key())
    (request,) = set_requests(DeviceChange("wg0", add_peers=(peer,)))
    (entry,) = peer_entries(request)
    assert set(entry) == {"WGPEER_A_PUBLIC_KEY", "WGPEER_A_FLAGS", "WGPEER_A_ALLOWEDIPS"}


def test_unknown_endpoint_is_left_alone() -> None:
    peer = Peer(key(), endpoint=None)
    (request,) = set_requests(DeviceChange("wg0", update_peers=((peer, ("endpoint",)),)))
    assert "WGPEER_A_ENDPOINT" not in peer_entries(request)[0]


def test_many_peers_are_batched_and_never_replace_all() -> None:
    private = PrivateKey.generate()
    peers = tuple(Peer(key(), frozenset({f"10.{i // 256}.{i % 256}.0/24"})) for i in range(1000))
    requests = set_requests(DeviceChange("wg0", private_key=private, add_peers=peers))
    assert len(requests) > 1
    assert [name for name, _ in requests[0]][:2] == ["WGDEVICE_A_IFNAME", "WGDEVICE_A_PRIVATE_KEY"]
    for request in requests:
        assert request[0] == ("WGDEVICE_A_IFNAME", "wg0")
        assert "WGDEVICE_A_FLAGS" not in dict(request)  # never WGDEVICE_F_REPLACE_PEERS
    assert sum("WGDEVICE_A_PRIVATE_KEY" in dict(r) for r in requests) == 1
    sent = [e["WGPEER_A_PUBLIC_KEY"] for r in requests for e in peer_entries(r)]
    assert sent == [p.public_key for p in peers]


def test_many_allowed_ips_continue_in_more_entries() -> None:
    cidrs = frozenset(f"172.16.{i // 256}.{i % 256}/32" for i in range(1200))
    peer = Peer(key(), cidrs)
    requests = set_requests(DeviceChange("wg0", add_peers=(peer,)))
    entries = [e for r in requests for e in peer_entries(r)]
    assert len(entries) == 3
    assert entries[0]["WGPEER_A_FLAGS"] == WGPEER_F_REPLACE_ALLOWEDIPS
    # Continuations only add: replacing again would drop the first part.
    assert [e["WGPEER_A_FLAGS"] for e in entries[1:]] == [WGPEER_F_UPDATE_ONLY] * 2
    assert all(len(e["WGPEER_A_ALLOWEDIPS"]) <= MAX_ALLOWED_IPS_PER_ENTRY for e in entries)
    assert sum(len(e["WGPEER_A_ALLOWEDIPS"]) for e in entries) == 1200


def test_requests_round_trip_through_pyroute2() -> None:
    """Encode each request with pyroute2's own message class, decode the bytes again and
    read them back with the dump converter: the peers come out as they went in."""
    wireguard = pytest.importorskip("pyroute2.netlink.generic.wireguard")
    private = PrivateKey.generate()
    peers = tuple(
        Peer(key(), frozenset({f"10.0.{i}.0/24", f"fd77::{i + 1:x}/128"}),
             f"192.0.2.{i}:{1000 + i}" if i % 2 else f"[fd70::{i:x}]:{1000 + i}",
             i % 30, PresharedKey(bytes([i]) * 32) if i % 3 else None)
        for i in range(1, 200)
    )
    big = Peer(key(), frozenset(f"172.16.{i // 256}.{i % 256}/32" for i in range(1100)))
    decoded = []
    for attrs in set_requests(DeviceChange("wg0", private_key=private, listen_port=51820,
                                           add_peers=(*peers, big))):
        msg = wireguard.wgmsg()
        msg["cmd"] = wireguard.WG_CMD_SET_DEVICE
        msg["version"] = wireguard.WG_GENL_VERSION
        msg["attrs"] = [list(a) for a in attrs]
        msg.encode()
        assert len(msg.data) <= MAX_REQUEST_BYTES + 4096
        back = wireguard.wgmsg(msg.data)
        back.decode()
        decoded.append(back)
    device = device_from_messages(decoded)
    assert device.private_key is not None and device.private_key.raw == private.raw
    assert device.listen_port == 51820
    assert device.peers == {p.public_key: p for p in (*peers, big)}


# --- errors -------------------------------------------------------------------------


def test_error_names_interface_and_operation() -> None:
    err = KernelWireGuardError("wg0", "add peer X", "No such device", 19)
    assert str(err) == "wg0: cannot add peer X: No such device"
    assert isinstance(err, ApplyError)
    assert err.errno == 19


def test_unavailable_is_a_backend_error() -> None:
    err = KernelWireGuardUnavailable("kernel", "open", "no WireGuard")
    assert isinstance(err, BackendUnavailable) and isinstance(err, ApplyError)
    assert err.exit_code == BackendUnavailable.exit_code


def test_request_description_has_no_key_material() -> None:
    from bmx7_wg.wireguard.kernel import _describe_request

    private = PrivateKey.generate()
    psk = PresharedKey(bytes(range(32)))
    peer = Peer(key(), frozenset({"10.0.0.0/24"}), preshared_key=psk)
    (request,) = set_requests(DeviceChange("wg0", private_key=private, add_peers=(peer,)))
    text = _describe_request(request)
    assert text == f"set the private key, add peer {peer.public_key}"
    assert private.to_base64() not in text
    assert base64.b64encode(psk.raw).decode() not in text
