"""Fuzzing what other mesh nodes write: announcements and the mesh view built from them.

Announcements arrive from nodes we do not control. Every payload must parse to an
`Announcement` or be refused with an `AnnouncementError`; the mesh view built from any
set of them must keep its guarantees: a peer's tunnel address comes only from its own
node id, no network outside `accept_networks` (or inside the mesh prefix) is routed to
a peer, no two peers share an allowed IP or a key, and the planner touches only the mesh
interface.
"""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from bmx7_wg.base.nodeid import MESH_NETWORK, normalize_node_id, primary_address, tunnel_address
from bmx7_wg.config.reader import parse as parse_config
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import (
    MAX_NETWORKS,
    MAX_SIZE,
    AnnouncementError,
    format_announcement,
    parse_announcement,
)
from bmx7_wg.mesh.view import Clearance, TrustPolicy, mesh_peers, reservations
from bmx7_wg.plan.desired import InterfaceInputs, desired_state
from bmx7_wg.plan.planner import plan
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState
from tests.fuzz.profile import FUZZ, count

KEYS = [PrivateKey.generate().public_key() for _ in range(6)]
OWN = PrivateKey.generate()
OWN_ID = "F" * 56
NODE_IDS = [f"{i:02X}" * 28 for i in range(1, 9)]

nets = st.sampled_from(
    [
        "10.9.0.0/24",
        "10.0.0.0/8",
        "0.0.0.0/0",
        "::/0",
        "fd77::/16",
        "fd77::1/128",
        "fd77:1::/32",
        "fd00::/64",
        "10.1.2.0/24",
        "192.168.0.0/16",
        "fd70::/16",
        "10.9.0.1/32",
        "::ffff:10.0.0.1/128",
    ]
) | st.builds(
    lambda a, p: str(ipaddress.ip_network((a, p), strict=False)),
    st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
    st.integers(0, 32),
)


@st.composite
def valid_payloads(draw: st.DrawFn) -> bytes:
    networks = draw(st.lists(nets, max_size=MAX_NETWORKS, unique=True))
    try:
        return format_announcement(draw(st.sampled_from(KEYS)), draw(st.integers(1, 65535)), networks)
    except AnnouncementError:
        return format_announcement(draw(st.sampled_from(KEYS)), 40456)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_payloads()))
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["flip", "insert", "delete", "dup_line", "truncate", "splice"]))
        pos = draw(st.integers(0, len(data)))
        if kind == "flip" and pos < len(data):
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "insert":
            data[pos:pos] = draw(
                st.sampled_from(
                    [
                        b"\n",
                        b"\r",
                        b"\x00",
                        b" ",
                        b"net 10.0.0.0/8\n",
                        b"key ",
                        b"port 0\n",
                        b"\xff",
                        b"\t",
                        b"bmx7-wg 2\n",
                        b"net fd77::1/128\n",
                        b"port 040456\n",
                        b"\xc3\xa9",
                    ]
                )
                | st.binary(max_size=8)
            )
        elif kind == "delete":
            del data[pos : pos + draw(st.integers(1, 10))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "splice":
            data[pos:pos] = draw(valid_payloads())
        else:
            lines = bytes(data).split(b"\n")
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i])
            data = bytearray(b"\n".join(lines))
    return bytes(data)


@st.composite
def encoded_payloads(draw: st.DrawFn) -> bytes:
    """A valid announcement re-encoded (UTF-16, BOM, CRLF, NUL padding, oversize)."""
    text = draw(valid_payloads()).decode("ascii")
    how = draw(st.sampled_from(["utf-16", "utf-32", "bom", "crlf", "nul", "oversize", "latin1", "noeol"]))
    if how in ("utf-16", "utf-32"):
        return text.encode(how)
    if how == "bom":
        return b"\xef\xbb\xbf" + text.encode()
    if how == "crlf":
        return text.replace("\n", "\r\n").encode()
    if how == "nul":
        return text.encode() + b"\x00" * draw(st.integers(1, 64))
    if how == "oversize":
        return text.encode() + b"net 10.0.0.0/8\n" * draw(st.integers(70, 1000))
    if how == "latin1":
        return (text + "net é\n").encode("latin-1")
    return text.rstrip("\n").encode()


payloads = st.one_of(
    st.binary(max_size=MAX_SIZE + 64),
    valid_payloads(),
    mutated_payloads(),
    encoded_payloads(),
    st.binary(min_size=MAX_SIZE - 8, max_size=MAX_SIZE + 8),
)
# A mesh is mostly well-behaved nodes with some hostile ones: weigh valid payloads up so
# that the guarantees are checked on many peers, not only on refusals.
mesh_payloads = st.one_of(valid_payloads(), valid_payloads(), payloads)


def check_parse(data: bytes) -> None:
    try:
        ann = parse_announcement(data)
    except AnnouncementError as exc:
        assert exc.reason and len(exc.reason) < 200, exc.reason
        return
    count("announce: accepted")
    assert len(data) <= MAX_SIZE
    assert 1 <= ann.port <= 65535
    assert len(ann.networks) <= MAX_NETWORKS and len(set(ann.networks)) == len(ann.networks)
    # One value, one encoding: what was accepted writes back to the same bytes (networks sorted).
    again = format_announcement(ann.public_key, ann.port, ann.networks)
    assert parse_announcement(again) == ann
    assert sorted(again.split(b"\n")) == sorted(data.split(b"\n"))


@FUZZ
@given(data=payloads)
def test_announcement_parser(data: bytes) -> None:
    count("announce: payloads parsed")
    check_parse(data)


# --------------------------------------------------------------------- the mesh view

node_ids = st.one_of(
    st.sampled_from(NODE_IDS),
    st.sampled_from(NODE_IDS).map(str.lower),
    st.just(OWN_ID),
    st.sampled_from(
        ["", "X" * 56, "A" * 55, "A" * 57, NODE_IDS[0] + "\n", " " + NODE_IDS[1], "../" + "A" * 53]
    ),
    st.text(max_size=60),
)
accept_lists = st.lists(
    st.sampled_from(["10.0.0.0/8", "fd00::/8", "0.0.0.0/0", "::/0", "10.9.0.0/24"]), max_size=3, unique=True
)


@FUZZ
@given(
    received=st.lists(st.tuples(node_ids, mesh_payloads), max_size=12),
    accept=accept_lists,
    mode=st.sampled_from(["bmx7", "all", "listed"]),
    trusted=st.sets(st.sampled_from(NODE_IDS), max_size=4),
    denied=st.sets(st.sampled_from(NODE_IDS), max_size=3),
    levels=st.none() | st.dictionaries(st.sampled_from(NODE_IDS), st.sampled_from([0, 2, 3]), max_size=6),
)
def test_mesh_view_guarantees(
    received: list[tuple[str, bytes]],
    accept: list[str],
    mode: str,
    trusted: set[str],
    denied: set[str],
    levels: dict[str, int] | None,
) -> None:
    count("meshview: sets of received announcements")
    policy = TrustPolicy(mode, frozenset(trusted), frozenset(denied), levels)  # type: ignore[arg-type]
    view = Clearance((), OWN.public_key())(mesh_peers(OWN_ID, received, policy, accept).peers)
    accept_nets = [ipaddress.ip_network(a) for a in accept]
    mesh_net = ipaddress.ip_network(MESH_NETWORK)
    seen_ips: set[str] = set()
    seen_keys: set[str] = set()
    for peer in view.peers:
        count("meshview: peers checked")
        node_id = peer.node_id
        assert node_id is not None and normalize_node_id(node_id) == node_id and len(node_id) == 56
        assert node_id != OWN_ID and node_id not in denied
        assert policy.refusal(node_id) is None
        assert peer.public_key != OWN.public_key()
        assert peer.public_key not in seen_keys
        seen_keys.add(peer.public_key)
        own_address = f"{tunnel_address(node_id)}/128"
        assert own_address in peer.allowed_ips
        assert peer.endpoint is not None and peer.endpoint.startswith(f"[{primary_address(node_id)}]:")
        for ip in peer.allowed_ips:
            assert ip not in seen_ips, f"{ip} given to two peers"
            seen_ips.add(ip)
            if ip == own_address:
                continue
            net = ipaddress.ip_network(ip)
            # Only its own tunnel address may lie in the mesh prefix; everything else must
            # be inside accept_networks.
            assert not (net.version == 6 and net.overlaps(mesh_net)), ip  # type: ignore[arg-type]
            assert any(net.version == a.version and net.subnet_of(a) for a in accept_nets), ip  # type: ignore[arg-type]
    # Deterministic whatever the order the files were read in (file names in a directory
    # are unique, so only then is the order free).
    if len({node_id.upper() for node_id, _ in received}) == len(received):
        again = mesh_peers(OWN_ID, list(reversed(received)), policy, accept)
        assert Clearance((), OWN.public_key())(again.peers) == view


MESH_CONFIG = """[bmx7]
trust = "all"
[interface.wgmesh]
mesh = true
key = "session"
accept_networks = ["10.0.0.0/8", "fd00::/8"]
[[interface.wgmesh.peer]]
public_key = "{key}"
allowed_ips = ["10.9.9.0/24"]
"""


@FUZZ
@given(
    received=st.lists(st.tuples(st.sampled_from(NODE_IDS), mesh_payloads), max_size=10),
    foreign=st.lists(st.sampled_from(["eth0", "wg0", "wgother", "lo"]), unique=True, max_size=3),
)
def test_hostile_mesh_never_reaches_other_interfaces(
    received: list[tuple[str, bytes]], foreign: list[str]
) -> None:
    count("meshview+planner: hostile meshes planned")
    cfg = parse_config(MESH_CONFIG.format(key=KEYS[0]), "/etc/bmx7-wg.toml")
    iface = cfg.interfaces[0]
    view = mesh_peers(OWN_ID, received, TrustPolicy("all"), iface.accept_networks)
    view = Clearance(reservations(cfg.interfaces, {}, {}, iface.name), OWN.public_key())(view.peers)
    inputs = {
        "wgmesh": InterfaceInputs(
            "userspace", OWN, {}, view.peers, f"{tunnel_address(OWN_ID)}/128", (MESH_NETWORK,)
        )
    }
    desired = desired_state(cfg, inputs, lambda h, p: None)
    observed = {
        name: ObservedInterface(
            name,
            i + 10,
            "userspace" if name.startswith("wg") else None,
            False,
            1420,
            True,
            frozenset({"10.9.9.1/24"}),
            frozenset({"10.0.0.0/8"}),
            Device(),
        )
        for i, name in enumerate(foreign)
    }
    actions = plan(desired, ObservedState(observed))
    assert {a.interface for a in actions} <= {"wgmesh"}
    want = desired.interfaces[0]
    # The static peer keeps its network: a mesh node cannot take it over.
    assert want.peers[KEYS[0]].allowed_ips == frozenset({"10.9.9.0/24"})
    for key, peer in want.peers.items():
        if key != KEYS[0]:
            assert "10.9.9.0/24" not in peer.allowed_ips
