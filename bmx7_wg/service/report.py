"""What the service tells the journal and systemd, from facts the work hands it.

Each thing is said once while it lasts: a refused mesh node when its refusal starts (and
again if it starts again after it ended), a stale handshake when it turns stale, bmx7
stopping or coming back, a peer held over a vanished announcement. The status line's
numbers (interfaces, peers, recent handshakes) come from the last full read of the
devices, and steps update the peers. Both clocks are injectable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Set

from bmx7_wg.mesh.grace import HoldEvent
from bmx7_wg.mesh.liveness import Liveness
from bmx7_wg.plan.state import ObservedState
from bmx7_wg.service import events

RECENT_HANDSHAKE = 180.0  # seconds: WireGuard re-keys every 2 minutes while traffic flows

Refusal = tuple[str, str]  # (node id, why it is refused)


class Report:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock  # for the grace periods' ends
        self.wall_clock = wall_clock  # for handshakes, which WireGuard times in seconds since the epoch
        self.refusals_logged: set[Refusal] = set()  # refusals in force, each logged once
        self.stale_logged: set[tuple[str, str]] = set()  # (interface, peer) whose handshake is stale
        self.peer_counts: dict[str, int] = {}  # managed interface -> its peers
        self.recent_handshakes = 0

    # -- the mesh ------------------------------------------------------------------

    def refusal_changes(self, current: Set[Refusal], ended: Set[Refusal]) -> None:
        """Log the refusals in `current` not in force yet; those in `ended` (a superset of
        what ended) are no longer in force unless `current` has them."""
        for node_id, reason in sorted(current - self.refusals_logged):
            events.emit(
                logging.WARNING,
                f"refused mesh node {node_id}: {reason}",
                events.ANNOUNCEMENT_REFUSED,
                node_id=node_id,
                reason=reason,
            )
        # Forget refusals that ended, so a node that misbehaves again is logged again.
        self.refusals_logged -= ended
        self.refusals_logged |= current

    def refusals(self, current: Iterable[Refusal]) -> None:
        """The refusals of a full reconcile: every one in force now; any other ended."""
        self.refusal_changes(set(current), set(self.refusals_logged))

    def holds(self, holds: Iterable[HoldEvent], grace: float) -> None:
        """Peers held over a vanished announcement, or whose announcement came back."""
        now = self.clock()
        for ev in holds:
            who = ev.node_id[:8] + (f" ({ev.peer.name})" if ev.peer.name else "")
            if ev.kind == "held":
                left = max(0.0, ev.until - now)
                text = (
                    f"{ev.interface}: the announcement of mesh node {who} vanished; its peer stays "
                    f"{left:.0f} s more (grace, counted while bmx7 answers) unless it comes back"
                )
            else:
                text = f"{ev.interface}: the announcement of mesh node {who} is back; its peer stayed"
            events.emit(
                logging.INFO,
                text,
                events.PEER_HELD,
                interface=ev.interface,
                node_id=ev.node_id,
                peer=ev.peer.public_key,
                hold="started" if ev.kind == "held" else "ended",
                grace=f"{grace:g}",
            )

    def bmx7_down(self, liveness: Liveness, kept: Mapping[str, list[str]]) -> None:
        """bmx7 stopped answering: `kept` (interface -> its mesh peers' keys) stay as they are."""
        for name, keys in kept.items():
            events.emit(
                logging.WARNING,
                f"{name}: {liveness.describe()}; its {len(keys)} mesh peer(s) and its mesh "
                "address are kept as they are until bmx7 answers",
                events.BMX7_UNAVAILABLE,
                interface=name,
                socket=liveness.socket,
                kept=len(keys),
            )

    def bmx7_back(self, interface: str, liveness: Liveness, *, restarted: bool) -> None:
        what = "bmx7 restarted" if restarted else "bmx7 answers again"
        events.emit(
            logging.INFO,
            f"{interface}: {what} on {liveness.socket}; its SMS registration is checked "
            "and vanished announcements are held for the grace period",
            events.BMX7_AVAILABLE,
            interface=interface,
            socket=liveness.socket,
            restarted="yes" if restarted else "no",
        )

    # -- the devices ---------------------------------------------------------------

    def devices_read(self, observed: ObservedState) -> None:
        """A full read of the managed devices: count their peers and recent handshakes,
        and log the handshakes that turned stale."""
        now = self.wall_clock()
        self.peer_counts = {}
        self.recent_handshakes = 0
        stale_now: set[tuple[str, str]] = set()
        for iface in observed.interfaces.values():
            if not iface.managed:
                continue
            device = iface.device
            self.peer_counts[iface.name] = len(device.peers) if device is not None else 0
            if device is None:
                continue
            for key, stats in device.stats.items():
                if not stats.last_handshake:
                    continue
                if now - stats.last_handshake <= RECENT_HANDSHAKE:
                    self.recent_handshakes += 1
                else:
                    stale_now.add((iface.name, key))
        for name, key in sorted(stale_now - self.stale_logged):
            events.emit(
                logging.WARNING,
                f"{name}: handshake with peer {key} is stale (none in 3 minutes)",
                events.HANDSHAKE_STALE,
                interface=name,
                peer=key,
            )
        self.stale_logged = stale_now

    def status_line(self, *, config_problem: str | None, failed: bool) -> str:
        """systemd's STATUS= (and the start message): the numbers, and what is wrong."""
        peers, recent = sum(self.peer_counts.values()), self.recent_handshakes
        text = f"{len(self.peer_counts)} interface(s), {peers} peer(s), {recent} with a recent handshake"
        if config_problem:
            text += f" - the configuration file {config_problem}: the previous one stays in force"
        return text + (" - last apply failed" if failed else "")
