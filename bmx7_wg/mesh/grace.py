"""A grace period for mesh peers whose announcement vanished, so a bmx7 restart does not flap them.

bmx7 wipes `rcvdSms/` when it starts and refills it as the other nodes' descriptions
arrive again: within a second or two from neighbours, after 6-11 s from a node behind
a restarted one. Taken literally, the service would remove those peers and add them
back moments later, tearing down every tunnel session. A real departure looks the same
from the files, so the difference is time: a peer whose announcement disappears is kept
for `grace` seconds; if the node announces again in that time nothing changes on the
device, otherwise the peer is removed when the grace ends. Pure apart from the clock:
the mesh reading calls `hold()` on every reconcile's inputs and the service reconciles
again at `next_deadline()`.

The grace is only for announcements that vanish. A held peer goes at once when its node
is refused (it still announces but is no longer trusted, for example), when the trust
policy no longer accepts it (trust revoked or denied while its announcement was away),
when the same node announces again (perhaps with a new key), or when another current
peer claims its key or any of its allowed IPs.

`snapshot()` and `restore()` carry what was last seen across a service restart (the
service keeps it in a state file): a restarted service then holds a peer whose
announcement is missing for what is left of its grace, instead of removing it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from bmx7_wg.config.model import DEFAULT_GRACE
from bmx7_wg.plan.desired import MeshInputs
from bmx7_wg.plan.state import Peer

# node id -> why the trust policy refuses it now (None: accepted)
TrustCheck = Callable[[str], str | None]


@dataclass(frozen=True)
class _Held:
    peer: Peer
    since: float  # when its announcement was first seen missing (monotonic)


@dataclass(frozen=True)
class HoldEvent:
    """A peer whose announcement vanished ("held") or came back in time ("back")."""

    kind: str  # "held" | "back"
    interface: str
    node_id: str
    peer: Peer
    until: float = 0.0  # monotonic end of the grace ("held" only)


@dataclass(frozen=True)
class Remembered:
    """A mesh peer as last seen, for the state file: `last_seen` in seconds since the epoch."""

    peer: Peer
    last_seen: float


class MeshGrace:
    def __init__(
        self,
        grace: float = DEFAULT_GRACE,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.grace = grace
        self.clock = clock
        self.wall_clock = wall_clock
        self._last: dict[str, dict[str, Peer]] = {}  # interface -> node id -> peer last announced
        self._held: dict[str, dict[str, _Held]] = {}  # interface -> node id -> held peer
        # interface -> node id -> when it was last seen (monotonic), for remembered peers
        self._restored: dict[str, dict[str, float]] = {}
        self._paused: set[str] = set()  # interfaces whose mesh could not be read last time
        self.events: list[HoldEvent] = []  # what the last hold() started or ended

    def hold(
        self,
        inputs: Mapping[str, MeshInputs],
        refused: frozenset[str] = frozenset(),
        trust: TrustCheck | None = None,
    ) -> dict[str, MeshInputs]:
        """The mesh inputs with recently vanished peers kept in.

        `refused`: node ids refused this time (e.g. no longer trusted); `trust`: the trust
        policy now. A held peer either of them rejects goes at once: the grace is only for
        announcements that vanished, as they do while bmx7 restarts."""
        now = self.clock()
        self.events = []
        out: dict[str, MeshInputs] = {}
        for name, m in inputs.items():
            if m.hold:
                # bmx7 does not answer: the engine keeps what the device has, and the
                # grace periods wait (no deadline) until the mesh can be read again.
                self._paused.add(name)
                out[name] = m
                continue
            self._paused.discard(name)
            current = {p.node_id: p for p in m.peers if p.node_id}
            held = self._held.setdefault(name, {})
            restored = self._restored.pop(name, {})
            for node_id, peer in self._last.get(name, {}).items():
                if node_id not in current and node_id not in held:
                    held[node_id] = _Held(peer, restored.get(node_id, now))
                    if now - held[node_id].since < self.grace:
                        until = held[node_id].since + self.grace
                        self.events.append(HoldEvent("held", name, node_id, peer, until))
            keys = {p.public_key for p in m.peers}
            ips = {ip for p in m.peers for ip in p.allowed_ips}
            for node_id, h in list(held.items()):
                if node_id in current and current[node_id] == h.peer:
                    self.events.append(HoldEvent("back", name, node_id, h.peer))
                if (
                    node_id in current
                    or node_id in refused
                    or (trust is not None and trust(node_id) is not None)
                    or now - h.since >= self.grace
                    or h.peer.public_key in keys
                    or not h.peer.allowed_ips.isdisjoint(ips)
                ):
                    del held[node_id]
            kept = tuple(h.peer for h in held.values())
            # Only announced peers: a held peer whose grace ended must not be held anew.
            self._last[name] = current
            out[name] = replace(m, peers=m.peers + kept) if kept else m
        for name in set(self._held) - set(inputs):
            del self._held[name]
            self._last.pop(name, None)
        return out

    def update(
        self, interface: str, changed: Mapping[str, Peer | None], refused: frozenset[str] = frozenset()
    ) -> dict[str, Peer | None] | None:
        """What `hold()` does, for the nodes in `changed` only (node id -> its peer by the
        mesh's rules now, None: no peer), plus every hold whose grace has ended: the
        service's step between full reconciles. Returns node id -> the peer the device
        should have for it now (announced or held; None: none) for every node whose peer
        that changes or may change; None when this interface's mesh is not known here
        (never read, paused, or restored and not read since): then only `hold()` will do.
        `refused`: those of the changed nodes refused now (a refused node's peer is not
        held: it still announces).

        A held peer still goes when an announced peer takes its key or one of its allowed
        IPs; only changed peers can (an unchanged peer was weighed by an earlier call)."""
        if interface not in self._last or interface in self._paused or self._restored.get(interface):
            return None
        now = self.clock()
        self.events = []
        last = self._last[interface]
        held = self._held.setdefault(interface, {})
        touched: set[str] = set()
        for node_id, peer in changed.items():
            touched.add(node_id)
            before = last.pop(node_id, None)
            if peer is not None:
                last[node_id] = peer
            elif before is not None and node_id not in held:
                held[node_id] = _Held(before, now)
                if self.grace > 0:
                    self.events.append(HoldEvent("held", interface, node_id, before, now + self.grace))
        keys = {p.public_key for p in changed.values() if p is not None}
        ips = {ip for p in changed.values() if p is not None for ip in p.allowed_ips}
        for node_id, h in list(held.items()):
            current = last.get(node_id)
            if current is not None and current == h.peer:
                self.events.append(HoldEvent("back", interface, node_id, h.peer))
            if (
                current is not None
                or node_id in refused
                or now - h.since >= self.grace
                or h.peer.public_key in keys
                or not h.peer.allowed_ips.isdisjoint(ips)
            ):
                del held[node_id]
                touched.add(node_id)
        out: dict[str, Peer | None] = {}
        for node_id in touched:
            current = last.get(node_id)
            if current is None and node_id in held:
                current = held[node_id].peer
            out[node_id] = current
        return out

    def held_peers(self, interface: str) -> list[Peer]:
        """The peers held now on `interface` (their announcement vanished)."""
        return [h.peer for h in self._held.get(interface, {}).values()]

    def next_deadline(self) -> float | None:
        """When the earliest held peer's grace ends (monotonic), or None if none is held."""
        ends = [
            h.since + self.grace
            for name, held in self._held.items()
            if name not in self._paused
            for h in held.values()
        ]
        return min(ends) if ends else None

    def knows(self, interface: str) -> bool:
        """Whether the mesh of `interface` was read (or restored) at least once."""
        return interface in self._last

    def snapshot(self, interface: str) -> dict[str, Remembered]:
        """Every mesh peer of `interface` announced or held now, with when it was last seen
        (a restored peer not read since keeps the time it was remembered with)."""
        now, wall = self.clock(), self.wall_clock()
        restored = self._restored.get(interface, {})
        out = {
            node_id: Remembered(peer, wall - (now - restored[node_id]) if node_id in restored else wall)
            for node_id, peer in self._last.get(interface, {}).items()
        }
        for node_id, h in self._held.get(interface, {}).items():
            out.setdefault(node_id, Remembered(h.peer, wall - (now - h.since)))
        return out

    def restore(self, interface: str, remembered: Mapping[str, Remembered]) -> None:
        """Peers a previous service saw (see snapshot): treated as announced when last
        seen, so that one missing now is held for what is left of its grace."""
        now, wall = self.clock(), self.wall_clock()
        last = self._last.setdefault(interface, {})
        since = self._restored.setdefault(interface, {})
        for node_id, r in remembered.items():
            if node_id in last:
                continue
            last[node_id] = r.peer
            since[node_id] = now - max(0.0, wall - r.last_seen)
