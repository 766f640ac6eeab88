"""Processes the lab starts, known by PID and start time (a PID alone may be reused)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from bmx7_wg_lab.record import ProcessRecord


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, None if there is no such live process (zombies count as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(p: ProcessRecord) -> bool:
    return start_time(p.pid) == p.start


def spawn(
    node: int, role: str, argv: Sequence[str], env: Mapping[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], ProcessRecord]:
    """Start a daemon in its own session, output to `log`; `ip netns exec` execs it, so the PID is its own."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=log.parent,  # the node's directory: a core dump stays in the lab and goes with it
        )
    start = start_time(proc.pid)
    return proc, ProcessRecord(node=node, role=role, pid=proc.pid, start=start if start is not None else -1)


def stop(processes: Iterable[ProcessRecord], *, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Signal each process that is still ours, wait up to `grace` seconds, then SIGKILL the rest."""
    mine = [p for p in processes if alive(p)]
    for p in mine:
        _signal(p.pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(alive(p) for p in mine):
        _reap()
        time.sleep(0.05)
    for p in mine:
        if alive(p):
            _signal(p.pid, signal.SIGKILL)
    _reap()


def kill_pids(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        _signal(pid, sig)
    _reap()


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reap() -> None:
    """Collect the exit status of our own children that ended (a long `measure` starts many)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
