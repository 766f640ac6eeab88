"""`apply --confirm SECONDS`: apply, wait for `bmx7-wg confirm`, else put everything back.

Like `netplan try` or a router's "commit confirmed": an administrator who reaches a
server through the tunnel being changed gets it back as it was if the change cuts them
off. The order of one run:

1. claim the namespace's pending directory (bmx7_wg/pending.py): a second apply, `down`
   and the service's reconciles wait or are refused while it is there;
2. read the state the apply may change and the configuration file's bytes, and keep them
   (bmx7_wg/snapshot.py, root-only files: they hold private keys);
3. install the new configuration file (`--new-config`), apply it (one planned reconcile);
4. wait for SIGUSR1 (sent by `bmx7-wg confirm`), a fresh handshake of a named peer
   (`--confirm-handshake`), the deadline, or the terminal going away (SIGHUP, its input
   closed; SIGINT and SIGTERM too);
5. unless confirmed: restore the configuration file first (so the service, once it
   resumes, reads the old one), then roll back as one planned reconcile whose desired
   state is the snapshot (plan.planner.plan_rollback), each action logged as an event.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import FrameType

from bmx7_wg import lock, pending, snapshot
from bmx7_wg.base.atomicfile import write_atomically
from bmx7_wg.config import reader
from bmx7_wg.config.model import Config
from bmx7_wg.errors import Bmx7WgError, NotConfirmed, RollbackFailed, UsageError
from bmx7_wg.keys import decode_key
from bmx7_wg.plan.actions import Action
from bmx7_wg.plan.execute import Failure
from bmx7_wg.plan.planner import plan_rollback
from bmx7_wg.plan.state import DesiredState, Implementation
from bmx7_wg.service.eventloop import drain

log = logging.getLogger(__name__)

POLL = 1.0  # seconds between looks at a peer's handshake (and at the clock)
CONFIRM_WAIT = 30.0  # seconds `bmx7-wg confirm` waits for the apply to take its confirmation
_SIGNALS = (signal.SIGUSR1, signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
_SIGNAL_REASONS: dict[int, str] = {
    signal.SIGHUP: "the terminal went away (SIGHUP)",
    signal.SIGTERM: "stopped (SIGTERM)",
    signal.SIGINT: "interrupted (SIGINT)",
}


@dataclass
class Result:
    """What an `apply --confirm` did, for the CLI to print."""

    actions: list[Action]
    failures: list[Failure]
    outcome: str = ""  # "confirmed" | "rolled back" | "partly rolled back" | "" (nothing to confirm)
    reason: str = ""
    rollback: list[Action] = field(default_factory=list)
    rollback_failures: list[Failure] = field(default_factory=list)
    config_restored: bool = False


class Waiter:
    """Signals and the terminal's input, turned into wake-ups of one poll()."""

    def __init__(self) -> None:
        self.received: list[int] = []
        self._tty_closed = False
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old_wakeup = signal.set_wakeup_fd(self._w)
        self._old = {sig: signal.signal(sig, self._on_signal) for sig in _SIGNALS}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)

    def close(self) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(self._old_wakeup)
        os.close(self._r)
        os.close(self._w)

    def terminal_lost(self) -> bool:
        return signal.SIGHUP in self.received or self._tty_closed

    def stop_reason(self) -> str | None:
        """Why to roll back now, from the signals so far (SIGUSR1 is not one)."""
        return next((_SIGNAL_REASONS[s] for s in self.received if s in _SIGNAL_REASONS), None)

    def wait(self, deadline: float, fresh_handshake: Callable[[], bool] | None) -> tuple[bool, str]:
        """(confirmed, why) once the wait is over."""
        terminal = _watched_input()
        terminal_was_tty = terminal is not None and os.isatty(terminal)
        poller = select.poll()
        poller.register(self._r, select.POLLIN)
        if terminal is not None:
            poller.register(terminal, select.POLLIN | select.POLLHUP)
        while True:
            stop = self.stop_reason()
            if stop:
                return False, stop
            if signal.SIGUSR1 in self.received:
                return True, "confirmed by bmx7-wg confirm"
            if fresh_handshake is not None and fresh_handshake():
                return True, "confirmed by a fresh handshake"
            left = deadline - time.time()
            if left <= 0:
                return False, "not confirmed in time"
            timeout = min(left, POLL) if fresh_handshake is not None else left
            for fd, events in poller.poll(int(timeout * 1000) + 1):
                if fd == self._r:
                    drain(self._r)
                elif _input_closed(fd, events):
                    self._tty_closed = os.isatty(fd) or bool(events & select.POLLHUP and terminal_was_tty)
                    return False, "the terminal went away (its input was closed)"


def _detach() -> None:
    """The terminal is gone: what is still printed goes nowhere (a write would fail with
    EIO); the rollback's events are in the journal."""
    fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    os.close(fd)


def _watched_input() -> int | None:
    """Standard input, if its closing means the administrator is gone: a terminal this
    process is in the foreground of (reading it in the background would stop us), a
    pipe or a socket. /dev/null or a file (a job started by Ansible) says nothing."""
    try:
        st = os.fstat(0)
    except OSError:
        return None
    if os.isatty(0):
        try:
            return 0 if os.tcgetpgrp(0) == os.getpgrp() else None
        except OSError:
            return None
    if stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode):
        return 0
    return None


def _input_closed(fd: int, events: int) -> bool:
    if events & (select.POLLHUP | select.POLLERR | select.POLLNVAL):
        return True
    try:
        return os.read(fd, 4096) == b""  # end of input (Ctrl-D on a terminal)
    except BlockingIOError:
        return False
    except OSError as exc:
        return exc.errno in (errno.EIO, errno.EBADF)


def apply_confirmed(
    config_path: str,
    seconds: float,
    *,
    new_config: str | None,
    handshake_peer: str | None,
    say: Callable[[str], None],
    show_applied: Callable[[Result], None],
) -> Result:
    """Apply, wait, keep or roll back (see the module's text). `say` prints a line for the
    administrator; `show_applied` prints what the apply changed, before the wait."""
    from bmx7_wg.engine import Engine, observe, reconcile
    from bmx7_wg.mesh.session import publication
    from bmx7_wg.service.logsetup import events_to_journal
    from bmx7_wg.system import System

    cfg = reader.load(new_config or config_path)  # an invalid file changes nothing
    events_to_journal()
    new_bytes = snapshot.read_config(new_config).data if new_config else None
    _check_peer_name(cfg, handshake_peer)
    claim = pending.claim(os.path.abspath(config_path))
    waiter = Waiter()
    applying = False  # from here on, the system may differ from the snapshot
    try:
        before_config = snapshot.read_config(config_path)
        with lock.held("apply"), System() as system:
            observed = observe(system, [i.name for i in cfg.interfaces])
        snap = snapshot.take(observed, publication(cfg), before_config)
        snapshot.save(snap, pending.directory())
        if new_bytes is not None:
            mode = before_config.mode if before_config.data is not None else 0o644
            write_atomically(config_path, new_bytes, mode, before_config.uid, before_config.gid)
        started = time.time()
        applying = True
        with System() as system:
            r = reconcile(Engine(system), cfg, check=False, verb="apply", on_done=_applied)
        result = Result(r.actions, r.failures)
        config_changed = new_bytes is not None and new_bytes != before_config.data
        if not r.actions and not r.failures and not config_changed:
            pending.release("confirmed", "no changes")
            return result
        deadline = time.time() + seconds
        pending.write(replace(claim, deadline=deadline))
        show_applied(result)
        if r.failures:
            confirmed, why = False, f"{len(r.failures)} change(s) failed"
        else:
            say(
                f"confirm within {seconds:g} s with `bmx7-wg confirm` (from any shell), or everything "
                "goes back as it was: interfaces, keys, peers, addresses, routes, the mesh "
                "announcement and the configuration file"
            )
            check = _handshake_check(handshake_peer, r.plan.desired, started) if handshake_peer else None
            confirmed, why = waiter.wait(deadline, check)
        result.reason = why
        if waiter.terminal_lost():
            _detach()
        if confirmed:
            result.outcome = "confirmed"
            pending.release("confirmed", why)
            log.info("apply --confirm: %s; the changes stay", why)
            return result
        say(f"{why}: rolling back")
        _roll_back(snapshot.load(pending.directory()), result, why)
        pending.release(result.outcome, why)
        return result
    except BaseException as exc:
        # An error (a state that cannot be read, a lock held too long, a bug): what may
        # have been applied goes back as for any other end without a confirmation, and
        # the claim never stays behind for the service to defer to.
        mine = pending.read()
        if mine is not None and mine.pid == os.getpid():
            why = f"stopped by an error ({type(exc).__name__})"
            if applying:
                _roll_back_after_error(why)
            pending.release("stopped by an error", why)
        raise
    finally:
        waiter.close()


def _roll_back_after_error(why: str) -> None:
    result = Result([], [])
    try:
        _roll_back(snapshot.load(pending.directory()), result, why)
    except Exception as exc:  # the error being raised says more; this one is logged
        log.error("apply --confirm: the rollback after an error failed too: %s", exc)
        return
    left = "; ".join(f.describe() for f in result.rollback_failures)
    log.warning("apply --confirm %s: %s%s", why, result.outcome, f"; left as applied: {left}" if left else "")


def _applied(action: Action) -> None:
    from bmx7_wg.service import events

    events.action_done(action, why="apply --confirm")


def _roll_back(snap: snapshot.Snapshot, result: Result, why: str) -> None:
    """Restore the configuration file, then plan and run the way back."""
    from bmx7_wg.engine import observe
    from bmx7_wg.mesh.session import published_at
    from bmx7_wg.service import events
    from bmx7_wg.system import System

    result.config_restored = snapshot.restore_config(snap.config)
    reason = f"rollback of apply --confirm: {why}"
    if result.config_restored:
        events.emit(
            logging.INFO,
            f"{snap.config.path}: restored as it was before apply --confirm ({why})",
            events.CHANGE_APPLIED,
            config=snap.config.path,
            action="restore_config",
        )
    with lock.held("apply"), System() as system:
        observed = observe(system, [d.name for d in snap.state.interfaces])
        if snap.mesh is not None:
            observed = replace(observed, announcement=published_at(snap.mesh[1]))
        actions = plan_rollback(snap.state, snap.published, observed, snap.mesh)
        implementations: dict[str, Implementation] = {d.name: d.implementation for d in snap.state.interfaces}
        outcome = system.execute(actions, implementations, lambda a: events.action_done(a, why=reason))
    for failure in outcome.failures:
        events.action_failed(failure, why=reason)
    result.rollback = outcome.done
    result.rollback_failures = outcome.failures
    result.outcome = "partly rolled back" if outcome.failures else "rolled back"


def raise_for(result: Result) -> None:
    """The error (and exit code) of a run that did not end confirmed."""
    if result.outcome == "rolled back":
        raise NotConfirmed(
            f"{result.reason}: rolled back; the system and the configuration file are as they were "
            f"before ({len(result.rollback)} change(s) undone)"
        )
    if result.outcome == "partly rolled back":
        raise RollbackFailed(result.rollback_failures, applied=len(result.rollback), why=result.reason)


def _check_peer_name(cfg: Config, peer: str | None) -> None:
    """Refuse a --confirm-handshake PEER that cannot be found, before anything changes:
    a static peer's key or name, a mesh peer's name (known only once the mesh is read),
    or a public key."""
    if peer is None:
        return
    if any(peer in (p.public_key, p.name) for i in cfg.interfaces for p in i.peers):
        return
    if any(i.mesh for i in cfg.interfaces):
        return
    try:
        if len(decode_key(peer)) == 32:
            return
    except ValueError:
        pass
    raise UsageError(
        f"apply: --confirm-handshake {peer}: no peer of that name or public key in the configuration"
    )


def _handshake_check(peer: str, desired: DesiredState, since: float) -> Callable[[], bool] | None:
    """A look at whether `peer` (a key or a name) has a handshake since `since`; None
    when the applied state has no such peer."""
    from bmx7_wg.system import System

    target = next(
        (
            (d.name, k, d.implementation)
            for d in desired.interfaces
            for k, p in d.peers.items()
            if peer in (k, p.name)
        ),
        None,
    )
    if target is None:
        log.warning("--confirm-handshake %s: no such peer after the apply; waiting for bmx7-wg confirm", peer)
        return None
    name, key, implementation = target

    def fresh() -> bool:
        try:
            with System() as system:
                device = system.device(implementation).get(name)
        except Bmx7WgError:
            return False
        stats = device.stats.get(key)
        # Handshake times are whole seconds: one in the second the apply started counts.
        return stats is not None and stats.last_handshake >= int(since)

    return fresh


def confirm(say: Callable[[str], None]) -> None:
    """`bmx7-wg confirm`: tell the waiting `apply --confirm` to keep its changes."""
    p = pending.read()
    if p is None or not p.alive:
        last = pending.last()
        if p is not None:
            raise NotConfirmed(
                f"confirm: apply --confirm (pid {p.pid}) is gone without rolling back (killed?): "
                "its changes stay as applied; run bmx7-wg apply to match the configuration file"
            )
        if last is not None and last.outcome != "confirmed":
            when = time.strftime("%H:%M:%S", time.localtime(last.at))
            raise NotConfirmed(
                f"confirm: nothing to confirm: the last apply --confirm (pid {last.pid}) was "
                f"{last.outcome} at {when} ({last.reason})"
            )
        say("nothing to confirm: no apply --confirm is waiting")
        return
    os.kill(p.pid, signal.SIGUSR1)
    deadline = time.monotonic() + CONFIRM_WAIT
    while time.monotonic() < deadline:
        if pending.read() is None:
            last = pending.last()
            if last is not None and last.pid == p.pid and last.outcome != "confirmed":
                raise NotConfirmed(
                    f"confirm: too late: apply --confirm (pid {p.pid}) was {last.outcome} ({last.reason})"
                )
            say(f"confirmed: the changes of apply --confirm (pid {p.pid}) stay")
            return
        time.sleep(0.05)
    raise NotConfirmed(f"confirm: apply --confirm (pid {p.pid}) did not answer within {CONFIRM_WAIT:g} s")
