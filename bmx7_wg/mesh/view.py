"""Which received mesh announcements become WireGuard peers, and why the others do not.

Pure: takes the node ids and payloads read from bmx7's `rcvdSms/` and plain policy
values, returns peers and refusals. Everything about a peer's address comes from its
node id (authenticated by BMX7), never from the payload:

- allowed-ips: the node's tunnel address `fd77::/16 + id[:14]` as a /128, plus each
  announced network that lies inside `accept_networks`;
- endpoint: `[fd70::/16 + id[:14]]:<announced port>`, the node's BMX7 primary address.

Refusals (each reported once per reconcile, in node-id order):

- the whole candidate: our own node id; a node the trust policy does not accept; a
  payload that does not parse; a public key claimed by more than one node (every
  claimant is refused: the file names are authenticated, so one of them copied a key
  it cannot hold, and we cannot tell which); our own public key.
- one network, the peer kept: a network outside `accept_networks`; a network inside
  the mesh prefix fd77::/16 (tunnel addresses come only from node ids); a network
  announced by more than one accepted node (WireGuard would move it between peers on
  every write); a network a static peer of the interface carries, or one inside it
  (other than inside a default route): a mesh node must not take over a route the
  operator configured. The peer still gets its /128 and its other networks.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from bmx7_wg.config.model import TrustMode
from bmx7_wg.mesh.announce import Announcement, AnnouncementError, parse_announcement
from bmx7_wg.mesh.nodeid import MESH_NETWORK, normalize_node_id, primary_address, tunnel_address
from bmx7_wg.plan.state import Peer

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
class MeshView:
    peers: tuple[Peer, ...] = ()  # sorted by node id
    refusals: tuple[Refusal, ...] = ()  # sorted by node id, then network


def _networks(texts: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(t, strict=False) for t in texts)


def _inside(net: ipaddress.IPv4Network | ipaddress.IPv6Network,
            nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    return any(net.version == a.version and net.subnet_of(a) for a in nets)  # type: ignore[arg-type]


def _overlaps(net: ipaddress.IPv4Network | ipaddress.IPv6Network,
              other: ipaddress.IPv6Network) -> bool:
    return net.version == other.version and net.overlaps(other)


def mesh_peers(
    own_id: str,
    received: Sequence[tuple[str, bytes]],
    policy: TrustPolicy,
    accept_networks: Iterable[str] = (),
    node_names: Mapping[str, str] | None = None,
    *,
    own_public_key: str | None = None,
    persistent_keepalive: int = 0,
    static_networks: Iterable[str] = (),
) -> MeshView:
    """Turn received announcements `(node_id, payload)` into peers and refusals."""
    own = normalize_node_id(own_id)
    names = {k.upper(): v for k, v in (node_names or {}).items()}
    accept = _networks(accept_networks)
    mesh_net = ipaddress.IPv6Network(MESH_NETWORK)
    # A default route of a static peer (a VPN exit) does not reserve everything under it.
    reserved = tuple(n for n in _networks(static_networks) if n.prefixlen > 0)
    refusals: list[Refusal] = []

    def refuse(node_id: str, reason: str, network: str | None = None) -> None:
        refusals.append(Refusal(node_id, reason, names.get(node_id), network))

    candidates: dict[str, Announcement] = {}
    seen: set[str] = set()
    for raw_id, data in sorted(received, key=lambda item: item[0].upper()):
        try:
            node_id = normalize_node_id(raw_id)
        except ValueError:
            refuse(raw_id[:56], "not a node id")
            continue
        if node_id in seen:
            refuse(node_id, "announced twice")
            continue
        seen.add(node_id)
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

    claimants: dict[str, list[str]] = defaultdict(list)
    for node_id, ann in candidates.items():
        claimants[ann.public_key].append(node_id)
    accepted: dict[str, Announcement] = {}
    for node_id, ann in candidates.items():
        if own_public_key is not None and ann.public_key == own_public_key:
            refuse(node_id, "announces this node's own public key")
        elif len(claimants[ann.public_key]) > 1:
            others = ", ".join(o[:8] for o in claimants[ann.public_key] if o != node_id)
            refuse(node_id, f"public key also claimed by {others}")
        else:
            accepted[node_id] = ann

    network_owners: dict[str, list[str]] = defaultdict(list)
    kept: dict[str, list[str]] = {}
    for node_id, ann in accepted.items():
        kept[node_id] = []
        for text in ann.networks:
            net = ipaddress.ip_network(text)
            if _overlaps(net, mesh_net):
                refuse(node_id, f"inside the mesh prefix {MESH_NETWORK}; network ignored", text)
            elif not _inside(net, accept):
                refuse(node_id, "outside accept_networks; network ignored", text)
            elif _inside(net, reserved):
                refuse(node_id, "a static peer of this interface carries it; network ignored", text)
            else:
                kept[node_id].append(text)
                network_owners[text].append(node_id)

    peers: list[Peer] = []
    for node_id, ann in accepted.items():
        allowed = {f"{tunnel_address(node_id)}/128"}
        for text in kept[node_id]:
            if len(network_owners[text]) > 1:
                others = ", ".join(o[:8] for o in network_owners[text] if o != node_id)
                refuse(node_id, f"also announced by {others}; network ignored", text)
            else:
                allowed.add(text)
        peers.append(Peer(
            public_key=ann.public_key,
            allowed_ips=frozenset(allowed),
            endpoint=f"[{primary_address(node_id)}]:{ann.port}",
            persistent_keepalive=persistent_keepalive,
            name=names.get(node_id),
            source="mesh",
            node_id=node_id,
        ))

    refusals.sort(key=lambda r: (r.node_id, r.network or ""))
    return MeshView(tuple(peers), tuple(refusals))
