"""The rtnetlink boundary: links, addresses and routes of the current network namespace.

This is the only module that talks rtnetlink (bmx7_wg.net.rtnl builds and sends the
requests). It takes and returns plain values (names, canonical address strings),
decides what is ours and how a route or address is made, and turns every kernel or
socket failure into a NetlinkOperationError that names the interface and the operation
in words.

Reading and writing go through one of two sockets with the same interface, picked per
process by the backend (system.System): bmx7_wg.net.rtnl, which needs only the standard
library, for wireguard-go (importing pyroute2 and opening an IPRoute costs ~100 ms, half
of a no-op `apply` there); bmx7_wg.net.pyroute, pyroute2's IPRoute, where the kernel's
WireGuard is used, which imports pyroute2 for its generic netlink anyway (there rtnl.py
saved nothing: HACKING.md, "Speed paths"). The requests are the ones pyroute2 and
iproute2 send for the same changes.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Literal, TypedDict

from bmx7_wg.errors import ApplyError, BackendUnavailable, Unreachable
from bmx7_wg.net import rtnl

if TYPE_CHECKING:
    from bmx7_wg.net.pyroute import PyrouteSocket

# Which rtnetlink socket a Netlink talks through (see the module's docstring).
RouteStack = Literal["rtnl", "pyroute2"]

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
RTN_LOCAL = 2  # a route to one of the host's own addresses (table local)
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
# On delete, "nowhere" is the kernel's wildcard scope (what `ip route del` sends): an
# IPv4 delete that names a scope only matches routes with exactly that scope.
RT_SCOPE_NOWHERE = 255
IFA_F_NODAD = 0x02
IN6_ADDR_GEN_MODE_NONE = 1

KernelAddress = ipaddress.IPv4Interface | ipaddress.IPv6Interface
KernelNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NetlinkOperationError(ApplyError):
    """A netlink request failed: names the interface, the operation and the reason."""

    def __init__(self, interface: str | None, operation: str, reason: str, code: int | None = None) -> None:
        where = f"{interface}: " if interface else ""
        super().__init__(f"{where}cannot {operation}: {reason}")
        self.interface = interface
        self.reason = reason
        self.errno = code


class LinkNotFound(NetlinkOperationError, Unreachable):
    """The named interface does not exist (or did not appear in time): nothing else on
    it can be changed either."""


class WireGuardUnsupported(NetlinkOperationError, BackendUnavailable):
    """The running kernel cannot create WireGuard links.

    Also a BackendUnavailable, so that a caller choosing between the kernel and
    wireguard-go can catch it as "this backend cannot be used here".
    """

    exit_code = BackendUnavailable.exit_code


@dataclass(frozen=True)
class LinkInfo:
    name: str
    ifindex: int
    kind: str | None  # IFLA_INFO_KIND: "wireguard", "tun", "veth", None for lo and the like
    alias: str | None
    mtu: int
    up: bool  # IFF_UP is set (administratively up; says nothing about carrier)
    addresses: frozenset[str]  # "10.9.0.1/24", "fd77::1/128"; link-local fe80::/10 excluded


@dataclass(frozen=True)
class LinkRoutes:
    """Routes by outgoing link index, as canonical network strings."""

    ours: Mapping[int, frozenset[str]]  # main table, unicast, bmx7-wg's protocol
    # Unicast and local routes of every table, default routes left out: what the host
    # already sends somewhere (connected prefixes, bmx7's routes, anybody's).
    every: Mapping[int, frozenset[str]]


class Netlink:
    """rtnetlink of the network namespace the caller runs in.

    No namespace argument on purpose: the socket belongs to the namespace it was opened
    in, so the caller enters the namespace before opening a Netlink and stays in it.
    Not thread-safe.
    """

    def __init__(self, stack: RouteStack = "rtnl") -> None:
        """`stack`: "rtnl" (the standard library's sockets) or "pyroute2" (its IPRoute)."""
        self._rtnl: rtnl.RouteSocket | PyrouteSocket
        with self._request(None, "open a netlink socket"):
            if stack == "pyroute2":
                from bmx7_wg.net.pyroute import PyrouteSocket

                self._rtnl = PyrouteSocket()
            else:
                self._rtnl = rtnl.RouteSocket()

    def close(self) -> None:
        # Idempotent; afterwards every request fails with EBADF ("Bad file descriptor").
        self._rtnl.close()

    def __enter__(self) -> Netlink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Reading

    def links(self) -> dict[str, LinkInfo]:
        """Every link of the namespace, by name: one link dump and one address dump."""
        with self._request(None, "list links"):
            links = self._rtnl.links()
            addresses = self._rtnl.addresses()
        by_index = _addresses_by_index(addresses)
        infos = (_link_info(link, by_index.get(link.index, frozenset())) for link in links)
        return {info.name: info for info in infos}

    def link(self, name: str) -> LinkInfo | None:
        """The named link, or None if it does not exist."""
        with self._request(name, "read link"):
            link = self._rtnl.link(name)  # None on ENODEV
            if link is None:
                return None
            addresses = self._rtnl.addresses()
        return _link_info(link, _addresses_by_index(addresses).get(link.index, frozenset()))

    def link_routes(self, proto: int) -> LinkRoutes:
        """Routes by outgoing link: ours (main table, unicast, this rtm_protocol) and every
        unicast or local route of every table but default routes, both families.

        One dump for all links and both families (AF_UNSPEC): observing several interfaces
        must not dump the route table once per interface. The kernel filters nothing here
        (filtering dumps needs strict checking, which older kernels lack); this does.
        """
        ours: dict[int, set[str]] = {}
        every: dict[int, set[str]] = {}
        with self._request(None, "list routes"):
            routes = self._rtnl.routes(socket.AF_UNSPEC)
        for route in routes:
            if route.oif is None or route.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            if route.type not in (RTN_UNICAST, RTN_LOCAL):
                continue
            text = _network_text(route)
            if route.dst_len:
                every.setdefault(route.oif, set()).add(text)
            if route.table == RT_TABLE_MAIN and route.type == RTN_UNICAST and route.protocol == proto:
                ours.setdefault(route.oif, set()).add(text)
        return LinkRoutes(
            {i: frozenset(n) for i, n in ours.items()}, {i: frozenset(n) for i, n in every.items()}
        )

    def wait_for_link(self, name: str, timeout: float = 5.0) -> LinkInfo:
        """Wait until the named link exists (wireguard-go creates its tun after it starts)."""
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            info = self.link(name)
            if info is not None:
                return info
            if time.monotonic() >= deadline:
                raise LinkNotFound(name, "find link", f"it did not appear within {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    # Links

    def create_wireguard(self, name: str) -> None:
        operation = "create WireGuard link"
        try:
            self._rtnl.create_link(name, "wireguard")
        except OSError as exc:
            # An unknown link kind (no module to load for it) is EOPNOTSUPP.
            if _code(exc) == errno.EOPNOTSUPP:
                raise WireGuardUnsupported(
                    name,
                    operation,
                    f"the kernel has no WireGuard support ({_reason(exc)})",
                    errno.EOPNOTSUPP,
                ) from exc
            raise _error(name, operation, exc) from exc

    def delete(self, name: str) -> None:
        operation = "delete link"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._rtnl.delete_link(index)

    def set_alias(self, name: str, alias: str) -> None:
        operation = "set alias"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._rtnl.set_link(index, alias=alias)

    def set_mtu(self, name: str, mtu: int) -> None:
        operation = f"set MTU {mtu}"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._rtnl.set_link(index, mtu=mtu)

    def set_up(self, name: str) -> None:
        operation = "set link up"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._rtnl.set_link(index, flags=IFF_UP, change=IFF_UP)

    def disable_ipv6_autoconf(self, name: str) -> None:
        """addrgenmode none: the link gets no fe80 address when it goes up.

        Kernel WireGuard links never get one; wireguard-go's tun does unless this is set
        before the link goes up (an address made earlier stays).
        """
        operation = "disable IPv6 address autoconfiguration"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._rtnl.set_link(index, addr_gen_mode=IN6_ADDR_GEN_MODE_NONE)

    # Addresses

    def add_address(self, name: str, address: str) -> None:
        """Add "10.9.0.1/24" or "fd77::1/128"; an existing address is an error (EEXIST)."""
        operation = f"add address {address}"
        parsed = _parse_address(name, operation, address)
        index = self._index(name, operation)
        # Without nodad an IPv6 address stays tentative for a second or more and cannot
        # be used as a source meanwhile; a point-to-point tunnel has no one to clash with.
        flags = IFA_F_NODAD if parsed.version == 6 else 0
        with self._request(name, operation):
            self._rtnl.add_address(index, _family(parsed), parsed.ip.packed, parsed.network.prefixlen, flags)

    def remove_address(self, name: str, address: str) -> None:
        operation = f"remove address {address}"
        parsed = _parse_address(name, operation, address)
        index = self._index(name, operation)
        with self._request(name, operation, {errno.EADDRNOTAVAIL: "the link has no such address"}):
            self._rtnl.delete_address(index, _family(parsed), parsed.ip.packed, parsed.network.prefixlen)

    # Routes

    def add_route(self, name: str, network: str, proto: int) -> None:
        """A main-table route to `network` through the link, stamped with `proto`."""
        operation = f"add route {network}"
        parsed = _parse_network(name, operation, network)
        index = self._index(name, operation)
        # IPv4 device routes get link scope, as `ip route add NET dev IF` gives them.
        scope = RT_SCOPE_LINK if parsed.version == 4 else RT_SCOPE_UNIVERSE
        with self._request(name, operation):
            self._rtnl.add_route(**_route_key(parsed, index, proto), scope=scope, route_type=RTN_UNICAST)

    def remove_route(self, name: str, network: str, proto: int) -> None:
        """Remove the route only if it goes through this link and carries `proto`."""
        operation = f"remove route {network}"
        parsed = _parse_network(name, operation, network)
        index = self._index(name, operation)
        hints = {errno.ESRCH: f"the link has no such route with protocol {proto}"}
        with self._request(name, operation, hints):
            self._rtnl.delete_route(**_route_key(parsed, index, proto), scope=RT_SCOPE_NOWHERE)

    # Helpers

    def _index(self, name: str, operation: str) -> int:
        with self._request(name, operation):
            link = self._rtnl.link(name)  # None on ENODEV
        if link is None:
            raise LinkNotFound(name, operation, os.strerror(errno.ENODEV), errno.ENODEV)
        return link.index

    @contextmanager
    def _request(
        self, interface: str | None, operation: str, hints: Mapping[int, str] | None = None
    ) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            raise _error(interface, operation, exc, hints) from exc


def _code(exc: OSError) -> int | None:
    """The errno of an OSError, if it has one."""
    code = exc.errno
    return abs(code) if isinstance(code, int) else None


def _reason(exc: OSError) -> str:
    code = _code(exc)
    if code is None:
        return str(exc) or type(exc).__name__
    reason = os.strerror(code)
    # bmx7_wg.net.rtnl says more than the errno where it has more to say (a reply too big,
    # a malformed one): that text follows the errno's.
    detail = exc.strerror
    if detail and detail != reason:
        reason = f"{reason} ({detail})"
    return reason


def _error(
    interface: str | None,
    operation: str,
    exc: OSError,
    hints: Mapping[int, str] | None = None,
) -> NetlinkOperationError:
    code = _code(exc)
    reason = _reason(exc)
    if hints and code is not None and code in hints:
        reason = f"{hints[code]} ({reason})"
    if code == errno.ENODEV:
        return LinkNotFound(interface, operation, reason, code)
    return NetlinkOperationError(interface, operation, reason, code)


def _parse_address(name: str, operation: str, text: str) -> KernelAddress:
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise NetlinkOperationError(name, operation, "not an IP address with a prefix length") from None


def _parse_network(name: str, operation: str, text: str) -> KernelNetwork:
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        raise NetlinkOperationError(
            name, operation, "not a network address with a prefix length (host bits set?)"
        ) from None


def _family(value: KernelAddress | KernelNetwork) -> int:
    return socket.AF_INET if value.version == 4 else socket.AF_INET6


class _RouteKey(TypedDict):
    """What names one of our routes, for adding it and for removing only it (the
    keyword arguments of rtnl.RouteSocket.add_route and delete_route)."""

    family: int
    table: int
    dst: bytes
    dst_len: int
    oif: int
    protocol: int


def _route_key(network: KernelNetwork, index: int, proto: int) -> _RouteKey:
    return _RouteKey(
        family=_family(network),
        table=RT_TABLE_MAIN,
        dst=network.network_address.packed,
        dst_len=network.prefixlen,
        oif=index,
        protocol=proto,
    )


def _link_info(link: rtnl.Link, addresses: frozenset[str]) -> LinkInfo:
    return LinkInfo(
        name=link.name,
        ifindex=link.index,
        kind=link.kind,
        alias=link.alias,
        mtu=link.mtu,
        up=bool(link.flags & IFF_UP),
        addresses=addresses,
    )


def _ip_text(family: int, packed: bytes) -> str:
    """A packed address as `ipaddress` writes it (the C library's spelling, which is the
    same but for IPv6 with an embedded IPv4 address); ValueError if it is not one."""
    text = socket.inet_ntop(family, packed)
    if family == socket.AF_INET6 and "." in text:
        text = str(ipaddress.IPv6Address(packed))
    return text


def _address_text(address: rtnl.Address) -> str | None:
    """ "ADDR/PREFIXLEN" of one address, or None for link-local and odd ones."""
    if address.family == socket.AF_INET:
        # On a point-to-point address IFA_ADDRESS is the peer; IFA_LOCAL is ours.
        packed = address.local or address.address
    elif address.family == socket.AF_INET6:
        packed = address.address or address.local
    else:
        return None
    if not packed:
        return None
    text = _ip_text(address.family, packed)
    # fe80::/10, what ipaddress calls link-local (packed is 16 bytes once _ip_text took it).
    if address.family == socket.AF_INET6 and packed[0] == 0xFE and packed[1] & 0xC0 == 0x80:
        return None
    return f"{text}/{address.prefixlen}"


def _addresses_by_index(addresses: Iterable[rtnl.Address]) -> dict[int, frozenset[str]]:
    grouped: dict[int, set[str]] = {}
    for address in addresses:
        text = _address_text(address)
        if text is not None:
            grouped.setdefault(address.index, set()).add(text)
    return {index: frozenset(texts) for index, texts in grouped.items()}


def _network_text(route: rtnl.Route) -> str:
    """The route's destination as `ipaddress` writes a network ("0.0.0.0/0", "::/0" for a
    default route, which carries no RTA_DST). The kernel keeps no host bits in a route."""
    if route.dst is None:
        return "0.0.0.0/0" if route.family == socket.AF_INET else "::/0"
    return f"{_ip_text(route.family, route.dst)}/{route.dst_len}"
