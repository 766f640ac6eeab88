"""The service (`bmx7-wg run`): reconcile at start, then whenever something changes.

Wakes on: the configuration file written and closed or renamed into place (inotify on its
directory), SIGHUP, bmx7's received announcements, trusted-nodes directory and control
socket (inotify), rtnetlink events on the managed interfaces, endpoint names that
resolved to a new address, a look at bmx7's control socket every few seconds, and a
periodic full reconcile as a safety net. Between events it sleeps in poll(); every timer
is its own (service/schedule.py), so a pending grace period or retry never delays an
event. Stopping leaves the tunnels as they are; `bmx7-wg down` tears them down.

A configuration file that is missing or empty (as while it is being rewritten) never
takes tunnels down: the configuration in force stays, with a warning, until a valid file
appears. A file that does not validate is rejected the same way.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import time
from collections.abc import Mapping

from bmx7_wg import lock, metrics, pending
from bmx7_wg.config import reader as config_reader
from bmx7_wg.config.model import DEFAULT_GRACE, DEFAULT_METRICS_TEXTFILE, Config
from bmx7_wg.engine import Engine, reconcile
from bmx7_wg.errors import Bmx7WgError, ChangesFailed, ConfigError
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh import liveness
from bmx7_wg.mesh.bmx7 import SETTLE, SOCKET_NAME, Bmx7Runtime, ReceivedCache
from bmx7_wg.mesh.grace import HoldEvent, MeshGrace
from bmx7_wg.mesh.session import MeshSession, mesh_interface, watch_directories
from bmx7_wg.net.resolve import Resolver
from bmx7_wg.plan.actions import Action
from bmx7_wg.plan.desired import MeshInputs
from bmx7_wg.plan.planner import link_plan
from bmx7_wg.plan.state import DesiredState, ObservedState, Peer
from bmx7_wg.service import events, hostnames
from bmx7_wg.service.incremental import MeshTracker
from bmx7_wg.service.notify import Notifier
from bmx7_wg.service.schedule import Schedule
from bmx7_wg.service.state import MeshMemory
from bmx7_wg.service.watch import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    Inotify,
    LinkEvents,
)
from bmx7_wg.system import System

log = logging.getLogger(__name__)

PERIODIC_RECONCILE = 60.0  # seconds: the safety net for changes no event reports
DEBOUNCE = 0.01  # seconds: let a burst of events settle before acting on it
# seconds: the same for announcement files, which a step handles in proportion to the
# change (a file renamed into place is one event; bmx7 refilling rcvdSms/ is a burst)
MESH_DEBOUNCE = 0.002
RETRY_AFTER = 5.0  # seconds: after a failed apply
RECENT_HANDSHAKE = 180.0  # seconds: WireGuard re-keys every 2 minutes while traffic flows
# A killed bmx7 leaves no event behind: its control socket is asked this often, with a
# short timeout (the loop waits for the answer).
PROBE_INTERVAL = 5.0
PROBE_TIMEOUT = 1.0
START_RESOLVE_WAIT = 1.0  # seconds the first reconcile waits for endpoint names, at most
# seconds: a full reconcile rewrites the mesh state file if it changed or is this old.
# Steps never write it (a write is in proportion to the mesh): what they changed is
# written by the next full reconcile, at the latest the periodic one, and when the
# service stops.
SAVE_EVERY = 30.0
VANISHED_CHECK = 1.0  # seconds after the configuration file was removed, see whether it is back

# Timers (schedule keys). All but the first four mean "reconcile"; MESH and GRACE alone
# are a step (service/incremental.py) when one can follow the last full reconcile.
WATCHDOG, RELOAD, PROBE, LINKS = "watchdog", "reload", "probe", "links"
EVENTS, MESH, GRACE, RETRY, PERIODIC = "events", "mesh", "grace", "retry", "periodic"
CONFIRM, METRICS = "confirm", "metrics"
_NOT_RECONCILE = (WATCHDOG, RELOAD, PROBE, LINKS, CONFIRM, METRICS)
# seconds: the metrics textfile is written after each full reconcile and this often
# (handshakes and transfer change without one; reading the devices costs ~0.1 s at
# 10,000 peers)
METRICS_INTERVAL = 30.0
# seconds: how often a service that defers to an `apply --confirm` looks whether it ended
# (what falls due meanwhile is kept, and due at its end)
CONFIRM_RECHECK = 0.5
_STEPS = frozenset({MESH, GRACE})
_PROBE_REASONS = {
    "down": "bmx7 stopped answering",
    "back": "bmx7 answers again",
    "restarted": "bmx7 restarted",
}


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
        self.schedule = Schedule()
        self.managed_ifindexes: set[int] = set()
        self.observed = ObservedState({})
        # Between full reconciles: the announcement files inotify named, what the last
        # full reconcile found (None: the next change needs a full one), and the files
        # read, by identity.
        self.changed_files: set[str] = set()
        self.tracker: MeshTracker | None = None
        self.received_cache = ReceivedCache()
        self.peer_counts: dict[str, int] = {}  # managed interface -> its peers
        # What the last full reconcile left, which link events are checked against (None:
        # unknown, a link event means a full reconcile).
        self.left: DesiredState | None = None
        self.recent_handshakes = 0
        self.refusals_logged: set[tuple[str, str]] = set()
        self.stale_logged: set[tuple[str, str]] = set()
        self.failed = False
        self.trust_dir: str | None = None
        # bmx7 wipes rcvdSms/ when it restarts: keep vanished mesh peers a while.
        self.grace = MeshGrace(_grace_of(config))
        self.bmx7 = liveness.Bmx7Watch()
        self.bmx7_socket_made = False  # bmx7 made its control socket since the last reconcile
        self.memory = MeshMemory()
        self.names = hostnames.MeshNames(config)  # the mesh peers' names in the hosts file
        self._saved: tuple[dict[str, Peer], float] | None = None  # what the state file holds, and when
        self.config_problem: str | None = None  # why the file on disk is not in force
        self.deferring_to: int | None = None  # pid of the apply --confirm the service waits for
        self.deferred: dict[str, list[str]] = {}  # timers due while it waits: key -> reasons
        self.metrics = metrics.ServiceMetrics()
        self.metrics_context = metrics.Context()  # names and mesh counts of the last full reconcile
        self.metrics_problem: str | None = None  # why the textfile could not be written (logged once)
        self._stop = self._sighup = False
        self._signal_r, self._signal_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Endpoint names are looked up on threads; an answer that changes wakes the loop.
        self._resolved_r, self._resolved_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.resolver = Resolver(on_change=self._on_resolved)

    # -- the loop ------------------------------------------------------------------

    def serve(self) -> int:
        signal.set_wakeup_fd(self._signal_w)
        for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self._watch()
        self._restore_mesh_memory()
        self.resolver.request(self._endpoint_hosts())
        self.resolver.wait(START_RESOLVE_WAIT)
        self.reconcile(["service start"])
        events.emit(logging.INFO, f"bmx7-wg started: {self.status_line()}", events.SERVICE_STARTED)
        self.notifier.ready(self.status_line())
        if self.notifier.watchdog_interval:
            self.schedule.at(WATCHDOG, time.monotonic(), "watchdog")
        self._arm_probe()
        poller = select.poll()
        for fd in (self._signal_r, self.inotify.fd, self.link_events.fd, self._resolved_r):
            poller.register(fd, select.POLLIN)
        while True:
            for fd, _ in poller.poll(self.schedule.timeout_ms()):
                if fd == self._signal_r:
                    _drain(self._signal_r)
                elif fd == self.inotify.fd:
                    self._on_file_events()
                elif fd == self.link_events.fd:
                    self._on_link_events()
                elif fd == self._resolved_r:
                    _drain(self._resolved_r)
                    self.schedule.soon(EVENTS, DEBOUNCE, "an endpoint name resolved to a new address")
            if self._stop:
                break
            if self._sighup:
                self._sighup = False
                self.schedule.soon(RELOAD, 0, "SIGHUP")
            self._run_due()
        self._save_mesh_memory(force=True)
        self.notifier.stopping()
        log.info("bmx7-wg stopping; tunnels stay up (bmx7-wg down removes them)")
        return 0

    def _run_due(self) -> None:
        due = self.schedule.due()
        # Pinged before any work too, so that each piece of work has the whole of
        # WatchdogSec, not what is left of it since the last ping.
        if due and self.notifier.watchdog_interval:
            self.notifier.watchdog()
            self.schedule.at(WATCHDOG, time.monotonic() + self.notifier.watchdog_interval, "watchdog")
            due.pop(WATCHDOG, None)
        if due.pop(METRICS, None) is not None:
            self._write_metrics(fresh=True)
        if self._defer_to_confirm(due):
            return
        reasons = [r for key, rs in due.items() if key not in _NOT_RECONCILE for r in rs]
        steps_only = bool(reasons) and _STEPS.issuperset(k for k in due if k not in _NOT_RECONCILE)
        if LINKS in due:
            reason = self._links_changed()
            if reason:
                reasons.append(reason)
                steps_only = False
        if PROBE in due or GRACE in due:
            # A grace ends only on time in which bmx7 answers: before one ends, make sure
            # bmx7 still does (a full reconcile pauses every hold if it does not).
            reason = self._probe()
            if reason:
                reasons.append(reason)
                steps_only = False
            self._arm_probe()
        if RELOAD in due:
            self.notifier.reloading()
            if self.reload():
                reasons.insert(0, "configuration changed")
            if reasons:
                self.reconcile(reasons, read_all=PERIODIC in due)
            self.notifier.send("READY=1", f"STATUS={self.status_line()}")
        elif reasons and not (steps_only and self.mesh_step(reasons)):
            self.reconcile(reasons, read_all=PERIODIC in due)

    def _defer_to_confirm(self, due: dict[str, list[str]]) -> bool:
        """While an `apply --confirm` waits for its confirmation, change nothing: its
        rollback plans from the state it read, and a reconcile now would apply the new
        configuration again after the rollback restored the old. Everything due waits
        (a full reconcile follows the end of the wait). True: deferred."""
        holder = pending.holder()
        if holder is None:
            if self.deferring_to is not None:
                log.info("apply --confirm (pid %d) ended; the service goes on", self.deferring_to)
                self.deferring_to = None
                due.pop(CONFIRM, None)
                # What waited is due now, the configuration first (restored by a rollback,
                # or the new one confirmed): a reconcile must never see the old one.
                for key, reasons in self.deferred.items():
                    self.schedule.cancel(key)
                    due.setdefault(key, []).extend(r for r in reasons if r not in due[key])
                self.deferred = {}
                due.setdefault(RELOAD, []).append("apply --confirm ended")
                due.setdefault(EVENTS, []).append("apply --confirm ended")
            return False
        if self.deferring_to != holder.pid:
            self.deferring_to = holder.pid
            log.info("%s: the service changes nothing until it ends", holder.describe())
        for key, reasons in due.items():
            if key != CONFIRM:
                kept = self.deferred.setdefault(key, [])
                kept.extend(r for r in reasons if r not in kept)
        self.schedule.soon(CONFIRM, CONFIRM_RECHECK, "apply --confirm waits")
        return True

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGHUP:
            self._sighup = True
        else:
            self._stop = True

    def _on_resolved(self) -> None:
        # Called on a resolver thread: only wake the loop.
        try:
            os.write(self._resolved_w, b"r")
        except BlockingIOError:
            pass  # the loop has not read the last wake-up yet: one is enough

    def _on_file_events(self) -> None:
        config_dir, config_name = os.path.split(self.config_path)
        mesh_dirs = set(watch_directories(self.config, self.trust_dir))
        bmx7_dir = self._bmx7_dir()
        received_dir = os.path.join(bmx7_dir, "sms", "rcvdSms") if bmx7_dir else None
        for ev in self.inotify.read():
            if ev.mask & IN_Q_OVERFLOW:
                self.schedule.soon(EVENTS, DEBOUNCE, "file events overflowed")
                self.schedule.soon(RELOAD, DEBOUNCE, "file events overflowed")
            elif ev.directory == config_dir and ev.name == config_name:
                # Only a complete file: written and closed, or renamed into place. Its
                # creation, truncation or removal says nothing about its new content.
                if ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                    self.schedule.soon(RELOAD, DEBOUNCE, "configuration file written")
                elif ev.mask & (IN_DELETE | IN_MOVED_FROM):
                    # Editors move the file away and write a new one: look again in a
                    # moment (sooner if the new file is complete), and warn if it is missing.
                    self.schedule.soon(RELOAD, VANISHED_CHECK, "configuration file removed")
            elif ev.directory == received_dir and ev.name:
                # A file's content is complete when it is closed after writing or renamed
                # into place; its creation (IN_CREATE, then the writes) or a chmod says nothing.
                if ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM):
                    self.changed_files.add(ev.name)
                    self.schedule.soon(MESH, MESH_DEBOUNCE, "mesh announcements changed")
            elif ev.directory in mesh_dirs:
                self.schedule.soon(EVENTS, DEBOUNCE, "mesh announcements or trust changed")
            elif ev.directory == bmx7_dir and ev.name == SOCKET_NAME and ev.mask & (IN_CREATE | IN_MOVED_TO):
                # bmx7 makes its control socket when it starts: a restart, even one too
                # quick for its uptime to tell.
                self.bmx7_socket_made = True
                self.schedule.soon(EVENTS, DEBOUNCE, "bmx7 created its control socket")
        watched = {config_dir, *mesh_dirs, *([bmx7_dir] if bmx7_dir else [])}
        if not self.inotify.watched() >= watched:
            self._watch()

    def _on_link_events(self) -> None:
        touched, overflow = self.link_events.read()
        if overflow or touched & self.managed_ifindexes:
            # Most are the echo of our own changes (some arrive late, as a link comes up):
            # the links are read first, and only a difference costs a full reconcile.
            self.schedule.soon(LINKS, DEBOUNCE, "a managed interface changed")

    def _links_changed(self) -> str | None:
        """The reason to reconcile if the links, addresses and routes are not what the last
        full reconcile left (the planner's verdict on a read without the devices), else None."""
        if self.failed or self.left is None:
            return LINKS_CHANGED
        try:
            observed = self.system.observe([d.name for d in self.left.interfaces], devices=False)
            return LINKS_CHANGED if link_plan(self.left, observed) else None
        except Bmx7WgError:
            return LINKS_CHANGED

    def _watch(self) -> None:
        self.inotify.watch(os.path.dirname(self.config_path))
        bmx7_dir = self._bmx7_dir()
        received_dir = os.path.join(bmx7_dir, "sms", "rcvdSms") if bmx7_dir else None
        for directory in watch_directories(self.config, self.trust_dir):
            # rcvdSms/ is never read through a symlink (mesh/bmx7.py): nor watched through one.
            self.inotify.watch(directory, follow=directory != received_dir)
        if bmx7_dir:
            self.inotify.watch(bmx7_dir)

    def _bmx7_dir(self) -> str | None:
        if self.config.bmx7 is None or mesh_interface(self.config) is None:
            return None
        return self.config.bmx7.runtime_dir

    def _arm_probe(self) -> None:
        when = time.monotonic() + PROBE_INTERVAL if self._bmx7_dir() else None
        self.schedule.at(PROBE, when, "look at bmx7")

    def _probe(self) -> str | None:
        """A quick look at bmx7's control socket; the reason to reconcile if it changed."""
        runtime_dir = self._bmx7_dir()
        if runtime_dir is None:
            return None
        seen = Bmx7Runtime(runtime_dir, timeout=PROBE_TIMEOUT).liveness()
        change = liveness.compare(self.bmx7.last, seen)
        return _PROBE_REASONS[change] if change else None

    # -- the work ------------------------------------------------------------------

    def reload(self) -> bool:
        """Read the configuration file again; True if a new configuration is in force."""
        problem = _incomplete(self.config_path)
        if problem:
            self._config_unusable(problem)
            return False
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
            self.config_problem = "was rejected (see the journal)"
            return False
        self.config_problem = None
        if new == self.config:
            return False
        for iface in new.interfaces:
            if iface.key == "session" and iface.name not in self.engine.session_keys:
                self.engine.session_keys[iface.name] = PrivateKey.generate()
        if (new.names, mesh_interface(new)) != (self.config.names, mesh_interface(self.config)):
            # Names in a file no longer named, or of a mesh interface that goes: removed.
            old = mesh_interface(self.config)
            gone = hostnames.removal(self.config, [old.name] if old else [])
            self._write_names(gone, "configuration changed")
            self.names = hostnames.MeshNames(new)
        self.config = new
        self.grace.grace = _grace_of(new)
        log.info("configuration %s reloaded", self.config_path)
        self._watch()
        self._arm_probe()
        return True

    def _config_unusable(self, problem: str) -> None:
        """The file is missing or empty (perhaps being rewritten): keep what is in force."""
        if problem == self.config_problem:
            return
        self.config_problem = problem
        events.emit(
            logging.WARNING,
            f"configuration file {self.config_path} {problem}: the configuration in force stays "
            "until a valid file appears",
            events.CONFIG_REJECTED,
            config=self.config_path,
        )
        self.notifier.status(self.status_line())

    def mesh_step(self, reasons: list[str]) -> bool:
        """Apply what the changed announcement files (and ended grace periods) change, at
        a cost in proportion to the change (service/incremental.py). False: a full
        reconcile must decide (nothing was changed then)."""
        tracker = self.tracker
        if tracker is None or self.failed or self.config.bmx7 is None:
            return False
        why = "; ".join(reasons)
        names, self.changed_files = self.changed_files, set()
        runtime = Bmx7Runtime(self.config.bmx7.runtime_dir)
        try:
            files = runtime.received_entries(sorted(names), tracker.sms, cache=self.received_cache)
        except Bmx7WgError:
            self.tracker = None
            return False
        started = time.monotonic()
        step = tracker.step(files, self.grace)
        if step is None:
            self.tracker = None
            return False
        if step.actions:
            try:
                with lock.held("run"):
                    outcome = self.system.execute(
                        step.actions,
                        {tracker.interface: tracker.implementation},
                        lambda a: events.action_done(a, why=why),
                    )
            except Bmx7WgError:
                self.tracker = None
                return False
            if outcome.failures:
                self.metrics.failed_changes += len(outcome.failures)
                for failure in outcome.failures:
                    events.action_failed(failure, why=why)
                self._apply_failed(why, ChangesFailed(outcome.failures, applied=len(outcome.done)))
                self._take_observed()
                return True
            done = outcome.done
        else:
            done = []
        # The touched nodes' refusals, before and now: the rest of the mesh is not looked at.
        ended = {r for node_id in step.refusals for r in tracker.refusals.get(node_id, ())}
        tracker.commit(step, done)
        self._log_refusal_changes({r for rs in step.refusals.values() for r in rs}, ended)
        self._log_hold_events(step.holds)
        if step.unsettled:
            self.changed_files.update(step.unsettled)
            self.schedule.soon(MESH, SETTLE, "mesh announcements being written")
        self.peer_counts[tracker.interface] = len(tracker.device)
        self._write_names(
            self.names.plan(tracker.interface, tracker.final, tracker.names, lookup=runtime.node_names), why
        )
        self.metrics.durations["step"].observe(time.monotonic() - started)
        self.schedule.at(GRACE, self.grace.next_deadline(), "mesh grace period ended")
        if done:
            self.notifier.status(self.status_line())
        return True

    def _apply_failed(self, why: str, exc: Bmx7WgError) -> None:
        events.emit(
            logging.ERROR,
            f"apply failed ({why}): {exc}; retrying in {RETRY_AFTER:.0f} s",
            events.APPLY_FAILED,
        )
        self.failed = True
        self.tracker = None
        self.schedule.at(RETRY, time.monotonic() + RETRY_AFTER, "retry after a failed apply")
        try:
            self.observed = self.system.observe([])
        except Bmx7WgError:
            pass

    def _take_observed(self) -> None:
        """What the status line and the link events need of the state just read; none of
        it when nothing could be read (the previous numbers stay)."""
        if self.observed is _UNREAD:
            return
        self.managed_ifindexes = {i.ifindex for i in self.observed.interfaces.values() if i.managed}
        self._count_peers()
        self._log_stale_handshakes()

    def reconcile(self, reasons: list[str], *, read_all: bool = False) -> None:
        """A full reconcile; `read_all` (the safety net): every announcement file is read
        afresh, none taken from the cache (a file rewritten in place keeps its identity
        for a moment)."""
        why = "; ".join(reasons)
        started = time.monotonic()
        mesh: MeshSession | None = None
        desired: DesiredState | None = None
        self.tracker = None
        self.left = None
        # The state read last time is not kept alongside the one read now (10,000 peers:
        # tens of MB at the peak).
        self.observed = _UNREAD
        self.changed_files.clear()  # the full read covers every file an event named
        if read_all:
            self.received_cache.files.clear()
        # Lookups run on threads; the plan takes the answers there are.
        self.resolver.request(self._endpoint_hosts())
        try:
            bmx7_change: str | None = None

            def read_mesh(session: MeshSession) -> None:
                nonlocal mesh, bmx7_change
                mesh = session
                bmx7_change = self.bmx7.update(session.liveness) if session.liveness else None
                answering = session.liveness is not None and session.liveness.answering
                if self.bmx7_socket_made and bmx7_change is None and answering:
                    bmx7_change = "restarted"
                self.bmx7_socket_made = False
                if bmx7_change in ("back", "restarted"):
                    self._log_bmx7_back(session, bmx7_change == "restarted")

            result = reconcile(
                self.engine,
                self.config,
                check=False,
                verb="run",
                resolve=self.resolver,
                grace=self.grace,
                on_mesh=read_mesh,
                on_done=lambda a: events.action_done(a, why=why),
                received_cache=self.received_cache,
            )
            desired = result.plan.desired
            if bmx7_change == "down":
                self._log_bmx7_down(result.mesh, desired)
            for failure in result.failures:
                events.action_failed(failure, why=why)
            self.metrics.failed_changes += len(result.failures)
            held = {d.name: self.grace.held_count(d.name) for d in desired.interfaces}
            self.metrics_context = metrics.context(desired, result.plan.mesh_peers, result.mesh, held)
            if result.failures:
                raise ChangesFailed(result.failures, applied=len(result.actions))
            self.observed = self.system.observe([]) if result.actions else result.plan.observed
            # A later link event is checked against this (changes made meanwhile by
            # others are reported by link events still to be read).
            self.left = result.plan.desired
            self.failed = False
            self.metrics.last_success = time.time()
            self.schedule.cancel(RETRY)
            if mesh is not None and mesh.interface is not None:
                have = self.observed.interfaces.get(mesh.interface.name)
                self.tracker = MeshTracker.from_full(
                    self.config,
                    mesh,
                    result.plan,
                    have.device if have is not None else None,
                )
                self._names_after_full(mesh, result.plan.mesh_peers, why)
        except Bmx7WgError as exc:
            self._apply_failed(why, exc)
        if mesh is not None:
            self._log_refusals(mesh)
            self._log_holds(mesh)
            if mesh.unsettled:
                # Written a moment before the read and not parsing: read again once the
                # writer is done (its close wakes us sooner).
                self.changed_files.update(mesh.unsettled)
                self.schedule.soon(MESH, SETTLE, "mesh announcements being written")
            if mesh.trust_dir != self.trust_dir:
                self.trust_dir = mesh.trust_dir
                self._watch()
            if desired is not None and mesh.liveness is not None and mesh.liveness.answering:
                self._save_mesh_memory()
        self._take_observed()
        now = time.monotonic()
        self.metrics.durations["full"].observe(now - started)
        self._write_metrics()
        self.schedule.at(GRACE, self.grace.next_deadline(), "mesh grace period ended")
        self.schedule.at(PERIODIC, now + self.interval, "periodic check")
        self.notifier.status(self.status_line())

    def _names_after_full(self, mesh: MeshSession, planned: Mapping[str, tuple[Peer, ...]], why: str) -> None:
        """The names of the mesh peers a full reconcile left; none written while bmx7 does
        not answer (the peers are kept as they are, and so are their names)."""
        iface = mesh.interface
        if iface is None or mesh.node is None or mesh.inputs.get(iface.name, MeshInputs()).hold:
            return
        peers = [p.node_id for p in planned.get(iface.name, ()) if p.node_id]
        self._write_names(self.names.plan(iface.name, peers, mesh.names, own_name=mesh.node.name), why)

    def _write_names(self, actions: list[Action], why: str) -> None:
        if not actions:
            return
        outcome = self.system.execute(actions, {}, lambda a: events.action_done(a, why=why))
        for failure in outcome.failures:
            events.action_failed(failure, why=why)


    def _write_metrics(self, *, fresh: bool = False) -> None:
        """Write the metrics textfile (`[metrics] textfile`; "" writes none). `fresh`:
        read the devices again (handshakes and transfer), else use the last full read."""
        path = self.config.metrics.textfile
        if not path:
            self.schedule.cancel(METRICS)
            return
        self.schedule.at(METRICS, time.monotonic() + METRICS_INTERVAL, "write the metrics")
        observed = self.observed
        if fresh or observed is _UNREAD:
            try:
                observed = self.system.observe([])
            except Bmx7WgError:
                return
        try:
            metrics.write_textfile(path, metrics.render(observed, self.metrics_context, self.metrics))
        except OSError as exc:
            problem = f"cannot write the metrics file {path}: {exc.strerror or exc}"
            if problem != self.metrics_problem:
                # The default's directory is missing where prometheus-node-exporter is not
                # installed: nothing to warn about.
                quiet = path == DEFAULT_METRICS_TEXTFILE and exc.errno == errno.ENOENT
                log.log(logging.DEBUG if quiet else logging.WARNING, "%s; tried again in %.0f s",
                        problem, METRICS_INTERVAL)
                self.metrics_problem = problem
            return
        self.metrics_problem = None

    def _endpoint_hosts(self) -> set[str]:
        return {p.endpoint.host for i in self.config.interfaces for p in i.peers if p.endpoint is not None}

    def _log_bmx7_down(self, mesh: MeshSession, desired: DesiredState) -> None:
        assert mesh.liveness is not None
        for name, keys in mesh.kept_peers(desired).items():
            events.emit(
                logging.WARNING,
                f"{name}: {mesh.liveness.describe()}; its {len(keys)} mesh peer(s) and its mesh "
                "address are kept as they are until bmx7 answers",
                events.BMX7_UNAVAILABLE,
                interface=name,
                socket=mesh.liveness.socket,
                kept=len(keys),
            )

    def _log_bmx7_back(self, mesh: MeshSession, restarted: bool) -> None:
        assert mesh.liveness is not None and mesh.interface is not None
        what = "bmx7 restarted" if restarted else "bmx7 answers again"
        events.emit(
            logging.INFO,
            f"{mesh.interface.name}: {what} on {mesh.liveness.socket}; its SMS registration is checked "
            "and vanished announcements are held for the grace period",
            events.BMX7_AVAILABLE,
            interface=mesh.interface.name,
            socket=mesh.liveness.socket,
            restarted="yes" if restarted else "no",
        )

    def _log_holds(self, mesh: MeshSession) -> None:
        self._log_hold_events(mesh.holds)

    def _log_hold_events(self, holds: list[HoldEvent]) -> None:
        now = time.monotonic()
        for ev in holds:
            who = ev.node_id[:8] + (f" ({ev.peer.name})" if ev.peer.name else "")
            if ev.kind == "held":
                left = max(0.0, ev.until - now)
                text = (
                    f"{ev.interface}: the announcement of mesh node {who} vanished; its peer stays "
                    f"{left:.0f} s more (grace, counted while bmx7 answers) unless it comes back"
                )
            else:
                text = f"{ev.interface}: the announcement of mesh node {who} is back; its peer stayed"
            events.emit(
                logging.INFO,
                text,
                events.PEER_HELD,
                interface=ev.interface,
                node_id=ev.node_id,
                peer=ev.peer.public_key,
                hold="started" if ev.kind == "held" else "ended",
                grace=f"{self.grace.grace:g}",
            )

    def _restore_mesh_memory(self) -> None:
        """Hold the peers a previous service saw, if the device still has them."""
        iface = mesh_interface(self.config)
        if iface is None or not self.grace.grace:
            return
        remembered = self.memory.load(iface.name)
        if not remembered:
            return
        try:
            observed = self.system.observe([iface.name]).interfaces.get(iface.name)
        except Bmx7WgError:
            return
        device = observed.device if observed is not None else None
        if device is None:
            return
        kept = {n: r for n, r in remembered.items() if r.peer.public_key in device.peers}
        self.grace.restore(iface.name, kept)
        path = self.memory.path(iface.name)
        log.info("%s: %d mesh peer(s) remembered from %s", iface.name, len(kept), path)

    def _save_mesh_memory(self, *, force: bool = False) -> None:
        iface = mesh_interface(self.config)
        if iface is None or not self.grace.knows(iface.name):
            return  # never read: an empty file would only erase what a previous service saw
        snapshot = self.grace.snapshot(iface.name)
        peers = {n: r.peer for n, r in snapshot.items()}
        now = time.monotonic()
        if force or self._saved is None or self._saved[0] != peers or now - self._saved[1] >= SAVE_EVERY:
            self.memory.save(iface.name, snapshot)
            self._saved = (peers, now)

    def _log_refusals(self, mesh: MeshSession) -> None:
        self._log_refusal_changes(set(mesh.refusals), set(self.refusals_logged))

    def _log_refusal_changes(self, current: set[tuple[str, str]], ended: set[tuple[str, str]]) -> None:
        """Log the refusals in `current` not in force yet; those in `ended` (a superset of
        what ended) are no longer in force unless `current` has them."""
        for node_id, reason in sorted(current - self.refusals_logged):
            events.emit(
                logging.WARNING,
                f"refused mesh node {node_id}: {reason}",
                events.ANNOUNCEMENT_REFUSED,
                node_id=node_id,
                reason=reason,
            )
        # Forget refusals that ended, so a node that misbehaves again is logged again.
        self.refusals_logged -= ended
        self.refusals_logged |= current

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

    def _count_peers(self) -> None:
        """The status line's numbers, from the last full read (steps update the peers)."""
        now = time.time()
        self.peer_counts = {}
        self.recent_handshakes = 0
        for iface in self.observed.interfaces.values():
            if not iface.managed:
                continue
            self.peer_counts[iface.name] = len(iface.device.peers) if iface.device is not None else 0
            if iface.device is not None:
                self.recent_handshakes += sum(
                    1
                    for s in iface.device.stats.values()
                    if s.last_handshake and now - s.last_handshake <= RECENT_HANDSHAKE
                )

    def status_line(self) -> str:
        peers, recent = sum(self.peer_counts.values()), self.recent_handshakes
        text = f"{len(self.peer_counts)} interface(s), {peers} peer(s), {recent} with a recent handshake"
        if self.config_problem:
            text += f" - the configuration file {self.config_problem}: the previous one stays in force"
        return text + (" - last apply failed" if self.failed else "")

    def close(self) -> None:
        self.system.close()
        self.inotify.close()
        self.link_events.close()
        for fd in (self._signal_r, self._signal_w, self._resolved_r, self._resolved_w):
            os.close(fd)


_UNREAD = ObservedState({})  # Service.observed while a reconcile has not read the state yet
LINKS_CHANGED = "a managed interface changed outside bmx7-wg"


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 64):
            pass
    except BlockingIOError:
        pass


def _grace_of(config: Config) -> float:
    return float(config.bmx7.grace if config.bmx7 is not None else DEFAULT_GRACE)


def _incomplete(path: str) -> str | None:
    """Why the file cannot be a configuration yet ("is missing", "is empty"), or None.

    A file being rewritten (`rm f; ... > f`) is missing or empty for a moment; applied,
    it would remove every interface. A file that declares nothing with words (comments
    only, say) is a configuration like any other."""
    try:
        size = os.stat(path).st_size
        if size == 0:
            return "is empty"
        if size <= 4096:
            with open(path, "rb") as fh:
                if not fh.read().strip():
                    return "is empty"
    except FileNotFoundError:
        return "is missing"
    except OSError:
        return None  # the reader says what is wrong
    return None


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
