"""Endpoint host names to addresses, off the critical path.

getaddrinfo() cannot be interrupted, and with an unreachable DNS server it blocks for
the resolver's whole timeout (by default 5 s per try, twice, per name). Asked one name
after another on the caller's thread, three such names made `plan` take 30 s and kept
the service from everything else, its watchdog included. So every name is looked up on
a thread of its own, all at once:

- one-shot commands wait for the answers at most `timeout` seconds in all; a name without
  an answer by then keeps the endpoint the device has;
- the service never waits: a reconcile takes the last good answer (or leaves the endpoint
  as it is), and a new or changed answer wakes the service (`on_change`) to reconcile.

A lookup is started again after `refresh` seconds (a failed one after `retry`); a failed
lookup never replaces a good answer. At most one lookup per name runs at a time.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from bmx7_wg.base.iptext import canonical_address

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds a one-shot command waits for all its names together
REFRESH = 60.0  # seconds: look a name up again after this long (the service)
RETRY = 10.0  # seconds: after a failed lookup

Lookup = Callable[[str], str]  # host name -> address text; raises OSError or UnicodeError


def getaddrinfo_lookup(host: str) -> str:
    """The system resolver's first answer for `host` (what WireGuard's tools take)."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    return ipaddress.ip_address(str(infos[0][4][0]).split("%")[0]).compressed


def literal_endpoint(host: str, port: int) -> str | None:
    """"ip:port" for a host that is an address; None for a name."""
    version = canonical_address(host)
    if version is not None:
        return f"[{host}]:{port}" if version == 6 else f"{host}:{port}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return _endpoint(ip.compressed, port)


def _endpoint(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


@dataclass
class _Answer:
    address: str | None = None  # the last good answer
    error: str | None = None  # why the last lookup failed (None: it did not)
    asked: float = 0.0  # when the last lookup started (monotonic)
    answered: bool = False  # the last lookup has ended
    warned: str | None = None  # the problem last logged, so it is logged once


class Resolver:
    """Looks endpoint names up on threads; called as `resolver(host, port)` it answers at once."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        lookup: Lookup = getaddrinfo_lookup,
        on_change: Callable[[], None] | None = None,
        refresh: float = REFRESH,
        retry: float = RETRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.timeout = timeout
        self.refresh = refresh
        self.retry = retry
        self._lookup = lookup
        self._on_change = on_change
        self._clock = clock
        self._lock = threading.Lock()
        self._answers: dict[str, _Answer] = {}
        self._running: dict[str, threading.Event] = {}

    def request(self, hosts: Iterable[str]) -> None:
        """Start a lookup of every name without a fresh answer (addresses need none)."""
        now = self._clock()
        with self._lock:
            for host in set(hosts):
                if host in self._running or literal_endpoint(host, 0) is not None:
                    continue
                answer = self._answers.setdefault(host, _Answer())
                if answer.answered:
                    age = now - answer.asked
                    if age < (self.refresh if answer.error is None else self.retry):
                        continue
                answer.asked = now
                answer.answered = False
                done = threading.Event()
                self._running[host] = done
                # A daemon thread: a lookup that hangs must not keep a command from exiting.
                thread = threading.Thread(target=self._run, args=(host, done), daemon=True)
                thread.start()

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every running lookup ended, `timeout` (default: the resolver's) at most."""
        deadline = self._clock() + (self.timeout if timeout is None else timeout)
        with self._lock:
            running = list(self._running.values())
        for done in running:
            remaining = deadline - self._clock()
            if remaining <= 0 or not done.wait(remaining):
                return

    def __call__(self, host: str, port: int) -> str | None:
        """The endpoint "ip:port" for `host`, from the last good answer; None (leave the
        endpoint as it is) when there is none yet."""
        literal = literal_endpoint(host, port)
        if literal is not None:
            return literal
        with self._lock:
            answer = self._answers.get(host)
            if answer is None:
                problem = "it was never looked up"
            elif answer.error is not None:
                problem = answer.error
            elif not answer.answered and answer.address is None:
                waited = self._clock() - answer.asked
                problem = "the lookup is still running"
                if waited >= self.timeout:
                    problem = f"no answer within {self.timeout:g} s"
            else:
                problem = None
            address = answer.address if answer is not None else None
            if answer is not None:
                warn, answer.warned = problem is not None and problem != answer.warned, problem
            else:
                warn = True
        if problem is not None and warn:
            kept = f"the last answer {address} is used" if address else "its endpoint is left as it is"
            log.warning("cannot resolve endpoint host %s (%s); %s", host, problem, kept)
        return None if address is None else _endpoint(address, port)

    def _run(self, host: str, done: threading.Event) -> None:
        try:
            address: str | None = self._lookup(host)
            error = None
        except (OSError, UnicodeError, ValueError) as exc:
            address, error = None, str(exc) or type(exc).__name__
        changed = False
        with self._lock:
            answer = self._answers[host]
            answer.answered = True
            answer.error = error
            if address is not None and address != answer.address:
                changed = True
                answer.address = address
            del self._running[host]
        done.set()
        if changed and self._on_change is not None:
            self._on_change()


def resolve_now(hosts: Iterable[str], timeout: float = DEFAULT_TIMEOUT) -> Resolver:
    """A resolver that has looked `hosts` up, waiting `timeout` seconds at most in all."""
    resolver = Resolver(timeout)
    resolver.request(hosts)
    resolver.wait()
    return resolver
