"""What the service tells the journal (service/report.py): each thing once while it
lasts, and the status line systemd shows."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bmx7_wg.mesh.grace import HoldEvent
from bmx7_wg.mesh.liveness import Liveness
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState, Peer, PeerStats
from bmx7_wg.service import events
from bmx7_wg.service.report import RECENT_HANDSHAKE, Report
from tests.logs import attached

NODE_A = "A" * 56
NODE_B = "B" * 56
KEY_1 = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg="
KEY_2 = "A" * 43 + "="
NOW = 1_800_000_000.0


@dataclass(frozen=True)
class Event:
    level: int
    message: str
    fields: dict[str, str]


class Journal(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[Event] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append(Event(record.levelno, record.getMessage(), dict(getattr(record, "fields", {}))))

    def take(self) -> list[Event]:
        taken, self.events = self.events, []
        return taken


@pytest.fixture
def journal() -> Iterator[Journal]:
    """The events service/events.py emits (its logger may not propagate: logsetup)."""
    with attached("bmx7_wg.service.events", Journal()) as handler:
        yield handler


def refused(node_id: str, why: str) -> tuple[str, str]:
    return (node_id, why)


def test_a_refusal_is_logged_once_while_it_lasts(journal: Journal) -> None:
    report = Report()
    report.refusals([refused(NODE_A, "claims 10.0.0.0/8")])
    assert journal.take() == [
        Event(
            logging.WARNING,
            f"refused mesh node {NODE_A}: claims 10.0.0.0/8",
            {
                "BMX7WG_NODE_ID": NODE_A,
                "BMX7WG_REASON": "claims 10.0.0.0/8",
                "MESSAGE_ID": events.ANNOUNCEMENT_REFUSED,
            },
        )
    ]
    report.refusals([refused(NODE_A, "claims 10.0.0.0/8")])
    report.refusals([refused(NODE_A, "claims 10.0.0.0/8"), refused(NODE_B, "is denied")])
    assert [e.message for e in journal.take()] == [f"refused mesh node {NODE_B}: is denied"]


def test_a_refusal_that_ended_is_logged_again_when_it_comes_back(journal: Journal) -> None:
    report = Report()
    report.refusals([refused(NODE_A, "is denied")])
    report.refusals([])  # the node stopped announcing, or was allowed
    assert report.refusals_logged == set()
    report.refusals([refused(NODE_A, "is denied")])
    assert [e.message for e in journal.take()] == [f"refused mesh node {NODE_A}: is denied"] * 2


def test_a_step_forgets_only_the_refusals_of_the_nodes_it_touched(journal: Journal) -> None:
    report = Report()
    report.refusals([refused(NODE_A, "is denied"), refused(NODE_B, "claims the key of another")])
    journal.take()
    # A step that read node B's file again: B's refusal ended, A's is not looked at.
    report.refusal_changes(set(), {refused(NODE_B, "claims the key of another")})
    assert report.refusals_logged == {refused(NODE_A, "is denied")}
    report.refusal_changes({refused(NODE_B, "claims the key of another")}, set())
    assert [e.message for e in journal.take()] == [f"refused mesh node {NODE_B}: claims the key of another"]


def interface(name: str, stats: dict[str, float] | None, *, managed: bool = True) -> ObservedInterface:
    """A WireGuard interface with a peer per key of `stats` (key -> last handshake);
    None: the device could not be read."""
    device = None
    if stats is not None:
        device = Device(
            peers={k: Peer(k) for k in stats},
            stats={k: PeerStats(last_handshake=t) for k, t in stats.items()},
        )
    return ObservedInterface(name, 7, "userspace", managed, 1420, True, frozenset(), frozenset(), device)


def observed(*interfaces: ObservedInterface) -> ObservedState:
    return ObservedState({i.name: i for i in interfaces})


def test_the_status_line_counts_managed_peers_and_recent_handshakes(journal: Journal) -> None:
    report = Report(wall_clock=lambda: NOW)
    assert report.status_line(config_problem=None, failed=False) == (
        "0 interface(s), 0 peer(s), 0 with a recent handshake"
    )
    report.devices_read(
        observed(
            interface("wg0", {KEY_1: NOW - 10, KEY_2: 0.0}),  # one recent, one never
            interface("wg1", None),  # unreadable: an interface without peers
            interface("wg9", {KEY_1: NOW}, managed=False),  # not ours: not counted
        )
    )
    assert report.status_line(config_problem=None, failed=False) == (
        "2 interface(s), 2 peer(s), 1 with a recent handshake"
    )
    assert report.status_line(config_problem="is missing", failed=True) == (
        "2 interface(s), 2 peer(s), 1 with a recent handshake - the configuration file is missing: "
        "the previous one stays in force - last apply failed"
    )
    assert journal.take() == []


def test_a_stale_handshake_is_logged_once_and_again_after_it_recovered(journal: Journal) -> None:
    now = [NOW]
    report = Report(wall_clock=lambda: now[0])
    last = NOW - RECENT_HANDSHAKE - 1
    report.devices_read(observed(interface("wg0", {KEY_1: last, KEY_2: NOW})))
    assert journal.take() == [
        Event(
            logging.WARNING,
            f"wg0: handshake with peer {KEY_1} is stale (none in 3 minutes)",
            {"BMX7WG_INTERFACE": "wg0", "BMX7WG_PEER": KEY_1, "MESSAGE_ID": events.HANDSHAKE_STALE},
        )
    ]
    assert report.recent_handshakes == 1
    report.devices_read(observed(interface("wg0", {KEY_1: last, KEY_2: NOW})))
    assert journal.take() == []
    report.devices_read(observed(interface("wg0", {KEY_1: NOW, KEY_2: NOW})))  # it recovered
    now[0] += RECENT_HANDSHAKE + 1
    report.devices_read(observed(interface("wg0", {KEY_1: NOW, KEY_2: now[0]})))
    assert [e.fields["BMX7WG_PEER"] for e in journal.take()] == [KEY_1]


def test_bmx7_down_and_back(journal: Journal) -> None:
    report = Report()
    down = Liveness("/run/bmx7/sock", answering=False, reason="connection refused")
    report.bmx7_down(down, {"wg-mesh": [KEY_1, KEY_2]})
    report.bmx7_back("wg-mesh", Liveness("/run/bmx7/sock", answering=True), restarted=True)
    assert journal.take() == [
        Event(
            logging.WARNING,
            "wg-mesh: bmx7 is not running (no answer on /run/bmx7/sock: connection refused); its 2 mesh "
            "peer(s) and its mesh address are kept as they are until bmx7 answers",
            {
                "BMX7WG_INTERFACE": "wg-mesh",
                "BMX7WG_SOCKET": "/run/bmx7/sock",
                "BMX7WG_KEPT": "2",
                "MESSAGE_ID": events.BMX7_UNAVAILABLE,
            },
        ),
        Event(
            logging.INFO,
            "wg-mesh: bmx7 restarted on /run/bmx7/sock; its SMS registration is checked and vanished "
            "announcements are held for the grace period",
            {
                "BMX7WG_INTERFACE": "wg-mesh",
                "BMX7WG_SOCKET": "/run/bmx7/sock",
                "BMX7WG_RESTARTED": "yes",
                "MESSAGE_ID": events.BMX7_AVAILABLE,
            },
        ),
    ]


def test_holds_say_how_long_the_peer_stays(journal: Journal) -> None:
    report = Report(clock=lambda: 1000.0)
    peer = Peer(KEY_1, name="alice")
    report.holds(
        [
            HoldEvent("held", "wg-mesh", NODE_A, peer, until=1299.6),
            HoldEvent("back", "wg-mesh", NODE_B, Peer(KEY_2)),
        ],
        300.0,
    )
    held, back = journal.take()
    assert held.message == (
        "wg-mesh: the announcement of mesh node AAAAAAAA (alice) vanished; its peer stays 300 s more "
        "(grace, counted while bmx7 answers) unless it comes back"
    )
    expected: dict[str, Any] = {
        "BMX7WG_INTERFACE": "wg-mesh",
        "BMX7WG_NODE_ID": NODE_A,
        "BMX7WG_PEER": KEY_1,
        "BMX7WG_HOLD": "started",
        "BMX7WG_GRACE": "300",
        "MESSAGE_ID": events.PEER_HELD,
    }
    assert held.fields == expected
    assert back.message == "wg-mesh: the announcement of mesh node BBBBBBBB is back; its peer stayed"
    assert back.fields["BMX7WG_HOLD"] == "ended"
