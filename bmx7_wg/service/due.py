"""What the service's due timers ask of it: nothing, a step, a full reconcile, a reload
first; or nothing at all while an `apply --confirm` waits. Pure: the loop (service/loop.py)
looks at what this says to look at (the links, bmx7's socket, the configuration file) and
does the work this decides.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bmx7_wg.pending import Pending
from bmx7_wg.service.schedule import (
    CONFIRM,
    EVENTS,
    GRACE,
    LINKS,
    MESH,
    METRICS,
    PERIODIC,
    PROBE,
    RELOAD,
    WATCHDOG,
    Schedule,
)

log = logging.getLogger(__name__)

# Timers that are not themselves a reason to reconcile: every other one is. MESH and
# GRACE alone are a step (service/incremental.py) when one can follow the last full reconcile.
NOT_RECONCILE = (WATCHDOG, RELOAD, PROBE, LINKS, CONFIRM, METRICS)
STEPS = frozenset({MESH, GRACE})
# seconds: how often a service that defers to an `apply --confirm` looks whether it ended
# (what falls due meanwhile is kept, and due at its end)
CONFIRM_RECHECK = 0.5


@dataclass(frozen=True)
class Work:
    """What the service does now: a step (a full reconcile if the step cannot decide), a
    full reconcile, or nothing; and why."""

    kind: Literal["step", "full", "nothing"]
    reasons: tuple[str, ...] = ()
    read_all: bool = False  # the safety net: every announcement file read afresh


@dataclass(frozen=True)
class Due:
    """The timers due now, sorted by what they ask the service to look at first."""

    reasons: tuple[str, ...]  # each reconcile timer's reasons
    steps_only: bool  # only announcements changed and graces ended: a step may do
    check_links: bool  # compare the links with what the last full reconcile left
    probe: bool  # look at bmx7's control socket (a grace ends only while bmx7 answers)
    reload: bool  # read the configuration file again
    read_all: bool  # the periodic safety net is among them

    @classmethod
    def of(cls, due: Mapping[str, list[str]]) -> Due:
        reconciles = [key for key in due if key not in NOT_RECONCILE]
        reasons = tuple(r for key in reconciles for r in due[key])
        return cls(
            reasons=reasons,
            steps_only=bool(reasons) and STEPS.issuperset(reconciles),
            check_links=LINKS in due,
            probe=PROBE in due or GRACE in due,
            reload=RELOAD in due,
            read_all=PERIODIC in due,
        )

    def work(self, *, links_changed: str | None, bmx7_changed: str | None, reloaded: bool) -> Work:
        """What to do, given what looking found: why the links differ, what bmx7's socket
        showed (None: nothing new, or not looked at), whether a new configuration is in
        force. A difference in the links or in bmx7 needs a full reconcile; so does a
        reload, which reconciles only if there is a reason to."""
        reasons = list(self.reasons)
        steps_only = self.steps_only
        for found in (links_changed, bmx7_changed):
            if found:
                reasons.append(found)
                steps_only = False
        if reloaded:
            reasons.insert(0, "configuration changed")
        if not reasons:
            return Work("nothing")
        return Work("step" if steps_only and not self.reload else "full", tuple(reasons), self.read_all)


class ConfirmWait:
    """While an `apply --confirm` waits for its confirmation, the service changes nothing:
    its rollback plans from the state it read, and a reconcile now would apply the new
    configuration again after the rollback restored the old. Everything due waits (a full
    reconcile follows the end of the wait)."""

    def __init__(self) -> None:
        self.pid: int | None = None  # of the apply --confirm the service waits for
        self.deferred: dict[str, list[str]] = {}  # timers due while it waits: key -> reasons

    def defer(self, due: dict[str, list[str]], holder: Pending | None, schedule: Schedule) -> bool:
        """Keep what is `due` while `holder` (the claim of a waiting apply --confirm)
        exists, and look again in CONFIRM_RECHECK; True: deferred. When the wait ended,
        add what waited to `due`, with a reload and a reconcile."""
        if holder is None:
            if self.pid is not None:
                log.info("apply --confirm (pid %d) ended; the service goes on", self.pid)
                self.pid = None
                due.pop(CONFIRM, None)
                # What waited is due now, the configuration first (restored by a rollback,
                # or the new one confirmed): a reconcile must never see the old one.
                for key, reasons in self.deferred.items():
                    schedule.cancel(key)
                    due.setdefault(key, []).extend(r for r in reasons if r not in due[key])
                self.deferred = {}
                due.setdefault(RELOAD, []).append("apply --confirm ended")
                due.setdefault(EVENTS, []).append("apply --confirm ended")
            return False
        if self.pid != holder.pid:
            self.pid = holder.pid
            log.info("%s: the service changes nothing until it ends", holder.describe())
        for key, reasons in due.items():
            if key != CONFIRM:
                kept = self.deferred.setdefault(key, [])
                kept.extend(r for r in reasons if r not in kept)
        schedule.soon(CONFIRM, CONFIRM_RECHECK, "apply --confirm waits")
        return True
