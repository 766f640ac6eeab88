"""The service's event loop (service/eventloop.py) alone, without root: signals sent to this
process, a wake-up from another thread, a readable pipe and the timeout drive it; the
signal handlers and the wakeup fd it replaced are back after it."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from bmx7_wg.service.eventloop import EventLoop

FOREVER = 60_000  # ms: a timeout no test waits for (no_hang fails it after 20 s)


SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)


@pytest.fixture
def saved_signals(no_hang: None) -> Iterator[None]:
    """This process's handlers and wakeup fd as they were after each test, even one in
    which the loop forgot to put them back."""
    handlers = {sig: signal.getsignal(sig) for sig in SIGNALS}
    wakeup = current_wakeup_fd()
    try:
        yield
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(wakeup)


@pytest.fixture
def loop(saved_signals: None) -> Iterator[EventLoop]:
    event_loop = EventLoop()
    try:
        yield event_loop
    finally:
        event_loop.close()


def current_wakeup_fd() -> int:
    fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(fd)
    return fd


def later(action: Callable[[], None], delay: float = 0.05) -> threading.Timer:
    """`action` on another thread in a moment, while the loop sleeps in poll()."""
    timer = threading.Timer(delay, action)
    timer.start()
    return timer


def kill_self(sig: int) -> Callable[[], None]:
    return lambda: os.kill(os.getpid(), sig)


def run_until_stopped(loop: EventLoop) -> None:
    """Run the loop where nothing but a stop may happen: any work, resolved name or SIGHUP
    fails the test, and no timeout ends the wait."""
    loop.run(
        lambda: FOREVER,
        unexpected("after_wakeup"),
        sources={},
        on_resolved=unexpected("on_resolved"),
        on_sighup=unexpected("on_sighup"),
    )


def unexpected(what: str) -> Callable[[], None]:
    def called() -> None:
        raise AssertionError(f"{what} called")

    return called


def test_sighup_calls_its_handler_once_and_the_loop_goes_on(loop: EventLoop) -> None:
    seen: list[str] = []

    def after_wakeup() -> None:
        seen.append("after")
        kill_self(signal.SIGTERM)()  # the round after the SIGHUP ran: now stop

    later(kill_self(signal.SIGHUP))
    started = time.monotonic()
    loop.run(
        lambda: FOREVER,
        after_wakeup,
        sources={},
        on_resolved=unexpected("on_resolved"),
        on_sighup=lambda: seen.append("sighup"),
    )
    # The SIGHUP's round did its work; the SIGTERM's round returned without any.
    assert seen == ["sighup", "after"]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_makes_run_return_without_work(loop: EventLoop, sig: int) -> None:
    later(kill_self(sig))
    started = time.monotonic()
    run_until_stopped(loop)
    assert time.monotonic() - started < 10


def test_a_stop_during_the_start_up_ends_the_first_poll(loop: EventLoop) -> None:
    """The service holds the signals from its start: a SIGTERM before the loop runs is
    not lost, and the first round returns at once."""
    with loop.signals():
        os.kill(os.getpid(), signal.SIGTERM)
        started = time.monotonic()
        run_until_stopped(loop)
        assert time.monotonic() - started < 10


def test_a_wake_from_another_thread_calls_the_resolved_handler_at_once(loop: EventLoop) -> None:
    seen: list[str] = []

    def after_wakeup() -> None:
        seen.append("after")
        kill_self(signal.SIGTERM)()

    later(loop.wake_resolved)
    started = time.monotonic()
    loop.run(
        lambda: FOREVER,
        after_wakeup,
        sources={},
        on_resolved=lambda: seen.append("resolved"),
        on_sighup=unexpected("on_sighup"),
    )
    assert seen == ["resolved", "after"]
    assert time.monotonic() - started < 10  # not the timeout's 60 s


def test_wakes_before_the_loop_reads_them_are_one(loop: EventLoop) -> None:
    seen: list[str] = []
    for _ in range(100_000):  # more than the pipe holds (64 KiB): the writes never block
        loop.wake_resolved()

    def after_wakeup() -> None:
        seen.append("after")
        kill_self(signal.SIGTERM)()

    loop.run(
        lambda: FOREVER,
        after_wakeup,
        sources={},
        on_resolved=lambda: seen.append("resolved"),
        on_sighup=unexpected("on_sighup"),
    )
    assert seen == ["resolved", "after"]


def test_a_readable_source_calls_its_handler(loop: EventLoop) -> None:
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    quiet_r, quiet_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    seen: list[bytes] = []

    def on_readable() -> None:
        seen.append(os.read(r, 64))
        kill_self(signal.SIGTERM)()

    def write() -> None:
        os.write(w, b"event")

    try:
        later(write)
        loop.run(
            lambda: FOREVER,
            lambda: None,
            sources={quiet_r: unexpected("the quiet source's handler"), r: on_readable},
            on_resolved=unexpected("on_resolved"),
            on_sighup=unexpected("on_sighup"),
        )
    finally:
        for fd in (r, w, quiet_r, quiet_w):
            os.close(fd)
    assert seen == [b"event"]


def test_the_timeout_is_asked_each_round_and_honoured(loop: EventLoop) -> None:
    """Nothing happens: after_wakeup runs once the timeout the callable gave has passed."""
    asked: list[float] = []
    woke: list[float] = []

    def timeout_ms() -> int:
        asked.append(time.monotonic())
        return 200

    def after_wakeup() -> None:
        woke.append(time.monotonic())
        if len(woke) == 2:
            kill_self(signal.SIGTERM)()

    loop.run(
        timeout_ms,
        after_wakeup,
        sources={},
        on_resolved=unexpected("on_resolved"),
        on_sighup=unexpected("on_sighup"),
    )
    assert len(woke) == 2 and len(asked) == 3  # the third poll is the one the SIGTERM ended
    for before, after in zip(asked, woke, strict=False):
        assert after - before >= 0.19


def test_run_puts_the_previous_handlers_and_wakeup_fd_back(loop: EventLoop) -> None:
    def previous(signum: int, frame: object) -> None:
        raise AssertionError("the previous handler was called while the loop ran")

    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        for sig in SIGNALS:
            signal.signal(sig, previous)
        signal.set_wakeup_fd(w)
        later(kill_self(signal.SIGTERM))
        run_until_stopped(loop)
        assert all(signal.getsignal(s) is previous for s in SIGNALS)
        assert current_wakeup_fd() == w
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)


def test_inside_signals_the_handlers_stay_until_the_block_ends(loop: EventLoop) -> None:
    """The service's shutdown runs after run() returned, still with the loop's handlers: a
    second SIGTERM then is an event, not the end of the process."""
    before = signal.getsignal(signal.SIGTERM)
    with loop.signals():
        later(kill_self(signal.SIGTERM))
        run_until_stopped(loop)
        held = signal.getsignal(signal.SIGTERM)
        assert held is not before
        os.kill(os.getpid(), signal.SIGTERM)  # with the default handler, pytest would die here
    assert signal.getsignal(signal.SIGTERM) is before


def test_close_puts_the_handlers_back_if_the_block_never_ended(saved_signals: None) -> None:
    """A service that fails between its start and its loop's end still closes its loop."""
    before = {sig: signal.getsignal(sig) for sig in SIGNALS}
    wakeup = current_wakeup_fd()
    event_loop = EventLoop()
    held = event_loop.signals()
    held.__enter__()  # never left, as by an exception that skipped the exit
    assert all(signal.getsignal(sig) is not before[sig] for sig in SIGNALS)
    assert current_wakeup_fd() != wakeup
    event_loop.close()
    assert {sig: signal.getsignal(sig) for sig in SIGNALS} == before
    assert current_wakeup_fd() == wakeup
