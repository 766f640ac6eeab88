"""The pending confirmation of `apply --confirm`: who waits, until when, and how it ended.

`apply --confirm` claims a directory `<run dir>/confirm-netns-<inode>/` (mode 0700, made
with mkdir: one claim per network namespace) and writes `pending` there: its pid, the
pid's start time (so a recycled pid is not taken for it), the deadline and the
configuration file. The snapshot of the state before the apply lives beside it
(bmx7_wg/snapshot.py). `bmx7-wg confirm` reads `pending` and sends the pid SIGUSR1;
the service reads it and defers its reconciles while it is there. When the wait ends,
`apply --confirm` writes `confirm-netns-<inode>.last` (what happened) and removes the
directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from typing import Any

from bmx7_wg.base.atomicfile import write_atomically
from bmx7_wg.errors import ConfirmPending

RUN_DIR = "/run/bmx7-wg"
MAX_SIZE = 4096


def run_dir() -> str:
    return os.environ.get("BMX7_WG_RUN_DIR") or RUN_DIR


def _namespace() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def directory() -> str:
    return os.path.join(run_dir(), f"confirm-netns-{_namespace()}")


def last_path() -> str:
    return os.path.join(run_dir(), f"confirm-netns-{_namespace()}.last")


@dataclass(frozen=True)
class Pending:
    pid: int
    started: int  # the pid's start time (clock ticks since boot, /proc/PID/stat field 22)
    deadline: float  # seconds since the epoch; 0 while the apply is still being made
    config: str

    @property
    def alive(self) -> bool:
        return process_start(self.pid) == self.started

    def describe(self) -> str:
        if not self.deadline:
            return f"apply --confirm (pid {self.pid}) is applying {self.config}"
        left = max(0.0, self.deadline - time.time())
        return (
            f"apply --confirm (pid {self.pid}) waits for `bmx7-wg confirm` for {left:.0f} s more "
            f"(configuration {self.config})"
        )


@dataclass(frozen=True)
class Last:
    """How the last `apply --confirm` of this namespace ended."""

    pid: int
    outcome: str  # "confirmed" | "rolled back" | "partly rolled back"
    reason: str
    at: float


def process_start(pid: int) -> int | None:
    """The start time of a process (None: no such process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def claim(config: str) -> Pending:
    """Make this process the pending one, or raise ConfirmPending. A claim left by a
    process that is gone (killed before it could roll back) is taken over."""
    os.makedirs(run_dir(), mode=0o700, exist_ok=True)
    path = directory()
    for _ in range(3):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            holder = read()
            if holder is not None and holder.alive:
                raise ConfirmPending(_refusal(holder)) from None
            if holder is None and _young(path):
                raise ConfirmPending(
                    f"another apply --confirm is starting in this network namespace ({path}); "
                    "nothing was changed"
                ) from None
            shutil.rmtree(path, ignore_errors=True)
            continue
        me = Pending(os.getpid(), process_start(os.getpid()) or 0, 0.0, config)
        write(me)
        # How an earlier one ended no longer answers `confirm`: this one will.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(last_path())
        return me
    raise ConfirmPending(f"cannot claim {path}: it keeps coming back; nothing was changed")


def _young(path: str) -> bool:
    try:
        return time.time() - os.stat(path).st_mtime < 10
    except OSError:
        return False


def _refusal(holder: Pending) -> str:
    return f"{holder.describe()}; nothing was changed. Confirm it (bmx7-wg confirm) or let it roll back first"


def write(p: Pending) -> None:
    write_atomically(os.path.join(directory(), "pending"), json.dumps(asdict(p)).encode(), 0o600)


def read() -> Pending | None:
    """The pending apply of this namespace, alive or not; None if there is none."""
    obj = _read_json(os.path.join(directory(), "pending"))
    try:
        return Pending(int(obj["pid"]), int(obj["started"]), float(obj["deadline"]), str(obj["config"]))
    except (KeyError, TypeError, ValueError):
        return None


def holder() -> Pending | None:
    """The pending apply of this namespace if its process still runs (what the service
    and a second apply look at)."""
    p = read()
    return p if p is not None and p.alive and p.pid != os.getpid() else None


def _read_json(path: str) -> dict[str, Any]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        data = os.read(fd, MAX_SIZE + 1)
    finally:
        os.close(fd)
    try:
        obj = json.loads(data) if len(data) <= MAX_SIZE else None
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}


def release(outcome: str, reason: str) -> None:
    """Record how the wait ended and remove the claim (snapshot and all)."""
    last = Last(os.getpid(), outcome, reason, time.time())
    write_atomically(last_path(), json.dumps(asdict(last)).encode(), 0o600)
    shutil.rmtree(directory(), ignore_errors=True)


def last() -> Last | None:
    obj = _read_json(last_path())
    try:
        return Last(int(obj["pid"]), str(obj["outcome"]), str(obj["reason"]), float(obj["at"]))
    except (KeyError, TypeError, ValueError):
        return None


def refuse_while_pending(verb: str) -> None:
    """Raise ConfirmPending if an `apply --confirm` waits in this namespace: a change made
    now would be undone by its rollback, or would undo what it applied."""
    p = holder()
    if p is not None:
        raise ConfirmPending(f"{verb}: {_refusal(p)}")
