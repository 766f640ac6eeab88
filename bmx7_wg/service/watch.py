"""What wakes the service: inotify on files and directories, rtnetlink events.

Both are plain file descriptors for poll(); idle means asleep. Only the standard library
is used: inotify through libc, rtnetlink through an AF_NETLINK socket (its messages
parsed by net/rtnl.py).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from dataclasses import dataclass

from bmx7_wg.errors import WatchLimit
from bmx7_wg.net import rtnl

IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

DIR_EVENTS = (
    IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)
_EVENT = struct.Struct("iIII")


@dataclass(frozen=True)
class FileEvent:
    directory: str
    name: str
    mask: int


class Inotify:
    """Watch directories (a file is watched through its directory: editors replace files)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._add = libc.inotify_add_watch
        self._add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        self._rm = libc.inotify_rm_watch
        self._rm.argtypes = [ctypes.c_int, ctypes.c_int]
        fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            if err == errno.EMFILE:  # many services or containers on one host use them up
                raise WatchLimit(
                    "cannot watch files for changes: too many open files (this user's inotify "
                    f"instances, fs.inotify.max_user_instances = {_limit('max_user_instances')}, or "
                    "this process's open-file limit); raise it, e.g. sysctl "
                    "fs.inotify.max_user_instances=1024"
                )
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self._dirs: dict[int, str] = {}

    def watch(self, directory: str, *, follow: bool = True) -> bool:
        """Watch a directory; False if it does not exist (yet), or, unless `follow`, is a
        symbolic link."""
        if directory in self._dirs.values():
            return True
        flags = DIR_EVENTS | IN_ONLYDIR | (0 if follow else IN_DONT_FOLLOW)
        wd = self._add(self.fd, os.fsencode(directory), flags)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
            if err == errno.ENOSPC:
                raise WatchLimit(
                    f"cannot watch {directory} for changes: this user's inotify watches are used up "
                    f"(fs.inotify.max_user_watches = {_limit('max_user_watches')}); raise it, "
                    "e.g. sysctl fs.inotify.max_user_watches=65536"
                )
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self._dirs[wd] = directory
        return True

    def watched(self) -> set[str]:
        return set(self._dirs.values())

    def read(self) -> list[FileEvent]:
        events: list[FileEvent] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
                offset += _EVENT.size + length
                name = os.fsdecode(raw.rstrip(b"\0"))
                directory = self._dirs.get(wd, "")
                if mask & IN_IGNORED:
                    self._dirs.pop(wd, None)
                events.append(FileEvent(directory, name, mask))

    def close(self) -> None:
        os.close(self.fd)


def _limit(name: str) -> str:
    """The kernel's inotify limit NAME, for an error message ("?" where it cannot be read)."""
    try:
        with open(f"/proc/sys/fs/inotify/{name}") as f:
            return f.read().strip()
    except OSError:
        return "?"


class LinkEvents:
    """rtnetlink notifications, reduced to the interface indexes they concern."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        groups = (
            rtnl.RTMGRP_LINK
            | rtnl.RTMGRP_IPV4_IFADDR
            | rtnl.RTMGRP_IPV6_IFADDR
            | rtnl.RTMGRP_IPV4_ROUTE
            | rtnl.RTMGRP_IPV6_ROUTE
        )
        self.sock.bind((0, groups))
        self.fd = self.sock.fileno()

    def read(self) -> tuple[set[int], bool]:
        """Interface indexes touched since the last read, and whether events were lost."""
        touched: set[int] = set()
        overflow = False
        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                return touched, overflow
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # the kernel dropped events: look at everything
                    overflow = True
                    continue
                raise
            touched.update(rtnl.notified_indexes(data))

    def close(self) -> None:
        self.sock.close()
