"""One change at a time per network namespace: `apply`, `down` and each reconcile of `run`.

Two applies at once would plan against the same state and then trip over each other's
changes ("File exists"). The lock is an flock on `/run/bmx7-wg/netns-<inode>.lock`,
keyed by the network namespace (the inode of /proc/self/ns/net): interfaces, addresses
and routes belong to a namespace, so bmx7-wg in another namespace never waits. The file
holds "PID VERB" of the holder, for the message of whoever waits too long.

The holder removes the file while it still holds the lock, so that no file is left per
namespace that ever ran bmx7-wg; a waiter that then gets the lock of the removed file
notices (the path names another file, or none) and tries again.

Nobody else may hold it. Anyone who can open a file can flock it, read-only too, so the
directory is made 0700 and ours whatever made it (systemd's RuntimeDirectory= makes it
0755), and a lock file is honoured only if it is private: a regular file of ours, no
access for group or others, one link. Such a file was never open to anyone else,
because it was made so (never chmod-ed: an earlier open survives a chmod). A file that
is not private (left by an earlier version as 0644, a symlink) is removed, under a
second lock (`<name>.repair`, private from its creation), so that two waiters never
remove each other's new lock files; whoever held the old one holds nothing that counts.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager

from bmx7_wg.errors import LockBusy

log = logging.getLogger(__name__)

LOCK_DIR = "/run/bmx7-wg"
WAIT = 10.0  # seconds a second apply waits for the first (documented in bmx7-wg(8))
_POLL = 0.05
_REPAIR = ".repair"


def lock_path(directory: str | None = None) -> str:
    directory = directory or LOCK_DIR
    namespace = os.stat("/proc/self/ns/net").st_ino
    return os.path.join(directory, f"netns-{namespace}.lock")


def private_directory(path: str) -> int:
    """A descriptor of directory `path`, made if missing, and made 0700 and ours if it is
    not (whatever made it). A symlink at `path` is refused (OSError ELOOP or ENOTDIR):
    its target is not ours to change."""
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            os.fchown(fd, os.geteuid(), -1)
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.fchmod(fd, 0o700)
    except BaseException:
        os.close(fd)
        raise
    return fd


def is_private(st: os.stat_result) -> bool:
    """Whether a file (its lstat) is a regular file of ours that only we can open."""
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == os.geteuid()
        and st.st_mode & 0o077 == 0
        and st.st_nlink == 1
    )


@contextmanager
def held(verb: str, *, wait: float = WAIT, directory: str | None = None) -> Iterator[None]:
    """Hold this network namespace's lock; wait up to `wait` seconds for it, then raise
    LockBusy naming the holder."""
    path = lock_path(directory)
    try:
        dir_fd = private_directory(os.path.dirname(path))
    except OSError as exc:
        raise LockBusy(f"cannot use the lock directory {os.path.dirname(path)}: {exc.strerror}") from None
    try:
        with _held(dir_fd, path, verb, time.monotonic() + wait, wait, repair=True):
            yield
    finally:
        os.close(dir_fd)


@contextmanager
def _held(dir_fd: int, path: str, verb: str, deadline: float, wait: float, *, repair: bool) -> Iterator[None]:
    name = os.path.basename(path)
    fd = _acquire(dir_fd, path, deadline, wait, repair=repair)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {verb}\n".encode())
        yield
    finally:
        try:
            os.unlink(name, dir_fd=dir_fd)
        except OSError:
            pass
        os.close(fd)


def _acquire(dir_fd: int, path: str, deadline: float, wait: float, *, repair: bool) -> int:
    name = os.path.basename(path)
    waiting = False
    while True:
        fd = _open(dir_fd, path)
        st = None if fd is None else os.fstat(fd)
        if fd is not None and st is not None and st.st_nlink == 0:
            os.close(fd)  # removed by its holder since we opened it: take the current one
            continue
        if fd is None or st is None or not is_private(st):
            if fd is not None:
                os.close(fd)
            if not repair:
                raise LockBusy(f"the lock file {path} is not a private file of root's: remove it")
            # Waits for the repair lock count against the same deadline.
            with _held(dir_fd, path + _REPAIR, "repair", deadline, wait, repair=False):
                _remove_if_not_private(dir_fd, path)
            continue
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
        if _same_file(dir_fd, name, fd):
            return fd
        os.close(fd)  # the holder we waited for removed it: take the current one


def _open(dir_fd: int, path: str) -> int | None:
    """The lock file, made private if it is new; None if a symlink is there."""
    try:
        return os.open(
            os.path.basename(path),
            os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
            0o600,
            dir_fd=dir_fd,
        )
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None
        raise LockBusy(f"cannot open the lock {path}: {exc.strerror}") from None


def _remove_if_not_private(dir_fd: int, path: str) -> None:
    """Remove what is at `path` unless it is a private lock file (which another waiter
    holding the repair lock before us may have just made). Only the repair lock's holder
    removes a file that is not private, so the one seen is the one removed."""
    name = os.path.basename(path)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if is_private(st) or (st.st_nlink == 0 and stat.S_ISREG(st.st_mode)):
        return  # a private lock file, or one its holder is removing right now: not ours to remove
    what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else f"mode {stat.S_IMODE(st.st_mode):04o}"
    log.warning(
        "replacing the lock file %s: it is not a private file of this user (%s, owner %d, %d links); "
        "a lock on it is not honoured",
        path,
        what,
        st.st_uid,
        st.st_nlink,
    )
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass  # its holder removed it meanwhile: the caller opens what is there now
    except OSError as exc:
        raise LockBusy(f"cannot replace the lock file {path}: {exc.strerror}") from None


def _same_file(dir_fd: int, name: str, fd: int) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
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
