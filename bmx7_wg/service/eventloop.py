"""The service's event loop: one poll() over SIGHUP/SIGTERM/SIGINT, the resolver's
wake-ups and the file descriptors it is given (inotify, rtnetlink), with the timeout the
schedule gives; each round it calls the handler of every source that is readable, then
the round's work. It returns once SIGTERM or SIGINT arrived.

It knows nothing of configurations, meshes or reconciles: what an event means is
service/wakeups.py's, what the timers ask is service/due.py's, the work is service/loop.py's.

Signals reach poll() through a pipe (`signal.set_wakeup_fd`): a signal that arrives
between two polls, or while the work runs, still ends the next poll at once. The
resolver's threads wake it through a pipe of their own, the one thing here that is called
off the main thread.
"""

from __future__ import annotations

import os
import select
import signal
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from types import FrameType
from typing import Any

_SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

Handler = Callable[[], None]
# A signal's disposition as signal.signal() returns it: a function, SIG_DFL/SIG_IGN, or
# None (set outside Python).
_Disposition = Callable[[int, FrameType | None], Any] | int | None


class EventLoop:
    """The two wake-up pipes, the poll object and the signal handlers of one service."""

    def __init__(self) -> None:
        self._stop = self._sighup = False
        self._signal_r, self._signal_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Endpoint names are looked up on threads; an answer that changes wakes the loop.
        self._resolved_r, self._resolved_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller = select.poll()
        # What was there before the handlers were installed (None: not installed).
        self._previous: tuple[int, dict[int, _Disposition]] | None = None

    @contextmanager
    def signals(self) -> Iterator[None]:
        """SIGHUP, SIGTERM and SIGINT caught (and the wakeup fd set) inside the block, the
        previous handlers and wakeup fd back after it. Inside a block that already holds
        them, nothing changes: the service holds them from its start to its last word,
        so that a signal during the start-up or the shutdown is an event, not the end."""
        if self._previous is not None:
            yield
            return
        self._install()
        try:
            yield
        finally:
            self._restore()

    def _install(self) -> None:
        wakeup = signal.set_wakeup_fd(self._signal_w)
        self._previous = (wakeup, {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS})

    def _restore(self) -> None:
        if self._previous is None:
            return
        wakeup, handlers = self._previous
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(wakeup)
        self._previous = None

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self._sighup = True
        else:
            self._stop = True

    def wake_resolved(self) -> None:
        """A resolved name changed (called on a resolver thread): only wake the loop."""
        try:
            os.write(self._resolved_w, b"r")
        except BlockingIOError:
            pass  # the loop has not read the last wake-up yet: one is enough

    def run(
        self,
        timeout_ms: Callable[[], int | None],
        after_wakeup: Handler,
        *,
        sources: Mapping[int, Handler],
        on_resolved: Handler,
        on_sighup: Handler,
    ) -> None:
        """Poll until SIGTERM or SIGINT: each round waits at most `timeout_ms()` (None:
        until an event), calls the handler of each readable source, `on_resolved` after
        a wake-up, `on_sighup` after a SIGHUP, then `after_wakeup`. The round in which a
        stop arrived does no work."""
        with self.signals():
            for fd in (self._signal_r, *sources, self._resolved_r):
                self._poller.register(fd, select.POLLIN)
            while True:
                for fd, _ in self._poller.poll(timeout_ms()):
                    if fd == self._signal_r:
                        drain(self._signal_r)
                    elif fd == self._resolved_r:
                        drain(self._resolved_r)
                        on_resolved()
                    else:
                        sources[fd]()
                if self._stop:
                    self._stop = False
                    return
                if self._sighup:
                    self._sighup = False
                    on_sighup()
                after_wakeup()

    def close(self) -> None:
        self._restore()
        for fd in (self._signal_r, self._signal_w, self._resolved_r, self._resolved_w):
            os.close(fd)


def drain(fd: int) -> None:
    """Read a non-blocking wake-up pipe empty: however many wake-ups it holds, one is enough."""
    try:
        while os.read(fd, 64):
            pass
    except BlockingIOError:
        pass
