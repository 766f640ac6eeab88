"""The service (`bmx7-wg run`): reconcile at start, then whenever something changes.

Wakes on: the configuration file (inotify on its directory), SIGHUP, bmx7's received
announcements and trusted-nodes directory (inotify), rtnetlink events on the managed
interfaces, and a periodic full reconcile as a safety net. Between events it sleeps in
poll(). Stopping leaves the tunnels as they are; `bmx7-wg down` tears them down.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import time
from dataclasses import dataclass, field

from bmx7_wg.config import reader as config_reader
from bmx7_wg.config.model import Config
from bmx7_wg.engine import Engine
from bmx7_wg.errors import Bmx7WgError, ConfigError
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.grace import MeshGrace
from bmx7_wg.mesh.session import MeshSession, mesh_inputs, watch_directories
from bmx7_wg.plan.state import ObservedState
from bmx7_wg.service import events
from bmx7_wg.service.notify import Notifier
from bmx7_wg.service.watch import IN_Q_OVERFLOW, Inotify, LinkEvents
from bmx7_wg.system import System

log = logging.getLogger(__name__)

PERIODIC_RECONCILE = 60.0  # seconds: the safety net for changes no event reports
DEBOUNCE = 0.01  # seconds: let a burst of file events settle before reconciling
RETRY_AFTER = 5.0  # seconds: after a failed apply
RECENT_HANDSHAKE = 180.0  # seconds: WireGuard re-keys every 2 minutes while traffic flows


@dataclass
class _Wakeups:
    reasons: list[str] = field(default_factory=list)
    reload: bool = False
    stop: bool = False

    def add(self, reason: str) -> None:
        if reason not in self.reasons:
            self.reasons.append(reason)


class Service:
    def __init__(self, config_path: str, config: Config, *, interval: float = PERIODIC_RECONCILE) -> None:
        self.interval = interval
        self.config_path = os.path.abspath(config_path)
        self.config = config
        self.system = System()
        # A new key for every `key = "session"` interface at each service start, never on disk.
        self.engine = Engine(
            self.system,
            session_keys={i.name: PrivateKey.generate() for i in config.interfaces if i.key == "session"},
        )
        self.notifier = Notifier()
        self.inotify = Inotify()
        self.link_events = LinkEvents()
        self.managed_ifindexes: set[int] = set()
        self.observed = ObservedState({})
        self.refusals_logged: set[tuple[str, str]] = set()
        self.stale_logged: set[tuple[str, str]] = set()
        self.pending = _Wakeups()
        self.due: float | None = None  # when to reconcile next (monotonic)
        self.failed = False
        self.trust_dir: str | None = None
        # bmx7 wipes rcvdSms/ when it restarts: keep vanished mesh peers a few seconds.
        self.grace = MeshGrace()
        self._signal_r, self._signal_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    # -- the loop ------------------------------------------------------------------

    def serve(self) -> int:
        signal.set_wakeup_fd(self._signal_w)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._watch()
        self.reconcile(["service start"])
        events.emit(logging.INFO, f"bmx7-wg started: {self.status_line()}", events.SERVICE_STARTED)
        self.notifier.ready(self.status_line())
        next_periodic = time.monotonic() + self.interval
        next_watchdog = time.monotonic()
        poller = select.poll()
        for fd in (self._signal_r, self.inotify.fd, self.link_events.fd):
            poller.register(fd, select.POLLIN)
        while True:
            now = time.monotonic()
            if self.notifier.watchdog_interval and now >= next_watchdog:
                self.notifier.watchdog()
                next_watchdog = now + self.notifier.watchdog_interval
            grace_end = self.grace.next_deadline()
            if grace_end is not None and (self.due is None or grace_end < self.due):
                self.pending.add("mesh grace period ended")
                self.due = grace_end
            deadlines = [next_periodic]
            if self.due is not None:
                deadlines.append(self.due)
            if self.notifier.watchdog_interval:
                deadlines.append(next_watchdog)
            timeout_ms = max(0, int((min(deadlines) - now) * 1000) + 1)
            for fd, _ in poller.poll(timeout_ms):
                if fd == self._signal_r:
                    self._drain_signals()
                elif fd == self.inotify.fd:
                    self._on_file_events()
                elif fd == self.link_events.fd:
                    self._on_link_events()
            if self.pending.stop:
                break
            now = time.monotonic()
            if self.pending.reload:
                self.pending.reload = False
                self.reload()
            if now >= next_periodic:
                self.pending.add("periodic check")
                self.due = now
                next_periodic = now + self.interval
            if self.due is not None and now >= self.due:
                reasons, self.pending.reasons = self.pending.reasons, []
                self.due = None
                self.reconcile(reasons or ["periodic check"])
        self.notifier.stopping()
        log.info("bmx7-wg stopping; tunnels stay up (bmx7-wg down removes them)")
        return 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self.pending.reload = True
        else:
            self.pending.stop = True

    def _drain_signals(self) -> None:
        try:
            while os.read(self._signal_r, 64):
                pass
        except BlockingIOError:
            pass

    def _schedule(self, reason: str) -> None:
        self.pending.add(reason)
        if self.due is None:
            self.due = time.monotonic() + DEBOUNCE

    def _on_file_events(self) -> None:
        config_dir, config_name = os.path.split(self.config_path)
        mesh_dirs = set(watch_directories(self.config, self.trust_dir))
        for ev in self.inotify.read():
            if ev.mask & IN_Q_OVERFLOW:
                self._schedule("file events overflowed")
            elif ev.directory == config_dir and ev.name == config_name:
                self.pending.reload = True
            elif ev.directory in mesh_dirs:
                self._schedule("mesh announcements or trust changed")
        if not self.inotify.watched() >= {config_dir, *mesh_dirs}:
            self._watch()

    def _on_link_events(self) -> None:
        touched, overflow = self.link_events.read()
        if overflow or touched & self.managed_ifindexes:
            self._schedule("a managed interface changed outside bmx7-wg")

    def _watch(self) -> None:
        self.inotify.watch(os.path.dirname(self.config_path))
        for directory in watch_directories(self.config, self.trust_dir):
            self.inotify.watch(directory)

    # -- the work ------------------------------------------------------------------

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = config_reader.load(self.config_path)
        except ConfigError as exc:
            events.config_rejected(self.config_path, exc)
            events.emit(
                logging.ERROR,
                "the previous configuration stays in force",
                events.CONFIG_REJECTED,
                config=self.config_path,
            )
            self.notifier.status(self.status_line() + " (configuration rejected: see the journal)")
            self.notifier.send("READY=1")
            return
        if new != self.config:
            for iface in new.interfaces:
                if iface.key == "session" and iface.name not in self.engine.session_keys:
                    self.engine.session_keys[iface.name] = PrivateKey.generate()
            self.config = new
            log.info("configuration %s reloaded", self.config_path)
            self._watch()
            self.reconcile(["configuration changed"])
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")

    def reconcile(self, reasons: list[str]) -> None:
        why = "; ".join(reasons)
        mesh: MeshSession | None = None
        try:
            mesh = mesh_inputs(self.config)
            mesh.inputs = self.grace.hold(mesh.inputs, frozenset(n for n, _ in mesh.refusals))
            plan = self.engine.make_plan(self.config, create_keys=True, mesh=mesh.inputs)
            self.engine.apply(plan, on_done=lambda a: events.action_done(a, why=why))
            mesh.publish(plan.desired, check=False)
            for line in mesh.describe():
                log.info("%s (%s)", line, why)
            self.observed = self.system.observe([]) if plan.actions else plan.observed
            self.failed = False
        except Bmx7WgError as exc:
            events.emit(
                logging.ERROR,
                f"apply failed ({why}): {exc}; retrying in {RETRY_AFTER:.0f} s",
                events.APPLY_FAILED,
            )
            self.failed = True
            self.pending.add("retry after a failed apply")
            self.due = time.monotonic() + RETRY_AFTER
            try:
                self.observed = self.system.observe([])
            except Bmx7WgError:
                pass
        if mesh is not None:
            self._log_refusals(mesh)
            if mesh.trust_dir != self.trust_dir:
                self.trust_dir = mesh.trust_dir
                self._watch()
        self.managed_ifindexes = {i.ifindex for i in self.observed.interfaces.values() if i.managed}
        self._log_stale_handshakes()
        self.notifier.status(self.status_line())

    def _log_refusals(self, mesh: MeshSession) -> None:
        current = set(mesh.refusals)
        for node_id, reason in sorted(current - self.refusals_logged):
            events.emit(
                logging.WARNING,
                f"refused mesh node {node_id}: {reason}",
                events.ANNOUNCEMENT_REFUSED,
                node_id=node_id,
                reason=reason,
            )
        # Forget refusals that ended, so a node that misbehaves again is logged again.
        self.refusals_logged = current

    def _log_stale_handshakes(self) -> None:
        now = time.time()
        stale_now: set[tuple[str, str]] = set()
        for iface in self.observed.interfaces.values():
            if not iface.managed or iface.device is None:
                continue
            for key, stats in iface.device.stats.items():
                if stats.last_handshake and now - stats.last_handshake > RECENT_HANDSHAKE:
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

    def status_line(self) -> str:
        now = time.time()
        managed = [i for i in self.observed.interfaces.values() if i.managed]
        peers = recent = 0
        for iface in managed:
            if iface.device is None:
                continue
            peers += len(iface.device.peers)
            recent += sum(
                1
                for s in iface.device.stats.values()
                if s.last_handshake and now - s.last_handshake <= RECENT_HANDSHAKE
            )
        text = f"{len(managed)} interface(s), {peers} peer(s), {recent} with a recent handshake"
        return text + (" - last apply failed" if self.failed else "")

    def close(self) -> None:
        self.system.close()
        self.inotify.close()
        self.link_events.close()


def run(config_path: str, *, interval: float = PERIODIC_RECONCILE) -> int:
    try:
        config = config_reader.load(config_path)
    except ConfigError as exc:
        events.config_rejected(config_path, exc)
        raise
    service = Service(config_path, config, interval=interval)
    try:
        return service.serve()
    finally:
        service.close()
