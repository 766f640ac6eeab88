"""Endpoint names looked up concurrently, bounded, never on the caller's thread (net/resolve.py)."""

from __future__ import annotations

import threading
import time

import pytest

from bmx7_wg.net.resolve import Resolver, literal_endpoint


class Lookups:
    """A stand-in resolver: names in `hang` block until released, others answer."""

    def __init__(self, answers: dict[str, str], hang: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.answers = answers
        self.hang = set(hang)
        self.release = threading.Event()
        self.asked: list[str] = []
        self.hanging_at_once = 0  # the most lookups that were blocked at the same time
        self._hanging = 0
        self._count = threading.Lock()

    def __call__(self, host: str) -> str:
        self.asked.append(host)
        if host in self.hang:
            with self._count:
                self._hanging += 1
                self.hanging_at_once = max(self.hanging_at_once, self._hanging)
            self.release.wait(30)
            with self._count:
                self._hanging -= 1
        if host not in self.answers:
            raise OSError(-2, "Name or service not known")
        return self.answers[host]


def test_literals_need_no_lookup() -> None:
    assert literal_endpoint("192.0.2.1", 51820) == "192.0.2.1:51820"
    assert literal_endpoint("fd00::1", 1) == "[fd00::1]:1"
    assert literal_endpoint("FD00:0::1", 1) == "[fd00::1]:1"
    assert literal_endpoint("vpn.example.org", 1) is None
    lookups = Lookups({})
    r = Resolver(lookup=lookups)
    r.request(["192.0.2.1"])
    assert r("192.0.2.1", 5) == "192.0.2.1:5" and lookups.asked == []


def test_hanging_names_are_bounded_all_together(caplog: pytest.LogCaptureFixture, no_hang: None) -> None:
    lookups = Lookups({"ok.example": "2001:db8::1"}, hang={"h1", "h2", "h3"})
    try:
        r = Resolver(0.5, lookup=lookups)
        r.request(["h1", "h2", "h3", "ok.example"])
        r.wait()
        # One bound for all, not one per name: the three hanging lookups were waited for together.
        # (Counted, not timed: a loaded machine stretches any wall-clock bound. A serial resolver
        # would block on h1, which hangs until released, and never start the other two.)
        deadline = time.monotonic() + 10
        while lookups.hanging_at_once < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lookups.hanging_at_once == 3
        assert r("ok.example", 7) == "[2001:db8::1]:7"
        assert r("h1", 7) is None  # the device's endpoint stays as it is
        assert "cannot resolve endpoint host h1 (no answer within 0.5 s); its endpoint is left" in caplog.text
    finally:
        lookups.release.set()


def test_answers_are_kept_refreshed_and_wake_the_caller() -> None:
    lookups = Lookups({"vpn": "192.0.2.7"})
    changed = threading.Event()
    clock = [0.0]
    r = Resolver(lookup=lookups, on_change=changed.set, refresh=60, retry=10, clock=lambda: clock[0])
    assert r("vpn", 1) is None  # never asked: nothing yet, and no waiting
    r.request(["vpn"])
    assert changed.wait(5)
    assert r("vpn", 1) == "192.0.2.7:1"
    r.request(["vpn"])  # fresh: not asked again
    r.wait(5)
    assert lookups.asked == ["vpn"]
    # After `refresh` it is asked again; a failure keeps the last good answer.
    changed.clear()
    lookups.answers.clear()
    clock[0] = 61
    r.request(["vpn"])
    r.wait(5)
    assert lookups.asked == ["vpn", "vpn"]
    assert r("vpn", 1) == "192.0.2.7:1"
    assert not changed.is_set()
    # A failed name is tried again after `retry`, and a new answer wakes the caller.
    lookups.answers["vpn"] = "192.0.2.8"
    clock[0] = 71
    r.request(["vpn"])
    assert changed.wait(5)
    assert r("vpn", 1) == "192.0.2.8:1"


def test_one_lookup_per_name_at_a_time() -> None:
    lookups = Lookups({}, hang={"h"})
    try:
        r = Resolver(0.1, lookup=lookups)
        for _ in range(5):
            r.request(["h"])
        time.sleep(0.1)
        assert lookups.asked == ["h"]
    finally:
        lookups.release.set()
