"""Whether bmx7 runs, and when it restarted: decided by its control socket, never by file ages.

bmx7's JSON files are rewritten every `jsonUpdateInterval` (60 s by default) and stay
behind when bmx7 is killed, and its `rcvdSms/` keeps the last announcements: only an
answer on the control socket says that bmx7 runs now. A restart shows as bmx7 answering
again after it did not, or as a later start time (now minus the uptime bmx7 reports, to
the second). Pure: the answers are read by bmx7.py; this module compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# bmx7 reports its uptime in whole seconds and the answer takes a moment: start times
# closer than this are the same start.
RESTART_SLACK = 3.0

Change = Literal["down", "back", "restarted"]


@dataclass(frozen=True)
class Liveness:
    """One look at bmx7: does it answer on its control socket, and since when does it run."""

    socket: str  # the control socket asked
    answering: bool
    started: float | None = None  # seconds since the epoch (now - bmx7's uptime)
    node_id: str | None = None
    reason: str = ""  # why it does not answer

    def describe(self) -> str:
        if self.answering:
            return f"bmx7 answers on {self.socket}"
        return f"bmx7 is not running (no answer on {self.socket}: {self.reason})"


def parse_uptime(text: str) -> int | None:
    """bmx7's status `uptime` ("D:HH:MM:SS") in seconds; None if it is not that."""
    parts = text.split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        return None
    days, hours, minutes, seconds = map(int, parts)
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def compare(before: Liveness | None, seen: Liveness) -> Change | None:
    """What changed from one look to the next: "down" (stopped answering; also on a first
    look), "back" (answers again), "restarted" (answers, but started anew or with
    another node id), or None."""
    if not seen.answering:
        return "down" if before is None or before.answering else None
    if before is None:
        return None
    if not before.answering:
        return "back"
    if before.node_id and seen.node_id and before.node_id != seen.node_id:
        return "restarted"
    later = (seen.started or 0.0) - (before.started or 0.0)
    if before.started is not None and seen.started is not None and later > RESTART_SLACK:
        return "restarted"
    return None


class Bmx7Watch:
    """Follows successive looks at one bmx7 and says what changed between them."""

    def __init__(self) -> None:
        self.last: Liveness | None = None

    def update(self, seen: Liveness) -> Change | None:
        before, self.last = self.last, seen
        return compare(before, seen)
