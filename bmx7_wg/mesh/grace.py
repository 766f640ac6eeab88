"""A grace period for mesh peers whose announcement vanished, so a bmx7 restart does not flap them.

bmx7 wipes `rcvdSms/` when it starts and refills it within a second or two as the
other nodes' descriptions arrive again. Taken literally, the service would remove every
mesh peer and add it back moments later, tearing down every tunnel session. A real
departure looks the same from the files, so the difference is time: a peer whose
announcement disappears is kept for `grace` seconds; if the node announces again in
that time nothing changes on the device, otherwise the peer is removed when the grace
ends. Pure apart from the clock: the service calls `hold()` on every reconcile's mesh
inputs and reconciles again at `next_deadline()`.

A held peer never stands in the way of a current one: it is dropped as soon as the same
node announces (perhaps with a new key), or another current peer claims its key or any
of its allowed IPs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from bmx7_wg.engine import MeshInputs
from bmx7_wg.plan.state import Peer

DEFAULT_GRACE = 10.0  # seconds: bmx7 redelivers every node's SMS within ~1-2 s of a restart


@dataclass(frozen=True)
class _Held:
    peer: Peer
    since: float  # when its announcement was first seen missing (monotonic)


class MeshGrace:
    def __init__(self, grace: float = DEFAULT_GRACE, clock: Callable[[], float] = time.monotonic) -> None:
        self.grace = grace
        self.clock = clock
        self._last: dict[str, dict[str, Peer]] = {}  # interface -> node id -> peer last announced
        self._held: dict[str, dict[str, _Held]] = {}  # interface -> node id -> held peer

    def hold(
        self, inputs: Mapping[str, MeshInputs], refused: frozenset[str] = frozenset()
    ) -> dict[str, MeshInputs]:
        """The mesh inputs with recently vanished peers kept in.

        `refused`: node ids refused this time (e.g. no longer trusted). They still
        announce, so their peer goes at once: the grace is only for announcements that
        vanished, as they do while bmx7 restarts."""
        now = self.clock()
        out: dict[str, MeshInputs] = {}
        for name, m in inputs.items():
            if m.hold:
                # bmx7 could not be read at all: the engine keeps what the device has.
                out[name] = m
                continue
            current = {p.node_id: p for p in m.peers if p.node_id}
            held = self._held.setdefault(name, {})
            for node_id, peer in self._last.get(name, {}).items():
                if node_id not in current and node_id not in held:
                    held[node_id] = _Held(peer, now)
            keys = {p.public_key for p in m.peers}
            ips = {ip for p in m.peers for ip in p.allowed_ips}
            for node_id, h in list(held.items()):
                if (
                    node_id in current
                    or node_id in refused
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

    def next_deadline(self) -> float | None:
        """When the earliest held peer's grace ends (monotonic), or None if none is held."""
        ends = [h.since + self.grace for held in self._held.values() for h in held.values()]
        return min(ends) if ends else None
