"""The service's step between full reconciles: a few announcements changed, so change
only their peers.

A full reconcile (engine.reconcile) reads every announcement, the trust, bmx7 and the
whole system, and plans every peer: its cost grows with the mesh. Between two of them
the service learns from inotify which `rcvdSms/` files changed; `MeshTracker` keeps
what the last full reconcile found (each node's announcement, which nodes claim which
key, each node's peer and refusals, this node's reservations, the device's peers) and
turns the changed files into the peer changes they cause, at a cost that grows with
the change, not with the mesh:

- only the named files are read and parsed;
- the mesh's rules (mesh.view.mesh_peers) run on the changed nodes and the nodes that
  claim the same keys (a key claimed twice refuses every claimant, and stops doing so
  when one of them goes): a node's peer depends on no other node's announcement;
- the grace period (mesh.grace.MeshGrace.begin_step, settle) and this node's rules
  (mesh.view.Clearance) see only those peers;
- the planner's own peer comparison (plan.planner.plan_peers) runs on their keys
  against the device's peers as last read and since changed, and the executor sends
  the difference as one device change.

Every rule is the full reconcile's own function, called here on fewer nodes; none is
written again:
- a file's node id: mesh.bmx7.sender_of (`NODEID:SMS`);
- a file written a moment ago that does not parse yet: mesh.session.unsettled (it
  counts as vanished, and is read again);
- one node, two files ("announced twice"): mesh.view.first_announcements;
- a static peer wins over a mesh peer with its key: plan.desired.device_peers.

What they cannot decide from a few nodes goes to a full reconcile instead (`step`
returns None): an announcement, live or held, whose verdict depends on every other
node's (mesh.view.weighed_against_every_node: it claims networks, which the overlap
rule weighs against all claims; their routes also depend on the interface's other
routes), a node with a second file (which one counts depends on both), a file that is
refused as a file (bad name, too large, a symlink), and anything before the first full
reconcile of the mesh interface. A full reconcile also still runs at start, on trust,
configuration and bmx7 changes, on rtnetlink events of managed links, after a failure
and at the safety-net interval: it is the reference. tests/unit/test_step.py drives
random changes through both, on an in-memory system and without root, and requires
the same device and refusals; tests/integration/test_incremental.py does it with the
whole service on a wireguard-go device.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bmx7_wg.config.model import Config
from bmx7_wg.engine import Plan
from bmx7_wg.mesh.announce import AnnouncementError, parse_announcement
from bmx7_wg.mesh.bmx7 import ReceivedFile, sender_of
from bmx7_wg.mesh.grace import HoldEvent, MeshGrace
from bmx7_wg.mesh.session import MeshSession, unsettled
from bmx7_wg.mesh.view import (
    Clearance,
    HeldAnnouncement,
    TrustPolicy,
    first_announcements,
    mesh_peers,
    reservations,
    weighed_against_every_node,
)
from bmx7_wg.plan.actions import Action, AddPeer, RemovePeer, UpdatePeer
from bmx7_wg.plan.desired import device_peers
from bmx7_wg.plan.planner import plan_peers
from bmx7_wg.plan.state import Device, Implementation, Peer

NodeRefusals = tuple[tuple[str, str], ...]  # (node id, message), as MeshSession.refusals


@dataclass
class Step:
    """What a few changed announcements change: the device's peer actions, the grace
    periods started or ended, and each touched node's refusals now."""

    actions: list[Action]
    holds: list[HoldEvent]
    refusals: dict[str, NodeRefusals]  # node id -> its refusals now (empty: none)
    # The tracker's new facts, taken in by `MeshTracker.commit` once the actions ran.
    data: dict[str, bytes | None] = field(default_factory=dict)
    entries: dict[str, str] = field(default_factory=dict)  # node id -> its file name
    keys: dict[str, str | None] = field(default_factory=dict)
    final: dict[str, Peer | None] = field(default_factory=dict)
    # Files written a moment ago whose content does not parse yet: to be read again.
    unsettled: list[str] = field(default_factory=list)


@dataclass
class MeshTracker:
    """What the last full reconcile found on the mesh interface, kept up to date."""

    interface: str
    implementation: Implementation
    sms: str  # the SMS name of the announcements
    own_id: str
    policy: TrustPolicy
    accept_networks: tuple[str, ...]
    names: Mapping[str, str]  # node id -> host name, as bmx7 told the last full reconcile
    clearance: Clearance
    static: Mapping[str, Peer]  # the interface's static peers by key: they win over mesh peers
    data: dict[str, bytes]  # node id -> its announcement's bytes
    entry_of: dict[str, str]  # node id -> its rcvdSms file name
    keys: dict[str, str]  # node id -> the key its announcement claims (trusted, parsed)
    by_key: dict[str, set[str]]  # key -> the nodes claiming it
    # Nodes only a full reconcile decides: their announcement claims networks
    # (mesh.view.weighed_against_every_node), or two files announce them.
    needs_full: set[str]
    final: dict[str, Peer]  # node id -> its peer on the device (announced or held, cleared)
    final_by_key: dict[str, str]  # key -> node id, of `final`
    refusals: dict[str, NodeRefusals]  # node id -> its refusals
    device: dict[str, Peer]  # the device's peers: as last read, then as changed since

    @classmethod
    def from_full(
        cls,
        config: Config,
        mesh: MeshSession,
        plan: Plan,
        device: Device | None,
    ) -> MeshTracker | None:
        """A tracker from a full reconcile that succeeded (what it read of the mesh, its
        plan), or None when steps cannot follow it (bmx7 did not answer, no device
        read...). `device`: the mesh interface's device as read after the reconcile."""
        iface = mesh.interface
        if (
            iface is None
            or config.bmx7 is None
            or mesh.node is None
            or mesh.policy is None
            or mesh.view is None
            or device is None
            or device.private_key is None
            or mesh.inputs.get(iface.name) is None
            or mesh.inputs[iface.name].hold
        ):
            return None
        want = next((d for d in plan.desired.interfaces if d.name == iface.name), None)
        if want is None:
            return None
        first, again = first_announcements(
            (f.node_id, (f.file_name, f.data))
            for f in mesh.received
            if f.node_id is not None and f.data is not None
        )
        entry_of = {node_id: entry for node_id, (entry, _) in first.items()}
        data = {node_id: payload for node_id, (_, payload) in first.items()}
        keys: dict[str, str] = {}
        by_key: dict[str, set[str]] = {}
        needs_full: set[str] = set(again)
        for node_id, ann in mesh.view.announcements.items():
            keys[node_id] = ann.public_key
            by_key.setdefault(ann.public_key, set()).add(node_id)
            if weighed_against_every_node(ann.networks):
                needs_full.add(node_id)
        final = {p.node_id: p for p in plan.mesh_peers.get(iface.name, ()) if p.node_id}
        refusals: dict[str, list[tuple[str, str]]] = {}
        for node_id, message in mesh.refusals:
            refusals.setdefault(node_id, []).append((node_id, message))
        own = device.private_key.public_key()
        clearance = plan.clearances.get(iface.name)
        if clearance is None or clearance.own_public_key != own:
            # No mesh peer was planned, or the key was made by this apply: index anew.
            host = plan.observed.host
            reserved = reservations(config.interfaces, host.addresses, host.routes, iface.name)
            clearance = Clearance(reserved, own)
        return cls(
            interface=iface.name,
            implementation=want.implementation,
            sms=config.bmx7.announce,
            own_id=mesh.node.node_id,
            policy=mesh.policy,
            accept_networks=tuple(iface.accept_networks),
            names=dict(mesh.names),
            clearance=clearance,
            static={p.public_key: p for p in want.peers.values() if p.source == "static"},
            data=data,
            entry_of=entry_of,
            keys=keys,
            by_key=by_key,
            needs_full=needs_full,
            final=final,
            final_by_key={p.public_key: n for n, p in final.items()},
            refusals={n: tuple(r) for n, r in refusals.items()},
            device=dict(device.peers),
        )

    def step(self, files: Mapping[str, ReceivedFile | None], grace: MeshGrace | None) -> Step | None:
        """The changes the named `rcvdSms/` files (read now; None: gone) cause, and the
        end of any grace period that is over; None: a full reconcile must decide."""
        changed: dict[str, bytes | None] = {}
        entries: dict[str, str] = {}
        settling: list[str] = []
        for entry, f in files.items():
            node_id = sender_of(entry, self.sms)
            if node_id is None:
                return None  # refused as a file name: the full reconcile says why
            if self.entry_of.get(node_id, entry) != entry or entries.get(node_id, entry) != entry:
                # A second file for a node (known, or new in this batch), "announced
                # twice": which one counts depends on both (mesh.view.first_announcements).
                return None
            if f is not None and not f.ok:
                return None  # refused as a file: the full reconcile says why
            if node_id == self.own_id:
                continue  # our own announcement, echoed
            if f is not None and unsettled(f, self.policy):
                settling.append(entry)
                f = None
            payload = f.data if f is not None else None
            entries[node_id] = entry
            if self.data.get(node_id) != payload:
                changed[node_id] = payload
        keys: dict[str, str | None] = {}
        for node_id, payload in changed.items():
            if node_id in self.needs_full:
                return None
            key = None
            if payload is not None and self.policy.refusal(node_id) is None:
                try:
                    ann = parse_announcement(payload)
                except AnnouncementError:
                    pass
                else:
                    if weighed_against_every_node(ann.networks):
                        return None
                    key = ann.public_key
            keys[node_id] = key
        # The nodes whose peer may change: the changed ones and those that claim (or
        # claimed) the same key.
        affected = set(changed)
        for node_id in changed:
            for key in (self.keys.get(node_id), keys[node_id]):
                if key is not None:
                    affected |= self.by_key.get(key, set())
        held: dict[str, HeldAnnouncement] = {}
        if grace is not None:
            begun = grace.begin_step(self.interface, {n: p is not None for n, p in changed.items()})
            if begun is None:
                return None
            held, ended = begun
            if any(weighed_against_every_node(a.claims) for a in (*held.values(), *ended.values())):
                return None  # a held claim, or one that ends now
            # A hold that ended frees its key for the nodes that claim it too; a held node
            # whose key a touched node claims is weighed with it (the key rule).
            for node_id, gone in ended.items():
                affected.add(node_id)
                affected |= self.by_key.get(gone.peer.public_key, set())
            touched_keys = {k for n in affected for k in (self.keys.get(n), keys.get(n)) if k is not None}
            affected |= {n for n, a in held.items() if a.peer.public_key in touched_keys}
        if affected & self.needs_full:
            return None
        received = []
        for node_id in affected:
            payload = changed[node_id] if node_id in changed else self.data.get(node_id)
            if payload is not None:
                received.append((node_id, payload))
        view = mesh_peers(
            self.own_id,
            received,
            self.policy,
            self.accept_networks,
            self.names,
            held={n: a for n, a in held.items() if n in affected},
        )
        effective: dict[str, Peer | None] = dict.fromkeys(affected)
        for peer in view.peers:
            effective[peer.node_id or ""] = peer
        refusals: dict[str, list[tuple[str, str]]] = {n: [] for n in affected}
        for r in view.refusals:
            refusals.setdefault(r.node_id, []).append((r.node_id, r.describe()))
        holds = grace.settle(self.interface, view, self.policy.refusal, affected) if grace is not None else []
        # This node's rules, then the device's side of each touched node.
        final: dict[str, Peer | None] = {}
        for node_id, kept in effective.items():
            refusals.setdefault(node_id, [])
            if kept is None:
                final[node_id] = None
                continue
            cleared = self.clearance([kept])
            refusals[node_id] += [(r.node_id, r.describe()) for r in cleared.refusals]
            final[node_id] = cleared.peers[0] if cleared.peers else None
        # Every key a touched node had or has now -> its peer now.
        touched_keys = {p.public_key for p in (self.final.get(n) for n in final) if p is not None}
        mesh: list[Peer] = []
        for now in final.values():
            if now is None:
                continue
            if len(now.allowed_ips) != 1:
                return None  # not reached: only a tunnel address comes this way (checked above)
            holder = self.final_by_key.get(now.public_key)
            if holder is not None and holder not in final:
                return None  # not reached: the rules refuse a key another node claims
            touched_keys.add(now.public_key)
            mesh.append(now)
        want = device_peers({k: self.static[k] for k in touched_keys & self.static.keys()}, mesh)
        have = {k: self.device[k] for k in touched_keys if k in self.device}
        return Step(
            actions=plan_peers(self.interface, want, have),
            holds=holds,
            refusals={n: tuple(r) for n, r in refusals.items()},
            data=changed,
            entries=entries,
            keys=keys,
            final=final,
            unsettled=settling,
        )

    def commit(self, step: Step, done: Iterable[Action]) -> None:
        """Take in a step whose actions all ran (`done`)."""
        for node_id, payload in step.data.items():
            if payload is None:
                self.data.pop(node_id, None)
                self.entry_of.pop(node_id, None)
            else:
                self.data[node_id] = payload
                self.entry_of[node_id] = step.entries[node_id]
        for node_id, key in step.keys.items():
            old = self.keys.pop(node_id, None)
            if old is not None:
                claimants = self.by_key.get(old, set())
                claimants.discard(node_id)
                if not claimants:
                    self.by_key.pop(old, None)
            if key is not None:
                self.keys[node_id] = key
                self.by_key.setdefault(key, set()).add(node_id)
        for node_id, peer in step.final.items():
            old_peer = self.final.pop(node_id, None)
            if old_peer is not None and self.final_by_key.get(old_peer.public_key) == node_id:
                del self.final_by_key[old_peer.public_key]
            if peer is not None:
                self.final[node_id] = peer
                self.final_by_key[peer.public_key] = node_id
        for node_id, refusals in step.refusals.items():
            if refusals:
                self.refusals[node_id] = refusals
            else:
                self.refusals.pop(node_id, None)
        for action in done:
            if isinstance(action, (AddPeer, UpdatePeer)):
                self.device[action.peer.public_key] = action.peer
            elif isinstance(action, RemovePeer):
                self.device.pop(action.public_key, None)

