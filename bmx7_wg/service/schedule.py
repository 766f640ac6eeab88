"""The service's timers: what it has to do next, and when. Pure; the clock is passed in.

Each timer has a purpose (its key) and a reason that ends up in the journal. Timers
never wait for one another: an event sets its own timer at `now + debounce` whatever
else is pending (a grace period that ends in 30 s, a retry in 5 s), so every event is
handled within the debounce. `soon()` keeps the earlier of two times for one key, so a
burst of events is handled once; `at()` replaces the key's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

# The service's timers (keys), one per purpose. Which of them mean a reconcile, and when a
# step does instead, is service/due.py's to say.
WATCHDOG, RELOAD, PROBE, LINKS = "watchdog", "reload", "probe", "links"
EVENTS, MESH, GRACE, RETRY, PERIODIC = "events", "mesh", "grace", "retry", "periodic"
CONFIRM, METRICS = "confirm", "metrics"


class Schedule:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._timers: dict[str, tuple[float, list[str]]] = {}

    def at(self, key: str, when: float | None, reason: str) -> None:
        """Set timer `key` to `when` (monotonic), or cancel it when `when` is None."""
        if when is None:
            self._timers.pop(key, None)
        else:
            self._timers[key] = (when, [reason])

    def soon(self, key: str, delay: float, reason: str) -> None:
        """Timer `key` in `delay` seconds at the latest; the reasons of a burst add up."""
        when = self.clock() + delay
        old = self._timers.get(key)
        if old is None:
            self._timers[key] = (when, [reason])
        else:
            reasons = old[1] if reason in old[1] else [*old[1], reason]
            self._timers[key] = (min(old[0], when), reasons)

    def cancel(self, key: str) -> None:
        self._timers.pop(key, None)

    def next(self) -> float | None:
        """When the earliest timer is due (monotonic), or None."""
        return min((when for when, _ in self._timers.values()), default=None)

    def timeout_ms(self) -> int:
        """How long poll() may sleep: until the earliest timer (-1: no timer)."""
        when = self.next()
        if when is None:
            return -1
        return max(0, int((when - self.clock()) * 1000) + 1)

    def due(self) -> dict[str, list[str]]:
        """Remove and return the timers that are due: key -> reasons."""
        now = self.clock()
        out = {key: reasons for key, (when, reasons) in self._timers.items() if when <= now}
        for key in out:
            del self._timers[key]
        return out
