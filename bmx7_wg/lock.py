"""One change at a time per network namespace: `apply`, `down` and each reconcile of `run`.

Two applies at once would plan against the same state and then trip over each other's
changes ("File exists"). The lock is an flock on `/run/bmx7-wg/netns-<inode>.lock`,
keyed by the network namespace (the inode of /proc/self/ns/net): interfaces, addresses
and routes belong to a namespace, so bmx7-wg in another namespace never waits. The file
holds "PID VERB" of the holder, for the message of whoever waits too long.

The holder removes the file while it still holds the lock, so that no file is left per
namespace that ever ran bmx7-wg; a waiter that then gets the lock of the removed file
notices (the path names another file, or none) and tries again.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bmx7_wg.errors import LockBusy

log = logging.getLogger(__name__)

LOCK_DIR = "/run/bmx7-wg"
WAIT = 10.0  # seconds a second apply waits for the first (documented in bmx7-wg(8))
_POLL = 0.05


def lock_path(directory: str | None = None) -> str:
    directory = directory or LOCK_DIR
    namespace = os.stat("/proc/self/ns/net").st_ino
    return os.path.join(directory, f"netns-{namespace}.lock")


@contextmanager
def held(verb: str, *, wait: float = WAIT, directory: str | None = None) -> Iterator[None]:
    """Hold this network namespace's lock; wait up to `wait` seconds for it, then raise
    LockBusy naming the holder."""
    path = lock_path(directory)
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    except OSError as exc:
        raise LockBusy(f"cannot create the lock directory {os.path.dirname(path)}: {exc.strerror}") from None
    fd = _acquire(path, wait)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {verb}\n".encode())
        yield
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.close(fd)


def _acquire(path: str, wait: float) -> int:
    deadline = time.monotonic() + wait
    waiting = False
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise LockBusy(f"cannot open the lock {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockBusy(
                    f"another bmx7-wg ({holder}) holds the lock of this network namespace "
                    f"({path}) for longer than {wait:g} s; nothing was changed: try again "
                    "when it has finished"
                ) from None
            if not waiting:
                log.info("waiting for the lock %s, held by %s", path, holder)
                waiting = True
            time.sleep(_POLL)
            continue
        if _same_file(fd, path):
            return fd
        os.close(fd)  # the holder we waited for removed it: take the current one


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode("ascii", "replace").split()
    except OSError:
        text = []
    if len(text) >= 2 and text[0].isdigit():
        return f"pid {text[0]}, {text[1]}"
    return "pid unknown"
