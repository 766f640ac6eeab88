"""Which received mesh announcements become WireGuard peers, and why the others do not.

Pure: takes the node ids and payloads read from bmx7's `rcvdSms/` and plain policy
values, returns peers and refusals. Everything about a peer's address comes from its
node id (authenticated by BMX7), never from the payload:

- allowed-ips: the node's tunnel address `fd77::/16 + id[:14]` as a /128, plus each
  announced network that passes the rules below;
- endpoint: `[fd70::/16 + id[:14]]:<announced port>`, the node's BMX7 primary address.

Two steps, because the second needs what only the reconcile knows (this node's key and
the namespace's addresses and routes):

`mesh_peers` (the mesh's rules) refuses, each reported once per reconcile in node-id order:
- the whole candidate: our own node id (silently: it is our echo); a second announcement
  of one node (`first_announcements`); a node the trust policy does not accept; a
  payload that does not parse; a public key claimed by more than one node (every
  claimant is refused: the file names are authenticated, so one of them copied a key it
  cannot hold, and we cannot tell which).
- one network, the peer kept: a network no tunnel can carry (inside loopback,
  link-local, multicast, 0.0.0.0/8, the unspecified or broadcast address);
  a network that overlaps fd77::/16 (tunnel addresses come only from node ids) or
  fd70::/16 (bmx7's own underlay: routing it into the tunnel would loop); a network
  outside `accept_networks`; a network that overlaps (equals,
  contains or lies inside) a network another node announces. That last rule is what
  stops capture: WireGuard sends a packet to the peer with the longest matching
  allowed-ip, so a node that got a more specific network, or a covering one next to a
  refused one, would take the other node's traffic. Every claimant of an overlap is
  refused, whatever else it announces. A claim counts if its node is trusted, its
  announcement parses, and the network passes the two rules before (a node whose key
  is refused still counts); one this node would refuse anyway routes nothing, and a
  default route announced outside accept_networks must not take down every network.
  So an announcement with networks is decided only against every other one
  (`weighed_against_every_node`), while the key rule needs only the nodes claiming the
  same key.

`Clearance` (this node's rules) refuses:
- the whole peer: a node announcing this node's own public key;
- one network: one that overlaps what this node holds (see `Reservation`): a static
  peer's allowed-ips (a default route excepted: it reserves nothing under it), this
  node's own addresses and announced networks, and the routes of the namespace's other
  links (connected, bmx7's, anybody's; default routes excepted).
"""

from __future__ import annotations

import bisect
import ipaddress
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from bmx7_wg.base.nodeid import (
    BMX7_NETWORK,
    MESH_NETWORK,
    normalize_node_id,
    primary_text,
    tunnel_host,
)
from bmx7_wg.config.model import InterfaceConfig, TrustMode
from bmx7_wg.mesh.announce import Announcement, AnnouncementError, parse_announcement
from bmx7_wg.plan.state import Peer

T = TypeVar("T")

# bmx7 trust levels (sec.h): a trust file's level; 2 and 3 both mean "trusted directly".
TRUST_DIRECT = 2


@dataclass(frozen=True)
class TrustPolicy:
    """The trust rules of `[bmx7]`, with bmx7's own trusted nodes already read.

    `bmx7_levels` is None when bmx7 has no trustedNodesDir configured: bmx7 then trusts
    every node, and so does mode "bmx7".
    """

    mode: TrustMode = "bmx7"
    trusted: frozenset[str] = frozenset()  # upper-case node ids accepted in any mode
    denied: frozenset[str] = frozenset()  # upper-case node ids never accepted
    bmx7_levels: Mapping[str, int] | None = field(default=None, hash=False)

    def refusal(self, node_id: str) -> str | None:
        """Why this node is not trusted, or None if it is."""
        if node_id in self.denied:
            return "denied by configuration"
        if node_id in self.trusted:
            return None
        if self.mode == "all":
            return None
        if self.mode == "listed":
            return "not in the trusted list (trust = \"listed\")"
        if self.bmx7_levels is None:
            return None
        level = self.bmx7_levels.get(node_id)
        if level is None:
            return "not trusted by bmx7 (no file in its trustedNodesDir)"
        if level < TRUST_DIRECT:
            return f"not trusted by bmx7 (trust level {level})"
        return None


@dataclass(frozen=True)
class Refusal:
    node_id: str
    reason: str
    name: str | None = None
    network: str | None = None  # set when only this network was refused, not the peer

    def describe(self) -> str:
        who = self.node_id[:8] + (f" ({self.name})" if self.name else "")
        what = f"network {self.network} of " if self.network else ""
        return f"mesh: refused {what}node {who}: {self.reason}"


@dataclass(frozen=True)
class HeldAnnouncement:
    """The announcement of a node whose file vanished, held for the grace period
    (mesh/grace.py): the peer it had when it vanished (the most it can get back) and the
    networks it claimed (granted or not: a claim refuses what overlaps it)."""

    peer: Peer
    claims: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeshView:
    peers: tuple[Peer, ...] = ()  # sorted by node id
    refusals: tuple[Refusal, ...] = ()  # sorted by node id, then network
    # Every trusted node's parsed live announcement, peer or not: which nodes claim which
    # key and networks (what the service's step between full reconciles starts from).
    announcements: Mapping[str, Announcement] = field(default_factory=dict, compare=False)
    held: frozenset[str] = frozenset()  # node ids whose peer comes from a held announcement


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_BITS = {4: 32, 6: 128}


def _net(text: str) -> Network:
    return ipaddress.ip_network(text, strict=False)


class _Overlaps:
    """Networks, each with who holds it, that answer "which of them overlap this one?".

    Two CIDR networks overlap only when one contains the other, so the answer is the
    holders of the networks that contain it (one look-up per prefix length in use) and
    of those inside it (a range of the networks sorted by first address). A router's
    table of thousands of routes is then no pairwise comparison.
    """

    def __init__(self, entries: Iterable[tuple[Network, str]]) -> None:
        self._by_prefix: dict[tuple[int, int, int], list[tuple[Network, str]]] = defaultdict(list)
        self._lengths: dict[int, set[int]] = {4: set(), 6: set()}
        starts: dict[int, list[tuple[int, int, str, Network]]] = {4: [], 6: []}
        for net, holder in entries:
            start = int(net.network_address)
            self._by_prefix[(net.version, net.prefixlen, start)].append((net, holder))
            self._lengths[net.version].add(net.prefixlen)
            starts[net.version].append((start, net.prefixlen, holder, net))
        self._sorted = {v: sorted(s, key=lambda e: (e[0], e[1], e[2])) for v, s in starts.items()}
        self._keys = {v: [e[0] for e in s] for v, s in self._sorted.items()}

    def holders(self, net: Network) -> list[str]:
        """Who holds exactly `net`."""
        return [h for _, h in self._by_prefix.get((net.version, net.prefixlen, int(net.network_address)), ())]

    def overlapping(self, net: Network) -> Iterator[tuple[Network, str]]:
        """Every held network that overlaps `net` (those containing it first, widest first)."""
        version, length, start = net.version, net.prefixlen, int(net.network_address)
        bits = _BITS[version]
        for q in sorted(self._lengths[version]):
            if q > length:
                break
            masked = start & (((1 << q) - 1) << (bits - q))
            yield from self._by_prefix.get((version, q, masked), ())
        end = start | ((1 << (bits - length)) - 1)
        entries, keys = self._sorted[version], self._keys[version]
        for i in range(bisect.bisect_left(keys, start), bisect.bisect_right(keys, end)):
            _, q, holder, inner = entries[i]
            if q > length:  # the ones at least as wide were yielded above
                yield inner, holder


@dataclass(frozen=True)
class Reservation:
    """A network this node holds that no mesh peer may overlap, and why it holds it."""

    network: str
    why: str  # "a route of eth0", "an address of eth0", "the static peer vpn", ...


def mesh_peers(
    own_id: str,
    received: Sequence[tuple[str, bytes]],
    policy: TrustPolicy,
    accept_networks: Iterable[str] = (),
    node_names: Mapping[str, str] | None = None,
    *,
    persistent_keepalive: int = 0,
    held: Mapping[str, HeldAnnouncement] | None = None,
) -> MeshView:
    """Turn received announcements `(node_id, payload)` into peers and refusals
    (the mesh's rules; `Clearance` applies this node's).

    `held`: announcements whose file vanished, kept for the grace period (node id ->
    what it had and claimed). They go through the same rules as the live ones: trust,
    the key rule, the mesh prefixes, `accept_networks`, and their claims count against
    every other claim; a held node gets at most the networks its peer had. A node that
    also has a live announcement is decided by that one alone."""
    own = normalize_node_id(own_id)
    names = {k.upper(): v for k, v in (node_names or {}).items()}
    accept = _Overlaps((_net(a), "") for a in accept_networks)
    underlay = _Overlaps([(_net(MESH_NETWORK), MESH_NETWORK), (_net(BMX7_NETWORK), BMX7_NETWORK)])
    refusals: list[Refusal] = []

    def refuse(node_id: str, reason: str, network: str | None = None) -> None:
        refusals.append(Refusal(node_id, reason, names.get(node_id), network))

    candidates: dict[str, Announcement] = {}
    named: list[tuple[str, bytes]] = []
    not_ids: list[str] = []
    for raw_id, data in sorted(received, key=lambda item: item[0].upper()):
        try:
            named.append((normalize_node_id(raw_id), data))
        except ValueError:
            not_ids.append(raw_id)
    first, again = first_announcements(named)
    seen = first.keys()
    for node_id, data in first.items():
        if node_id == own:
            continue  # our own announcement echoed back is expected, not a refusal
        why = policy.refusal(node_id)
        if why is not None:
            refuse(node_id, why)
            continue
        try:
            candidates[node_id] = parse_announcement(data)
        except AnnouncementError as exc:
            refuse(node_id, f"bad announcement: {exc.reason}")
    for node_id in again:
        refuse(node_id, "announced twice")
    for raw_id in not_ids:
        refuse(raw_id[:56], "not a node id")

    # Held announcements: weighed as if their node still announced what it claimed.
    had: dict[str, HeldAnnouncement] = {}
    for node_id, kept in sorted((held or {}).items()):
        if node_id in seen or node_id == own:
            continue
        why = policy.refusal(node_id)
        if why is not None:
            refuse(node_id, f"{why}; its held peer goes")
            continue
        had[node_id] = kept
        # (its port is in the peer it had: the announcement stands for its claims only)
        candidates[node_id] = Announcement(kept.peer.public_key, 0, kept.claims)

    # A network a trusted node announces is a claim if this node would route it to that
    # node were it alone (outside the mesh prefixes, inside accept_networks). Claims are
    # weighed before keys: a node refused for its key still says where its networks are.
    claimants: dict[str, list[str]] = defaultdict(list)
    for node_id, ann in candidates.items():
        claimants[ann.public_key].append(node_id)
    eligible: dict[str, list[tuple[str, Network]]] = {}
    for node_id, ann in candidates.items():
        eligible[node_id] = []
        # A node refused as a whole (below) gets one refusal, not one per network too.
        quiet = len(claimants[ann.public_key]) > 1
        for text in ann.networks:
            net = _net(text)
            prefixes = sorted({p for _, p in underlay.overlapping(net)})
            local = _not_routable(net)
            if local:
                if not quiet:
                    refuse(node_id, f"{local} has no meaning in a tunnel; network ignored", text)
            elif prefixes:
                which = " and ".join(prefixes)
                plural = "es" if len(prefixes) > 1 else ""
                if not quiet:
                    refuse(node_id, f"overlaps the mesh prefix{plural} {which}; network ignored", text)
            elif not any(outer.prefixlen <= net.prefixlen for outer, _ in accept.overlapping(net)):
                if not quiet:
                    refuse(node_id, "outside accept_networks; network ignored", text)
            else:
                eligible[node_id].append((text, net))
    claims = _Overlaps((net, node_id) for node_id, nets in eligible.items() for _, net in nets)

    peers: list[Peer] = []
    for node_id, ann in candidates.items():
        if len(claimants[ann.public_key]) > 1:
            others = ", ".join(o[:8] for o in claimants[ann.public_key] if o != node_id)
            refuse(node_id, f"public key also claimed by {others}")
            continue
        allowed = {tunnel_host(node_id)}
        keeps = had.get(node_id)
        granted = {_net(a) for a in keeps.peer.allowed_ips} if keeps is not None else None
        for text, net in eligible[node_id]:
            contested = _contest(claims, net, node_id)
            if contested:
                refuse(node_id, f"{contested}; network ignored", text)
            elif granted is None or net in granted:
                allowed.add(text)
        if keeps is not None:
            peers.append(replace(
                keeps.peer,
                allowed_ips=frozenset(allowed),
                persistent_keepalive=persistent_keepalive,
                name=names.get(node_id, keeps.peer.name),
            ))
            continue
        peers.append(Peer(
            public_key=ann.public_key,
            allowed_ips=frozenset(allowed),
            endpoint=f"[{primary_text(node_id)}]:{ann.port}",
            persistent_keepalive=persistent_keepalive,
            name=names.get(node_id),
            source="mesh",
            node_id=node_id,
        ))

    refusals.sort(key=lambda r: (r.node_id, r.network or ""))
    peers.sort(key=lambda p: p.node_id or "")
    live = {n: a for n, a in candidates.items() if n not in had}
    kept_held = frozenset(p.node_id for p in peers if p.node_id in had)
    return MeshView(tuple(peers), tuple(refusals), live, kept_held)


def first_announcements(received: Iterable[tuple[str, T]]) -> tuple[dict[str, T], list[str]]:
    """The "announced twice" rule, on `(node id, announcement)` in file-name order: a node
    is decided by its first announcement; each further one (a second file for the same
    node id, its hex in another case) is refused, and the first stands. Returns node id ->
    its first announcement, and the node id of each further one.

    Which file comes first depends on every file of the node, so the service's step
    leaves a node with a second file to a full reconcile (`MeshTracker.step`)."""
    first: dict[str, T] = {}
    again: list[str] = []
    for node_id, announcement in received:
        if node_id in first:
            again.append(node_id)
        else:
            first[node_id] = announcement
    return first, again


def weighed_against_every_node(claims: Collection[str]) -> bool:
    """Whether the verdict on an announcement (live or held) claiming the networks `claims`
    depends on every other node's announcement: the overlap rule (`mesh_peers`) weighs each
    claim against all the others, and a claim refuses what overlaps it on any node, so no
    subset of the nodes can decide it. The only other rule between nodes, the key rule,
    needs just the nodes claiming the same key. A full reconcile has every announcement at
    hand and needs no such test; the service's step (service/incremental.py) leaves such
    an announcement to a full reconcile."""
    return bool(claims)


# Networks no tunnel can carry: what lies inside one of them (a covering network, such as
# a default route, is fine: the host's own more specific routes win there).
_NOT_ROUTABLE = _Overlaps((_net(n), why) for n, why in (
    ("0.0.0.0/8", "this host's network (0.0.0.0/8)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "a link-local network"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("::/128", "the unspecified address"),
    ("::1/128", "loopback"),
    ("fe80::/10", "a link-local network"),
    ("ff00::/8", "multicast"),
))


def _not_routable(net: Network) -> str | None:
    """Why `net` cannot go through a tunnel at all, or None. (A zoned network never gets
    here: the announcement parser refuses it.)"""
    inside = (why for outer, why in _NOT_ROUTABLE.overlapping(net) if outer.prefixlen <= net.prefixlen)
    return next(inside, None)


def _contest(claims: _Overlaps, net: Network, node_id: str) -> str | None:
    """Why another node's claim takes `net` from `node_id`, or None if none overlaps it."""
    same = sorted({h for h in claims.holders(net) if h != node_id})
    if same:
        return f"also announced by {', '.join(h[:8] for h in same)}"
    for other, holder in claims.overlapping(net):
        if holder == node_id or other == net:
            continue
        relation = "inside" if net.prefixlen > other.prefixlen else "covers"
        return f"{relation} {other}, announced by {holder[:8]}"
    return None


def reservations(
    interfaces: Iterable[InterfaceConfig],
    host_addresses: Mapping[str, Iterable[str]],
    host_routes: Mapping[str, Iterable[str]],
    mesh_interface: str,
) -> tuple[Reservation, ...]:
    """What this node holds, from its configuration and the namespace's links.

    `host_addresses` and `host_routes` are by link name; the mesh interface's own routes
    are left out (they are the mesh peers' networks and the mesh prefix, the very things
    being decided), its addresses are kept. Default routes reserve nothing: every
    network lies under them.
    """
    out: list[Reservation] = []
    for iface in interfaces:
        for address in iface.addresses:
            out.append(Reservation(_host(address), f"an address of {iface.name}"))
        for network in iface.announce_networks:
            out.append(Reservation(network, f"a network this node announces on {iface.name}"))
        for peer in iface.peers:
            label = f"the static peer {peer.name}" if peer.name else f"a static peer of {iface.name}"
            out.extend(Reservation(n, label) for n in peer.allowed_ips if _net(n).prefixlen > 0)
    for link, addresses in host_addresses.items():
        out.extend(Reservation(_host(a), f"an address of {link}") for a in addresses)
    for link, networks in host_routes.items():
        if link != mesh_interface:
            out.extend(Reservation(n, f"a route of {link}") for n in networks if _net(n).prefixlen > 0)
    return tuple(out)


def _host(address: str) -> str:
    ip = ipaddress.ip_interface(address).ip
    return f"{ip}/{_BITS[ip.version]}"


class Clearance:
    """This node's rules, with the reservations indexed once: called with mesh peers, it
    returns them without what this node holds (a peer announcing this node's own public
    key is refused; a network overlapping a reservation is taken off its peer). The engine
    makes one per mesh interface at each full reconcile; the service keeps it until the
    next and checks each changed mesh peer against it."""

    def __init__(self, reserved: Iterable[Reservation], own_public_key: str | None) -> None:
        self.held = _Overlaps((_net(r.network), r.why) for r in reserved)
        self.own_public_key = own_public_key

    def __call__(self, peers: Iterable[Peer]) -> MeshView:
        kept: list[Peer] = []
        refusals: list[Refusal] = []
        for peer in peers:
            who = peer.node_id or f"key {peer.public_key[:8]}"
            if self.own_public_key is not None and peer.public_key == self.own_public_key:
                refusals.append(Refusal(who, "announces this node's own public key", peer.name))
                continue
            allowed = set(peer.allowed_ips)
            own = tunnel_host(peer.node_id) if peer.node_id is not None else None
            for text in sorted(peer.allowed_ips):
                if text == own:
                    continue  # its own tunnel address, from its node id
                net = _net(text)
                clash = next(self.held.overlapping(net), None)
                if clash is not None:
                    other, why = clash
                    relation = "is" if other == net else "overlaps"
                    refusals.append(Refusal(
                        who, f"{relation} {other}, {why} on this node; network ignored", peer.name, text
                    ))
                    allowed.discard(text)
            if len(allowed) != len(peer.allowed_ips):
                peer = replace(peer, allowed_ips=frozenset(allowed))
            kept.append(peer)
        refusals.sort(key=lambda r: (r.node_id, r.network or ""))
        return MeshView(tuple(kept), tuple(refusals))
