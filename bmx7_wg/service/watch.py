"""What wakes the service: inotify on files and directories, rtnetlink events.

Both are plain file descriptors for poll(); idle means asleep. Only the standard library
is used: inotify through libc, rtnetlink through an AF_NETLINK socket.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
from dataclasses import dataclass

IN_MODIFY = 0x002
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
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd: int = fd
        self._dirs: dict[int, str] = {}

    def watch(self, directory: str) -> bool:
        """Watch a directory; False if it does not exist (yet)."""
        if directory in self._dirs.values():
            return True
        wd = self._add(self.fd, os.fsencode(directory), DIR_EVENTS | IN_ONLYDIR)
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
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


# rtnetlink multicast groups (linux/rtnetlink.h, the legacy bitmask for bind()).
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
RTM_NEWLINK, RTM_DELLINK = 16, 17
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_OIF = 4
_NLMSGHDR = struct.Struct("=IHHII")


class LinkEvents:
    """rtnetlink notifications, reduced to the interface indexes they concern."""

    def __init__(self) -> None:
        self.sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
        )
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_ROUTE
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
            touched.update(parse_ifindexes(data))

    def close(self) -> None:
        self.sock.close()


def parse_ifindexes(data: bytes) -> set[int]:
    """The interface index each rtnetlink message in `data` concerns."""
    out: set[int] = set()
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            break
        body = data[offset + _NLMSGHDR.size : offset + length]
        if kind in (RTM_NEWLINK, RTM_DELLINK) and len(body) >= 8:
            out.add(struct.unpack_from("=i", body, 4)[0])  # ifinfomsg.ifi_index
        elif kind in (RTM_NEWADDR, RTM_DELADDR) and len(body) >= 8:
            out.add(struct.unpack_from("=I", body, 4)[0])  # ifaddrmsg.ifa_index
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and len(body) >= 12:
            pos = 12  # sizeof(rtmsg); then attributes
            while pos + 4 <= len(body):
                alen, atype = struct.unpack_from("=HH", body, pos)
                if alen < 4:
                    break
                if atype == RTA_OIF and alen >= 8:
                    out.add(struct.unpack_from("=i", body, pos + 4)[0])
                pos += (alen + 3) & ~3
        offset += (length + 3) & ~3
    return out
