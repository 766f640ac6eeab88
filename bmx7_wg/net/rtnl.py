"""rtnetlink by the standard library: links, addresses and routes of the current network namespace.

It exists for speed. Importing pyroute2 and opening an IPRoute costs ~100 ms before the
first byte is asked for, and every `apply` talks rtnetlink: a no-op one reads three
dumps, a one-peer change adds a route. `wg syncconf`, the benchmark, needs ~100 ms for
the whole change. This module asks the kernel directly, reading and writing.

It is mechanism only: values go in and come back raw (indexes, packed addresses,
attribute numbers resolved to fields, the kernel's own constants); what counts as
"ours", which scope a route gets and how addresses are written is decided by
bmx7_wg.net.netlink. Failures are OSError with the kernel's errno.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

# linux/netlink.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER

# linux/rtnetlink.h, linux/if_link.h, linux/if_addr.h
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
IFLA_IFNAME = 3
IFLA_MTU = 4
IFLA_LINKINFO = 18
IFLA_IFALIAS = 20
IFLA_AF_SPEC = 26
IFLA_EXT_MASK = 29
IFLA_INFO_KIND = 1
IFLA_INET6_ADDR_GEN_MODE = 8
RTEXT_FILTER_SKIP_STATS = 1 << 3
IFA_ADDRESS = 1
IFA_LOCAL = 2
IFA_FLAGS = 8
RTA_DST = 1
RTA_OIF = 4
RTA_TABLE = 15
RT_TABLE_COMPAT = 252  # rtm_table of a table beyond 8 bits; RTA_TABLE holds the real one
RTN_UNSPEC = 0
# Multicast groups (the legacy bitmask for bind()): what the service listens to.
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_NLATTR = struct.Struct("=HH")  # len, type
_U8 = struct.Struct("=B")
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")

# One datagram of a dump is at most 32 KiB (the kernel's cap for dump skbs) unless a single
# message needs more; 1 MiB leaves room for any message, and MSG_TRUNC still catches one
# that does not fit instead of silently cutting it.
RECV_BUFFER = 1 << 20
# A dump the kernel marks as interrupted (the table changed under it) may miss entries;
# it is asked again, and after this many tries the last answer is taken as it is (what
# pyroute2 does at once): the next reconcile reads again anyway.
DUMP_TRIES = 3


@dataclass(frozen=True, slots=True)
class Link:
    index: int
    name: str
    kind: str | None  # IFLA_INFO_KIND; None when the link has no IFLA_LINKINFO (lo)
    alias: str | None  # IFLA_IFALIAS; None when there is none
    mtu: int
    flags: int  # ifi_flags: IFF_UP and the like


@dataclass(frozen=True, slots=True)
class Address:
    family: int
    index: int
    prefixlen: int
    address: bytes | None  # IFA_ADDRESS, packed; the peer's on an IPv4 point-to-point link
    local: bytes | None  # IFA_LOCAL, packed


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    table: int  # RTA_TABLE (rtm_table holds only 8 bits)
    type: int  # RTN_UNICAST, RTN_BLACKHOLE, ...
    protocol: int
    oif: int | None  # RTA_OIF; None for routes without one (blackhole, multipath)
    dst: bytes | None  # RTA_DST, packed; None for a default route
    dst_len: int


class RouteSocket:
    """A NETLINK_ROUTE socket of the network namespace the caller is in when opening it
    (and, after a request was given up half-way, when making the next one).

    It joins no multicast group, so only replies arrive; each is matched to its request
    by sequence number. Every change asks for an acknowledgement and waits for it, so a
    method that returns has been done by the kernel. Not thread-safe.
    """

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._closed = False
        self._buffer = bytearray(RECV_BUFFER)
        self._seq = 0
        self._open()

    def close(self) -> None:
        self._closed = True
        self._drop()

    def links(self) -> list[Link]:
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _ext_mask()
        return self._dump(RTM_GETLINK, body, RTM_NEWLINK, _parse_link)

    def link(self, name: str) -> Link | None:
        """The named link, or None if there is none (the kernel says ENODEV)."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0) + _ext_mask()
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
        try:
            found, _ = self._exchange(RTM_GETLINK, NLM_F_REQUEST, body, RTM_NEWLINK, _parse_link)
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return found[0] if found else None

    def addresses(self) -> list[Address]:
        """IPv4 and IPv6 addresses of every link (AF_UNSPEC dumps both)."""
        body = _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        return self._dump(RTM_GETADDR, body, RTM_NEWADDR, _parse_address)

    def routes(self, family: int = socket.AF_UNSPEC) -> list[Route]:
        """Routes of every table. AF_UNSPEC dumps every family in one request (IPv4, IPv6,
        and multicast or MPLS routes where those exist; the caller filters)."""
        body = _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
        return self._dump(RTM_GETROUTE, body, RTM_NEWROUTE, _parse_route)

    # Links

    def create_link(self, name: str, kind: str) -> None:
        """A new link of this IFLA_INFO_KIND; EEXIST if the name is taken, EOPNOTSUPP if the
        kernel knows no such kind (after trying to load the module for it)."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
        body += _attr(IFLA_LINKINFO, _attr(IFLA_INFO_KIND, kind.encode()))
        self._acknowledged(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_link(self, index: int) -> None:
        self._acknowledged(RTM_DELLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0))

    def set_link(
        self,
        index: int,
        *,
        alias: str | None = None,
        mtu: int | None = None,
        flags: int = 0,
        change: int = 0,
        addr_gen_mode: int | None = None,
    ) -> None:
        """Change an existing link: what `ip link set` and pyroute2's link("set") send, an
        RTM_NEWLINK without NLM_F_CREATE. Only the attributes given and the flags in
        `change` are touched."""
        body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, change)
        if alias is not None:
            body += _attr(IFLA_IFALIAS, alias.encode())
        if mtu is not None:
            body += _attr(IFLA_MTU, _U32.pack(mtu))
        if addr_gen_mode is not None:
            inet6 = _attr(IFLA_INET6_ADDR_GEN_MODE, _U8.pack(addr_gen_mode))
            body += _attr(IFLA_AF_SPEC, _attr(socket.AF_INET6, inet6))
        self._acknowledged(RTM_NEWLINK, 0, body)

    # Addresses

    def add_address(self, index: int, family: int, address: bytes, prefixlen: int, flags: int = 0) -> None:
        """Add a packed address; EEXIST if the link has it already (NLM_F_EXCL)."""
        body = _address_request(index, family, address, prefixlen, flags)
        self._acknowledged(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_address(self, index: int, family: int, address: bytes, prefixlen: int) -> None:
        """Remove a packed address; EADDRNOTAVAIL if the link has no such one."""
        self._acknowledged(RTM_DELADDR, 0, _address_request(index, family, address, prefixlen, 0))

    # Routes

    def add_route(
        self,
        *,
        family: int,
        table: int,
        dst: bytes,
        dst_len: int,
        oif: int,
        protocol: int,
        scope: int,
        route_type: int,
    ) -> None:
        """Add a route to dst/dst_len out of link `oif`; EEXIST if the table has one to it
        already (NLM_F_EXCL)."""
        body = _route_request(family, table, dst, dst_len, oif, protocol, scope, route_type)
        self._acknowledged(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, body)

    def delete_route(
        self,
        *,
        family: int,
        table: int,
        dst: bytes,
        dst_len: int,
        oif: int,
        protocol: int,
        scope: int,
    ) -> None:
        """Remove the route that matches every field given; ESRCH if none does. The type
        is left unspecified, which matches any (what `ip route del` sends)."""
        body = _route_request(family, table, dst, dst_len, oif, protocol, scope, RTN_UNSPEC)
        self._acknowledged(RTM_DELROUTE, 0, body)

    # The exchange

    def _acknowledged(self, kind: int, flags: int, body: bytes) -> None:
        """Send one change and wait for the kernel's acknowledgement (or its error)."""
        self._exchange(kind, NLM_F_REQUEST | NLM_F_ACK | flags, body, None, _no_reply)

    def _dump(self, kind: int, body: bytes, reply: int, parse: Callable[[bytes, int, int], T]) -> list[T]:
        for _ in range(DUMP_TRIES):
            found, interrupted = self._exchange(kind, NLM_F_REQUEST | NLM_F_DUMP, body, reply, parse)
            if not interrupted:
                break
        return found

    def _exchange(
        self, kind: int, flags: int, body: bytes, reply: int | None, parse: Callable[[bytes, int, int], T]
    ) -> tuple[list[T], bool]:
        """Send one request: the parsed `reply` messages (none for a change, whose answer is
        only the acknowledgement), and whether the dump was interrupted."""
        sock = self._open()
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        request = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, self._seq, 0) + body
        try:
            sock.sendto(request, (0, 0))
            found, interrupted, code = self._receive(sock, self._seq, reply, parse, bool(flags & NLM_F_DUMP))
        except BaseException:
            # Given up half-way (a socket error, Ctrl-C, a malformed reply): the rest of a
            # dump would still be queued, and the kernel refuses a new dump on a socket
            # with one running. The next request opens a new socket.
            self._drop()
            raise
        if code:
            # The kernel's answer to the whole request; the socket is in order.
            raise OSError(code, os.strerror(code))
        return found, interrupted

    def _receive(
        self,
        sock: socket.socket,
        seq: int,
        reply: int | None,
        parse: Callable[[bytes, int, int], T],
        multipart: bool,
    ) -> tuple[list[T], bool, int]:
        """The replies to request `seq` up to its end, and the errno it ended with (or 0)."""
        found: list[T] = []
        interrupted = False
        buffer = self._buffer
        while True:
            # recv retries by itself on EINTR (PEP 475). MSG_TRUNC makes it return the
            # datagram's whole length, so a cut datagram is seen as one.
            size = sock.recv_into(buffer, 0, socket.MSG_TRUNC)
            if size > len(buffer):
                raise OSError(errno.EMSGSIZE, f"netlink reply of {size} bytes does not fit")
            data = bytes(memoryview(buffer)[:size])
            offset = 0
            while offset + _NLMSGHDR.size <= size:
                length, kind, flags, msg_seq, _pid = _NLMSGHDR.unpack_from(data, offset)
                end = offset + length
                if length < _NLMSGHDR.size or end > size:
                    raise OSError(errno.EBADMSG, "malformed netlink reply")
                start = offset + _NLMSGHDR.size
                offset += (length + 3) & ~3
                if msg_seq != seq:
                    continue  # not an answer to this request
                if flags & NLM_F_DUMP_INTR:
                    interrupted = True
                if kind in (NLMSG_ERROR, NLMSG_DONE):
                    # NLMSG_ERROR carries the request's result (0 is an acknowledgement);
                    # NLMSG_DONE may carry the error a dump ended with.
                    code = _S32.unpack_from(data, start)[0] if end - start >= 4 else 0
                    return found, interrupted, max(-code, 0)
                if kind == NLMSG_OVERRUN:
                    raise OSError(errno.ENOBUFS, "netlink reply overrun")
                if reply is not None and kind == reply:
                    found.append(parse(data, start, end))
                    if not multipart and not flags & NLM_F_MULTI:
                        return found, interrupted, 0

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _open(self) -> socket.socket:
        if self._closed:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        if self._sock is None:
            sock = socket.socket(
                socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE
            )
            try:
                sock.bind((0, 0))
            except BaseException:
                sock.close()
                raise
            self._sock = sock
        return self._sock


def notified_indexes(data: bytes) -> set[int]:
    """The interface index each link, address or route notification in one datagram
    concerns (a route's output interface; a route without one concerns none)."""
    found: set[int] = set()
    offset = 0
    size = len(data)
    while offset + _NLMSGHDR.size <= size:
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        end = offset + length
        if length < _NLMSGHDR.size or end > size:
            break
        start = offset + _NLMSGHDR.size
        offset += (length + 3) & ~3
        if kind in (RTM_NEWLINK, RTM_DELLINK) and end - start >= _IFINFOMSG.size:
            found.add(_parse_link(data, start, end).index)
        elif kind in (RTM_NEWADDR, RTM_DELADDR) and end - start >= _IFADDRMSG.size:
            found.add(_parse_address(data, start, end).index)
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE) and end - start >= _RTMSG.size:
            oif = _parse_route(data, start, end).oif
            if oif is not None:
                found.add(oif)
    return found


def _no_reply(data: bytes, start: int, end: int) -> None:
    """The parser of a change's replies, of which there are none (reply=None)."""


def _address_request(index: int, family: int, address: bytes, prefixlen: int, flags: int) -> bytes:
    # ifa_flags holds only the low 8 bits; IFA_FLAGS holds them all and wins where the
    # kernel knows it (3.14 and later). With both, every kernel reads the same flags.
    body = _IFADDRMSG.pack(family, prefixlen, flags & 0xFF, 0, index)
    if family == socket.AF_INET:
        # IFA_LOCAL is the link's own address; IFA_ADDRESS is the other end's on a
        # point-to-point address and otherwise the same. `ip addr add` and pyroute2 send
        # both, so the delete names the address exactly as the kernel keeps it.
        body += _attr(IFA_LOCAL, address)
    body += _attr(IFA_ADDRESS, address)
    if flags:
        body += _attr(IFA_FLAGS, _U32.pack(flags))
    return body


def _route_request(
    family: int, table: int, dst: bytes, dst_len: int, oif: int, protocol: int, scope: int, route_type: int
) -> bytes:
    # rtm_table has 8 bits: a table beyond them goes in RTA_TABLE only.
    short_table = table if table < 256 else RT_TABLE_COMPAT
    body = _RTMSG.pack(family, dst_len, 0, 0, short_table, protocol, scope, route_type, 0)
    body += _attr(RTA_TABLE, _U32.pack(table))
    body += _attr(RTA_DST, dst)
    body += _attr(RTA_OIF, _U32.pack(oif))
    return body


def _ext_mask() -> bytes:
    # Link statistics are most of a link message; nothing here reads them. Kernels
    # older than the flag ignore it.
    return _attr(IFLA_EXT_MASK, _U32.pack(RTEXT_FILTER_SKIP_STATS))


def _attr(kind: int, payload: bytes) -> bytes:
    length = _NLATTR.size + len(payload)
    return _NLATTR.pack(length, kind) + payload + b"\0" * (-length & 3)


def _attrs(data: bytes, offset: int, end: int) -> dict[int, bytes]:
    """The attributes in data[offset:end] by type (payloads, unpadded); the last one wins."""
    found: dict[int, bytes] = {}
    while offset + _NLATTR.size <= end:
        length, kind = _NLATTR.unpack_from(data, offset)
        if length < _NLATTR.size or offset + length > end:
            break
        found[kind & NLA_TYPE_MASK] = data[offset + _NLATTR.size : offset + length]
        offset += (length + 3) & ~3
    return found


def _string(payload: bytes | None) -> str | None:
    """A NUL-terminated attribute as text; None when absent or empty."""
    if payload is None:
        return None
    text = payload.split(b"\0", 1)[0]
    # Interface names are bytes to the kernel; one that is not UTF-8 must still print.
    return text.decode("utf-8", "replace") or None


def _u32(payload: bytes | None) -> int | None:
    if payload is None or len(payload) < 4:
        return None
    return int(_U32.unpack_from(payload)[0])


def _parse_link(data: bytes, start: int, end: int) -> Link:
    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(data, start)
    attrs = _attrs(data, start + _IFINFOMSG.size, end)
    kind = None
    linkinfo = attrs.get(IFLA_LINKINFO)
    if linkinfo is not None:
        kind = _string(_attrs(linkinfo, 0, len(linkinfo)).get(IFLA_INFO_KIND))
    return Link(
        index=index,
        name=_string(attrs.get(IFLA_IFNAME)) or "",
        kind=kind,
        alias=_string(attrs.get(IFLA_IFALIAS)),
        mtu=_u32(attrs.get(IFLA_MTU)) or 0,
        flags=flags,
    )


def _parse_address(data: bytes, start: int, end: int) -> Address:
    family, prefixlen, _flags, _scope, index = _IFADDRMSG.unpack_from(data, start)
    attrs = _attrs(data, start + _IFADDRMSG.size, end)
    return Address(
        family=family,
        index=index,
        prefixlen=prefixlen,
        address=attrs.get(IFA_ADDRESS),
        local=attrs.get(IFA_LOCAL),
    )


def _parse_route(data: bytes, start: int, end: int) -> Route:
    family, dst_len, _src_len, _tos, table, protocol, _scope, kind, _flags = _RTMSG.unpack_from(data, start)
    attrs = _attrs(data, start + _RTMSG.size, end)
    full_table = _u32(attrs.get(RTA_TABLE))
    return Route(
        family=family,
        table=table if full_table is None else full_table,
        type=kind,
        protocol=protocol,
        oif=_u32(attrs.get(RTA_OIF)),
        dst=attrs.get(RTA_DST),
        dst_len=dst_len,
    )
