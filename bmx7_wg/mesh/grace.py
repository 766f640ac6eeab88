"""A grace period for mesh announcements that vanished, so a bmx7 restart does not flap them.

bmx7 wipes `rcvdSms/` when it starts and refills it as the other nodes' descriptions
arrive again: within a second or two from neighbours, after 6-11 s from a node behind
a restarted one. Taken literally, the service would remove those peers and add them
back moments later, tearing down every tunnel session. A real departure looks the same
from the files, so the difference is time: the announcement of a node whose peer was
up is kept, marked held, for `grace` seconds; if the node announces again in that time
nothing changes on the device, otherwise the held announcement is let go when the grace
ends.

What is held is the *input*, never the output: a held announcement goes through the
mesh's rules (mesh.view.mesh_peers, `held=`) like a live one, on every reconcile and
every step. So a held node's claims still count (nothing else takes its networks, a
super- or a subnet of them while it is held), the trust policy, `accept_networks` and
the key rule in force now apply to it, and it gets at most what its peer had when its
announcement vanished (`HeldAnnouncement`). A held node the trust policy refuses is let
go at once: the grace is for announcements that vanish, never against trust.

The grace counts only time in which bmx7 answers: while bmx7 does not (`pause()`), no
hold runs out, and when it answers again every hold has what was left of its grace.

Pure apart from the clock. A full reconcile calls `begin()` (the held announcements),
then the mesh's rules, then `settle()` (what they decided: the next holds and what the
journal says); the service's step does the same on the nodes it touches (`begin_step`,
`settle`). The service reconciles again at `next_deadline()`.

`snapshot()` and `restore()` carry what was last seen across a service restart (the
service keeps it in a state file): a restarted service then holds the announcement of a
node missing now for what is left of its grace, claiming what its peer had.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass

from bmx7_wg.base.nodeid import tunnel_host
from bmx7_wg.config.model import DEFAULT_GRACE
from bmx7_wg.mesh.view import HeldAnnouncement, MeshView
from bmx7_wg.plan.state import Peer

# node id -> why the trust policy refuses it now (None: accepted)
TrustCheck = Callable[[str], str | None]


@dataclass
class _Held:
    announcement: HeldAnnouncement
    since: float  # when it was first seen missing (monotonic), moved on by bmx7's outages
    said: bool = False  # the journal was told (once it kept a peer)


@dataclass(frozen=True)
class HoldEvent:
    """A peer kept from a held announcement ("held"), or whose announcement came back
    in time ("back"). Only said of a peer the device keeps."""

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


def remembered_announcement(peer: Peer) -> HeldAnnouncement:
    """What a peer from the state file claims: the networks it had (its node's tunnel
    address comes from the node id, not from a claim)."""
    own = tunnel_host(peer.node_id) if peer.node_id else None
    return HeldAnnouncement(peer, tuple(sorted(a for a in peer.allowed_ips if a != own)))


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
        # interface -> node id -> its announcement, for the nodes whose live announcement
        # gave a peer last time (what would be held if it vanished)
        self._last: dict[str, dict[str, HeldAnnouncement]] = {}
        self._held: dict[str, dict[str, _Held]] = {}  # interface -> node id -> held announcement
        # interface -> node id -> when it was last seen (monotonic), for remembered peers
        self._restored: dict[str, dict[str, float]] = {}
        self._paused: dict[str, float] = {}  # interface -> since when bmx7 does not answer
        self._back: dict[str, dict[str, Peer]] = {}  # held nodes that announce again, this time
        self.events: list[HoldEvent] = []  # what the last settle() started or ended

    # -- bmx7 does not answer ---------------------------------------------------------

    def pause(self, interface: str) -> None:
        """bmx7 does not answer: the engine keeps what the device has, and no grace runs
        out (no deadline) until bmx7 answers again."""
        self._paused.setdefault(interface, self.clock())
        self.events = []

    def _resume(self, interface: str, now: float) -> None:
        """bmx7 answers again: every hold gets back the time bmx7 did not answer."""
        paused = self._paused.pop(interface, None)
        if paused is None:
            return
        away = max(0.0, now - paused)
        for h in self._held.get(interface, {}).values():
            h.since += away
        restored = self._restored.get(interface, {})
        for node_id in restored:
            restored[node_id] += away

    # -- one reconcile ----------------------------------------------------------------

    def begin(self, interface: str, present: Collection[str]) -> dict[str, HeldAnnouncement]:
        """The held announcements of `interface` for a full read, whose `present` node ids
        have a file now (good or refused: a node whose file is there is not held)."""
        now = self.clock()
        self._resume(interface, now)
        held = self._held.setdefault(interface, {})
        restored = self._restored.pop(interface, {})
        back: dict[str, Peer] = {}
        for node_id, announcement in self._last.get(interface, {}).items():
            if node_id not in present and node_id not in held:
                held[node_id] = _Held(announcement, restored.get(node_id, now))
        for node_id, h in list(held.items()):
            if node_id in present:
                if h.said:
                    back[node_id] = h.announcement.peer
                del held[node_id]
            elif now - h.since >= self.grace:
                del held[node_id]
        self._back[interface] = back
        return {n: h.announcement for n, h in held.items()}

    def begin_step(
        self, interface: str, changed: Mapping[str, bool]
    ) -> tuple[dict[str, HeldAnnouncement], dict[str, HeldAnnouncement]] | None:
        """`begin` for the service's step: `changed` node id -> whether it has a file
        now. Returns every held announcement and the nodes whose hold ended (grace over
        or announced again), with what they held; None when this interface's mesh is not known here (never
        read, paused, or restored and not read since): then only a full reconcile will do."""
        if interface not in self._last or interface in self._paused or self._restored.get(interface):
            return None
        now = self.clock()
        last = self._last[interface]
        held = self._held.setdefault(interface, {})
        back: dict[str, Peer] = {}
        ended: dict[str, HeldAnnouncement] = {}
        for node_id, present in changed.items():
            if present:
                h = held.pop(node_id, None)
                if h is not None:
                    ended[node_id] = h.announcement
                    if h.said:
                        back[node_id] = h.announcement.peer
            elif node_id in last and node_id not in held:
                held[node_id] = _Held(last[node_id], now)
        for node_id, h in list(held.items()):
            if now - h.since >= self.grace:
                del held[node_id]
                ended[node_id] = h.announcement
        self._back[interface] = back
        return {n: h.announcement for n, h in held.items()}, ended

    def settle(
        self, interface: str, view: MeshView, trust: TrustCheck, decided: Collection[str] | None = None
    ) -> list[HoldEvent]:
        """Take in what the mesh's rules made of the live and held announcements: the live
        peers are what a later departure holds; a held node the trust policy refuses is let
        go. `decided`: the node ids the rules were run on (a step); None: all (a full
        reconcile). Returns (and keeps in `events`) what the journal says: a hold that
        keeps a peer, and a peer whose announcement came back in time."""
        held = self._held.setdefault(interface, {})
        last = self._last.setdefault(interface, {})
        if decided is None:
            last.clear()
        else:
            for node_id in decided:
                last.pop(node_id, None)
        peers = {p.node_id: p for p in view.peers if p.node_id}
        for node_id, peer in peers.items():
            if node_id not in view.held:
                announced = view.announcements.get(node_id)
                claims = announced.networks if announced is not None else ()
                last[node_id] = HeldAnnouncement(peer, claims)
        events: list[HoldEvent] = []
        for node_id, h in list(held.items()):
            if decided is not None and node_id not in decided:
                continue
            if trust(node_id) is not None:
                del held[node_id]
            elif node_id in peers and not h.said and self.grace > 0:
                h.said = True
                events.append(HoldEvent("held", interface, node_id, peers[node_id], h.since + self.grace))
        for node_id, before in self._back.pop(interface, {}).items():
            if peers.get(node_id) == before:
                events.append(HoldEvent("back", interface, node_id, before))
        if decided is None:
            self.keep_only(interface)
        self.events = events
        return events

    def keep_only(self, interface: str | None) -> None:
        """Forget every interface but the mesh interface now (None: there is none)."""
        for name in {*self._last, *self._held, *self._restored, *self._paused, *self._back} - {interface}:
            self._last.pop(name, None)
            self._held.pop(name, None)
            self._restored.pop(name, None)
            self._paused.pop(name, None)
            self._back.pop(name, None)

    # -- what is held -----------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When the earliest hold's grace ends (monotonic), or None if none runs."""
        ends = [
            h.since + self.grace
            for name, held in self._held.items()
            if name not in self._paused
            for h in held.values()
        ]
        return min(ends) if ends else None

    def held_count(self, interface: str) -> int:
        """How many mesh peers of `interface` are held now (the metrics' "held" nodes)."""
        return len(self._held.get(interface, {}))

    def knows(self, interface: str) -> bool:
        """Whether the mesh of `interface` was read (or restored) at least once."""
        return interface in self._last

    def snapshot(self, interface: str) -> dict[str, Remembered]:
        """Every mesh peer of `interface` announced or held now, with when it was last seen
        (a restored peer not read since keeps the time it was remembered with)."""
        now, wall = self.clock(), self.wall_clock()
        restored = self._restored.get(interface, {})
        out = {
            node_id: Remembered(a.peer, wall - (now - restored[node_id]) if node_id in restored else wall)
            for node_id, a in self._last.get(interface, {}).items()
        }
        for node_id, h in self._held.get(interface, {}).items():
            out.setdefault(node_id, Remembered(h.announcement.peer, wall - (now - h.since)))
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
            last[node_id] = remembered_announcement(r.peer)
            since[node_id] = now - max(0.0, wall - r.last_seen)
