"""The service (`bmx7-wg run`): reconcile at start, then whenever something changes.

Wakes on: the configuration file written and closed or renamed into place (inotify on its
directory), SIGHUP, bmx7's received announcements, trusted-nodes directory and control
socket (inotify), rtnetlink events on the managed interfaces, endpoint names that
resolved to a new address, a look at bmx7's control socket every few seconds, and a
periodic full reconcile as a safety net. Between events it sleeps in poll(); every timer
is its own (service/schedule.py), so a pending grace period or retry never delays an
event. Stopping leaves the tunnels as they are; `bmx7-wg down` tears them down.

This module is the start-up, the shutdown and the work; the poll loop that wakes it (the
signals, the event file descriptors, the resolver's wake-ups) is service/eventloop.py, and
the decisions are pure modules beside it: which event sets which timer
(service/wakeups.py), what the due timers ask (service/due.py), what is said once and the
status line (service/report.py).

A configuration file that is missing or empty (as while it is being rewritten) never
takes tunnels down: the configuration in force stays, with a warning, until a valid file
appears. A file that does not validate is rejected the same way.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping

from bmx7_wg import lock, metrics, pending
from bmx7_wg.config import reader as config_reader
from bmx7_wg.config.model import DEFAULT_GRACE, Config
from bmx7_wg.engine import Engine, reconcile
from bmx7_wg.errors import Bmx7WgError, ChangesFailed, ConfigError
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh import liveness
from bmx7_wg.mesh.bmx7 import SETTLE, Bmx7Runtime, ReceivedCache
from bmx7_wg.mesh.grace import MeshGrace
from bmx7_wg.mesh.session import MeshSession, mesh_interface
from bmx7_wg.net.resolve import Resolver
from bmx7_wg.plan.actions import Action
from bmx7_wg.plan.desired import MeshInputs
from bmx7_wg.plan.planner import link_plan
from bmx7_wg.plan.state import DesiredState, ObservedState, Peer
from bmx7_wg.service import events, hostnames
from bmx7_wg.service.due import ConfirmWait, Due
from bmx7_wg.service.eventloop import EventLoop
from bmx7_wg.service.incremental import MeshTracker
from bmx7_wg.service.metricsfile import METRICS_INTERVAL, MetricsFile
from bmx7_wg.service.notify import Notifier
from bmx7_wg.service.report import Report
from bmx7_wg.service.schedule import GRACE, MESH, METRICS, PERIODIC, PROBE, RETRY, WATCHDOG, Schedule
from bmx7_wg.service.state import MemoryWriter, MeshMemory
from bmx7_wg.service.wakeups import (
    LINK_CHANGED,
    RESOLVED,
    SIGHUP,
    Timer,
    Watched,
    bmx7_runtime_dir,
    file_event_meaning,
    link_events_matter,
)
from bmx7_wg.service.watch import Inotify, LinkEvents
from bmx7_wg.system import System

log = logging.getLogger(__name__)

PERIODIC_RECONCILE = 60.0  # seconds: the safety net for changes no event reports
RETRY_AFTER = 5.0  # seconds: after a failed apply
# A killed bmx7 leaves no event behind: its control socket is asked this often, with a
# short timeout (the loop waits for the answer).
PROBE_INTERVAL = 5.0
PROBE_TIMEOUT = 1.0
START_RESOLVE_WAIT = 1.0  # seconds the first reconcile waits for endpoint names, at most
_PROBE_REASONS = {
    "down": "bmx7 stopped answering",
    "back": "bmx7 answers again",
    "restarted": "bmx7 restarted",
}


class Service:
    """The work: reloads, full reconciles and steps, in the order the due timers ask
    (service/due.py), woken by the event loop (service/eventloop.py) through what
    service/wakeups.py says an event means; what it
    logs and remembers is service/report.py's, service/state.py's and
    service/metricsfile.py's."""

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
        self.confirm_wait = ConfirmWait()
        self.report = Report()
        self.managed_ifindexes: set[int] = set()
        self.observed = ObservedState({})
        # Between full reconciles: the announcement files inotify named, what the last
        # full reconcile found (None: the next change needs a full one), and the files
        # read, by identity.
        self.changed_files: set[str] = set()
        self.tracker: MeshTracker | None = None
        self.received_cache = ReceivedCache()
        # What the last full reconcile left, which link events are checked against (None:
        # unknown, a link event means a full reconcile).
        self.left: DesiredState | None = None
        self.failed = False
        self.trust_dir: str | None = None
        # bmx7 wipes rcvdSms/ when it restarts: keep vanished mesh peers a while.
        self.grace = MeshGrace(_grace_of(config))
        self.bmx7 = liveness.Bmx7Watch()
        self.bmx7_socket_made = False  # bmx7 made its control socket since the last reconcile
        self.memory = MeshMemory()
        self.memory_writer = MemoryWriter(self.memory)
        self.names = hostnames.MeshNames(config)  # the mesh peers' names in the hosts file
        self.config_problem: str | None = None  # why the file on disk is not in force
        self.metrics_file = MetricsFile()
        self.loop = EventLoop()
        # Endpoint names are looked up on threads; an answer that changes wakes the loop.
        self.resolver = Resolver(on_change=self.loop.wake_resolved)

    # -- start, the events, the due timers ------------------------------------------

    def serve(self) -> int:
        # Caught from the start: a SIGTERM during the first reconcile stops the loop at
        # once, and one during the shutdown lets it finish.
        with self.loop.signals():
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
            self.loop.run(
                self.schedule.timeout_ms,
                self._run_due,
                sources={self.inotify.fd: self._on_file_events, self.link_events.fd: self._on_link_events},
                on_resolved=lambda: self._set(RESOLVED),
                on_sighup=lambda: self._set(SIGHUP),
            )
            self._save_mesh_memory(force=True)
            self.notifier.stopping()
            log.info("bmx7-wg stopping; tunnels stay up (bmx7-wg down removes them)")
        return 0

    def _set(self, timer: Timer) -> None:
        self.schedule.soon(timer.key, timer.delay, timer.reason)

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
        if self.confirm_wait.defer(due, pending.holder(), self.schedule):
            return
        asks = Due.of(due)
        links_changed = self._links_changed() if asks.check_links else None
        bmx7_changed = None
        if asks.probe:
            # A grace ends only on time in which bmx7 answers: before one ends, make sure
            # bmx7 still does (a full reconcile pauses every hold if it does not).
            bmx7_changed = self._probe()
            self._arm_probe()
        reloaded = False
        if asks.reload:
            self.notifier.reloading()
            reloaded = self.reload()
        work = asks.work(links_changed=links_changed, bmx7_changed=bmx7_changed, reloaded=reloaded)
        reasons = list(work.reasons)
        if work.kind == "full" or (work.kind == "step" and not self.mesh_step(reasons)):
            self.reconcile(reasons, read_all=work.read_all)
        if asks.reload:
            self.notifier.send("READY=1", f"STATUS={self.status_line()}")

    def _watched(self) -> Watched:
        return Watched.of(self.config_path, self.config, self.trust_dir)

    def _on_file_events(self) -> None:
        watched = self._watched()
        for ev in self.inotify.read():
            meaning = file_event_meaning(ev, watched)
            if meaning.changed_announcement:
                self.changed_files.add(meaning.changed_announcement)
            if meaning.bmx7_started:
                self.bmx7_socket_made = True
            for timer in meaning.timers:
                self._set(timer)
        if not watched.all_watched(self.inotify.watched()):
            self._watch()

    def _on_link_events(self) -> None:
        touched, overflow = self.link_events.read()
        if link_events_matter(touched, overflow, self.managed_ifindexes):
            self._set(LINK_CHANGED)

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
        for directory, follow in self._watched().directories():
            self.inotify.watch(directory, follow=follow)

    def _arm_probe(self) -> None:
        when = time.monotonic() + PROBE_INTERVAL if bmx7_runtime_dir(self.config) else None
        self.schedule.at(PROBE, when, "look at bmx7")

    def _probe(self) -> str | None:
        """A quick look at bmx7's control socket; the reason to reconcile if it changed."""
        runtime_dir = bmx7_runtime_dir(self.config)
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
                self.metrics_file.numbers.failed_changes += len(outcome.failures)
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
        self.report.refusal_changes({r for rs in step.refusals.values() for r in rs}, ended)
        self.report.holds(step.holds, self.grace.grace)
        if step.unsettled:
            self.changed_files.update(step.unsettled)
            self.schedule.soon(MESH, SETTLE, "mesh announcements being written")
        self.report.peer_counts[tracker.interface] = len(tracker.device)
        self._write_names(
            self.names.plan(tracker.interface, tracker.final, tracker.names, lookup=runtime.node_names), why
        )
        self.metrics_file.numbers.durations["step"].observe(time.monotonic() - started)
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
        self.report.devices_read(self.observed)

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
                    assert session.liveness is not None and session.interface is not None
                    self.report.bmx7_back(
                        session.interface.name, session.liveness, restarted=bmx7_change == "restarted"
                    )

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
                assert result.mesh.liveness is not None
                self.report.bmx7_down(result.mesh.liveness, result.mesh.kept_peers(desired))
            for failure in result.failures:
                events.action_failed(failure, why=why)
            self.metrics_file.numbers.failed_changes += len(result.failures)
            held = {d.name: self.grace.held_count(d.name) for d in desired.interfaces}
            self.metrics_file.context = metrics.context(desired, result.plan.mesh_peers, result.mesh, held)
            if result.failures:
                raise ChangesFailed(result.failures, applied=len(result.actions))
            self.observed = self.system.observe([]) if result.actions else result.plan.observed
            # A later link event is checked against this (changes made meanwhile by
            # others are reported by link events still to be read).
            self.left = result.plan.desired
            self.failed = False
            self.metrics_file.numbers.last_success = time.time()
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
            self.report.refusals(mesh.refusals)
            self.report.holds(mesh.holds, self.grace.grace)
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
        self.metrics_file.numbers.durations["full"].observe(now - started)
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
        self.metrics_file.write(path, observed)

    def _endpoint_hosts(self) -> set[str]:
        return {p.endpoint.host for i in self.config.interfaces for p in i.peers if p.endpoint is not None}

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
        self.memory_writer.save(iface.name, self.grace.snapshot(iface.name), force=force)

    def status_line(self) -> str:
        return self.report.status_line(config_problem=self.config_problem, failed=self.failed)

    def close(self) -> None:
        self.system.close()
        self.inotify.close()
        self.link_events.close()
        self.loop.close()


_UNREAD = ObservedState({})  # Service.observed while a reconcile has not read the state yet
LINKS_CHANGED = "a managed interface changed outside bmx7-wg"


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
