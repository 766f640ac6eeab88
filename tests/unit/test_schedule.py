"""The service's timers (service/schedule.py): no timer ever delays another."""

from __future__ import annotations

from bmx7_wg.service.schedule import Schedule


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_event_is_due_after_the_debounce_whatever_else_is_pending() -> None:
    clock = Clock()
    s = Schedule(clock)
    s.at("grace", 130.0, "mesh grace period ended")  # a grace period pending for 30 s
    s.at("retry", 105.0, "retry after a failed apply")
    s.soon("events", 0.01, "mesh announcements or trust changed")
    assert s.next() == 100.01
    assert s.timeout_ms() == 11
    clock.now = 100.01
    assert s.due() == {"events": ["mesh announcements or trust changed"]}
    assert s.next() == 105.0  # the others stay as they were


def test_a_burst_is_handled_once_with_every_reason() -> None:
    clock = Clock()
    s = Schedule(clock)
    s.soon("events", 0.01, "a")
    clock.now += 0.005
    s.soon("events", 0.01, "b")
    s.soon("events", 0.01, "a")
    assert s.next() == 100.01  # the earliest wins: a burst never postpones
    clock.now = 101
    assert s.due() == {"events": ["a", "b"]}
    assert s.due() == {}
    assert s.timeout_ms() == -1


def test_at_replaces_and_none_cancels() -> None:
    clock = Clock()
    s = Schedule(clock)
    s.at("grace", 130.0, "x")
    s.at("grace", 120.0, "x")
    assert s.next() == 120.0
    s.at("grace", None, "x")
    assert s.next() is None


def test_several_due_together() -> None:
    clock = Clock()
    s = Schedule(clock)
    s.at("periodic", 100.0, "periodic check")
    s.at("grace", 99.0, "mesh grace period ended")
    s.at("probe", 200.0, "look at bmx7")
    assert s.due() == {"periodic": ["periodic check"], "grace": ["mesh grace period ended"]}
    assert s.timeout_ms() == 100_001
