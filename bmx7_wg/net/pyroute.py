"""rtnetlink by pyroute2's IPRoute, with net/rtnl.py's interface: what the kernel backend uses.

Which of the two a command talks through is decided by measurement (HACKING.md, "Speed
paths"; `bench/paths.py` on both backends). rtnl.py exists to spare a command pyroute2's
import; the kernel backend imports pyroute2 anyway, for WireGuard's generic netlink
(wireguard/kernel.py), so there rtnl.py saved nothing (-10 to +6% of each command at 100
and 1,000 peers) and rtnetlink goes through the library, one netlink stack. wireguard-go
needs no pyroute2 at all, and there rtnl.py halves each command: it stays for that backend.
system.System picks one per process.

Values go in and come back as rtnl's (`rtnl.Link`, `rtnl.Address`, `rtnl.Route`, packed
addresses, the kernel's constants), so bmx7_wg.net.netlink decides the same way whichever
socket it holds; failures are OSError with the kernel's errno, as rtnl's are.
tests/integration/test_netlink.py runs Netlink on both and compares the two readers.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
from collections.abc import Callable
from typing import Any, TypeVar

from bmx7_wg.net.rtnl import Address, Link, Route

T = TypeVar("T")


class PyrouteSocket:
    """rtnl.RouteSocket's requests through pyroute2's IPRoute, opened in the network
    namespace the caller is in. Not thread-safe."""

    def __init__(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        self._error: type[Exception] = NetlinkError
        self._ipr: Any = IPRoute()

    def _call(self, request: Callable[[], T]) -> T:
        try:
            return request()
        except self._error as exc:
            code = int(getattr(exc, "code", 0) or errno.EIO)
            raise OSError(code, os.strerror(code)) from None

    def close(self) -> None:
        self._ipr.close()

    def links(self) -> list[Link]:
        return [_link(m) for m in self._call(lambda: list(self._ipr.link("dump")))]

    def link(self, name: str) -> Link | None:
        """The named link, or None if there is none (the kernel says ENODEV)."""
        try:
            found = self._call(lambda: list(self._ipr.link("get", ifname=name)))
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        return _link(found[0]) if found else None

    def addresses(self) -> list[Address]:
        return [_address(m) for m in self._call(lambda: list(self._ipr.addr("dump")))]

    def routes(self, family: int = socket.AF_UNSPEC) -> list[Route]:
        """Routes of every table. pyroute2 0.7.2 dumps nothing for AF_UNSPEC: one dump per
        family asked for (both for AF_UNSPEC)."""
        families = (socket.AF_INET, socket.AF_INET6) if family == socket.AF_UNSPEC else (family,)
        out: list[Route] = []
        for fam in families:
            out += [_route(m) for m in self._call(functools.partial(self._route_dump, fam))]
        return out

    def _route_dump(self, family: int) -> list[Any]:
        return list(self._ipr.route("dump", family=family))

    def create_link(self, name: str, kind: str) -> None:
        self._call(lambda: self._ipr.link("add", ifname=name, kind=kind))

    def delete_link(self, index: int) -> None:
        self._call(lambda: self._ipr.link("del", index=index))

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
        request: dict[str, Any] = {"index": index}
        if alias is not None:
            request["ifalias"] = alias
        if mtu is not None:
            request["mtu"] = mtu
        if change:
            request["flags"], request["change"] = flags, change
        if addr_gen_mode is not None:
            inet6 = {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", addr_gen_mode)]}
            request["IFLA_AF_SPEC"] = {"attrs": [("AF_INET6", inet6)]}
        self._call(lambda: self._ipr.link("set", **request))

    def add_address(self, index: int, family: int, address: bytes, prefixlen: int, flags: int = 0) -> None:
        request: dict[str, Any] = {
            "index": index,
            "address": socket.inet_ntop(family, address),
            "prefixlen": prefixlen,
        }
        if flags:
            request["flags"] = flags
        self._call(lambda: self._ipr.addr("add", **request))

    def delete_address(self, index: int, family: int, address: bytes, prefixlen: int) -> None:
        text = socket.inet_ntop(family, address)
        self._call(lambda: self._ipr.addr("del", index=index, address=text, prefixlen=prefixlen))

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
        request = _route_request(family, table, dst, dst_len, oif, protocol, scope)
        self._call(lambda: self._ipr.route("add", type=route_type, **request))

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
        request = _route_request(family, table, dst, dst_len, oif, protocol, scope)
        self._call(lambda: self._ipr.route("del", **request))


def _route_request(
    family: int, table: int, dst: bytes, dst_len: int, oif: int, protocol: int, scope: int
) -> dict[str, Any]:
    """What names a route, in IPRoute.route()'s keywords (the destination as text)."""
    return {
        "family": family,
        "table": table,
        "dst": socket.inet_ntop(family, dst),
        "dst_len": dst_len,
        "oif": oif,
        "proto": protocol,
        "scope": scope,
    }


def _link(msg: Any) -> Link:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    return Link(
        index=int(msg["index"]),
        name=str(msg.get_attr("IFLA_IFNAME")),
        kind=kind or None,
        alias=msg.get_attr("IFLA_IFALIAS") or None,
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        flags=int(msg["flags"]),
    )


def _packed(family: int, text: str | None) -> bytes | None:
    return None if text is None else socket.inet_pton(family, text)


def _address(msg: Any) -> Address:
    family = int(msg["family"])
    return Address(
        family=family,
        index=int(msg["index"]),
        prefixlen=int(msg["prefixlen"]),
        address=_packed(family, msg.get_attr("IFA_ADDRESS")),
        local=_packed(family, msg.get_attr("IFA_LOCAL")),
    )


def _route(msg: Any) -> Route:
    family = int(msg["family"])
    table = msg.get_attr("RTA_TABLE")
    return Route(
        family=family,
        table=int(msg["table"] if table is None else table),
        type=int(msg["type"]),
        protocol=int(msg["proto"]),
        oif=msg.get_attr("RTA_OIF"),
        dst=_packed(family, msg.get_attr("RTA_DST")),
        dst_len=int(msg["dst_len"]),
    )
