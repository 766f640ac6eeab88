"""The rtnetlink boundary: links, addresses and routes of the current network namespace.

This is the only module that talks rtnetlink. It takes and returns plain values (names,
canonical address strings) and turns every kernel or socket failure into a
NetlinkOperationError that names the interface and the operation in words.

pyroute2 is imported when a Netlink is opened, not when this module is imported:
importing it costs 150-270 ms, and `check`, `genkey`, `pubkey` and `address` never
need netlink. The same code runs on pyroute2 0.7.2 (Debian bookworm) and 0.9.x; the
calls used here were checked on both, and where their defaults differ (route dumps,
message accessors) the arguments are spelled out and results are filtered here.
"""

from __future__ import annotations

import errno
import gzip
import ipaddress
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from bmx7_wg.errors import ApplyError, BackendUnavailable

IFF_UP = 0x1
RT_TABLE_MAIN = 254
RTN_UNICAST = 1
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
        self.operation = operation
        self.reason = reason
        self.errno = code


class LinkNotFound(NetlinkOperationError):
    """The named interface does not exist (or did not appear in time)."""


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


class Netlink:
    """rtnetlink of the network namespace the caller runs in.

    No namespace argument on purpose: pyroute2's netns= creates a namespace when the
    name is mistyped. The caller enters the namespace before opening a Netlink.
    Not thread-safe; with pyroute2 0.9 it must not be used from a thread that runs
    an asyncio event loop (pyroute2 then fails with "event loop is already running").
    """

    def __init__(self) -> None:
        from pyroute2 import IPRoute
        from pyroute2.netlink.exceptions import NetlinkError

        self._failures: tuple[type[BaseException], ...] = (NetlinkError, OSError)
        self._closed = False
        with self._request(None, "open a netlink socket"):
            self._ipr: Any = IPRoute()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._ipr.close()

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
            link_msgs = list(self._ipr.link("dump"))
            addr_msgs = list(self._ipr.addr("dump"))
        by_index = _addresses_by_index(addr_msgs)
        infos = (_link_info(m, by_index.get(int(m["index"]), frozenset())) for m in link_msgs)
        return {info.name: info for info in infos}

    def link(self, name: str) -> LinkInfo | None:
        """The named link, or None if it does not exist."""
        try:
            link_msgs = list(self._ipr.link("get", ifname=name))
            addr_msgs = list(self._ipr.addr("dump"))
        except self._failures as exc:
            if _code(exc) == errno.ENODEV:
                return None
            raise _error(name, "read link", exc) from exc
        if not link_msgs:
            return None
        msg = link_msgs[0]
        addresses = _addresses_by_index(addr_msgs).get(int(msg["index"]), frozenset())
        return _link_info(msg, addresses)

    def routes(self, ifindex: int, proto: int) -> frozenset[str]:
        """Main-table unicast routes out of this link with this rtm_protocol, both families."""
        return self.routes_by_link(proto).get(ifindex, frozenset())

    def routes_by_link(self, proto: int) -> dict[int, frozenset[str]]:
        """Main-table unicast routes with this rtm_protocol, by outgoing link, both families.

        One dump per family for all links: observing several interfaces must not dump the
        route table once per interface. Dumps each family explicitly: pyroute2 0.7.2 dumps
        only IPv4 by default and nothing at all for AF_UNSPEC. Filtering happens here, not in
        pyroute2, because its filter arguments do not mean the same in 0.7 and 0.9.
        """
        found: dict[int, set[str]] = {}
        with self._request(None, "list routes"):
            for family in (socket.AF_INET, socket.AF_INET6):
                for msg in self._ipr.route("dump", family=family):
                    route = _route_network(msg, proto)
                    if route is not None:
                        found.setdefault(route[0], set()).add(route[1])
        return {ifindex: frozenset(networks) for ifindex, networks in found.items()}

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
            self._ipr.link("add", ifname=name, kind="wireguard")
        except self._failures as exc:
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
            self._ipr.link("del", index=index)

    def set_alias(self, name: str, alias: str) -> None:
        operation = "set alias"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._ipr.link("set", index=index, ifalias=alias)

    def set_mtu(self, name: str, mtu: int) -> None:
        operation = f"set MTU {mtu}"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._ipr.link("set", index=index, mtu=mtu)

    def set_up(self, name: str) -> None:
        operation = "set link up"
        index = self._index(name, operation)
        with self._request(name, operation):
            self._ipr.link("set", index=index, flags=IFF_UP, change=IFF_UP)

    def disable_ipv6_autoconf(self, name: str) -> None:
        """addrgenmode none: the link gets no fe80 address when it goes up.

        Kernel WireGuard links never get one; wireguard-go's tun does unless this is set
        before the link goes up (an address made earlier stays).
        """
        operation = "disable IPv6 address autoconfiguration"
        index = self._index(name, operation)
        spec = {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]}
        with self._request(name, operation):
            self._ipr.link("set", index=index, IFLA_AF_SPEC=spec)

    # Addresses

    def add_address(self, name: str, address: str) -> None:
        """Add "10.9.0.1/24" or "fd77::1/128"; an existing address is an error (EEXIST)."""
        operation = f"add address {address}"
        parsed = _parse_address(name, operation, address)
        index = self._index(name, operation)
        request: dict[str, Any] = {
            "index": index,
            "address": str(parsed.ip),
            "prefixlen": parsed.network.prefixlen,
        }
        if parsed.version == 6:
            # Without nodad the address stays tentative for a second or more and cannot
            # be used as a source meanwhile; a point-to-point tunnel has no one to clash with.
            request["flags"] = IFA_F_NODAD
        with self._request(name, operation):
            self._ipr.addr("add", **request)

    def remove_address(self, name: str, address: str) -> None:
        operation = f"remove address {address}"
        parsed = _parse_address(name, operation, address)
        index = self._index(name, operation)
        with self._request(name, operation, {errno.EADDRNOTAVAIL: "the link has no such address"}):
            self._ipr.addr("del", index=index, address=str(parsed.ip), prefixlen=parsed.network.prefixlen)

    # Routes

    def add_route(self, name: str, network: str, proto: int) -> None:
        """A main-table route to `network` through the link, stamped with `proto`."""
        operation = f"add route {network}"
        parsed = _parse_network(name, operation, network)
        index = self._index(name, operation)
        # IPv4 device routes get link scope, as `ip route add NET dev IF` gives them.
        scope = RT_SCOPE_LINK if parsed.version == 4 else RT_SCOPE_UNIVERSE
        with self._request(name, operation):
            self._ipr.route(
                "add",
                **_route_key(parsed, index, proto),
                scope=scope,
                type=RTN_UNICAST,
            )

    def remove_route(self, name: str, network: str, proto: int) -> None:
        """Remove the route only if it goes through this link and carries `proto`."""
        operation = f"remove route {network}"
        parsed = _parse_network(name, operation, network)
        index = self._index(name, operation)
        hints = {errno.ESRCH: f"the link has no such route with protocol {proto}"}
        with self._request(name, operation, hints):
            self._ipr.route("del", **_route_key(parsed, index, proto), scope=RT_SCOPE_NOWHERE)

    # Helpers

    def _index(self, name: str, operation: str) -> int:
        with self._request(name, operation):
            msgs = list(self._ipr.link("get", ifname=name))
        if not msgs:
            raise LinkNotFound(name, operation, os.strerror(errno.ENODEV), errno.ENODEV)
        return int(msgs[0]["index"])

    @contextmanager
    def _request(
        self, interface: str | None, operation: str, hints: Mapping[int, str] | None = None
    ) -> Iterator[None]:
        try:
            yield
        except self._failures as exc:
            raise _error(interface, operation, exc, hints) from exc


def _code(exc: BaseException) -> int | None:
    """The errno of a pyroute2 NetlinkError (`code`) or of an OSError (`errno`)."""
    code = getattr(exc, "code", None)
    if code is None:
        code = getattr(exc, "errno", None)
    return abs(code) if isinstance(code, int) else None


def _reason(exc: BaseException) -> str:
    code = _code(exc)
    if code is None:
        return str(exc) or type(exc).__name__
    reason = os.strerror(code)
    # pyroute2 passes the kernel's extended ack text as the message when there is one.
    args: tuple[object, ...] = exc.args
    detail = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
    if detail and detail != reason:
        reason = f"{reason} ({detail})"
    return reason


def _error(
    interface: str | None,
    operation: str,
    exc: BaseException,
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


def _route_key(network: KernelNetwork, index: int, proto: int) -> dict[str, Any]:
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    return {
        "family": family,
        "dst": str(network.network_address),
        "dst_len": network.prefixlen,
        "oif": index,
        "table": RT_TABLE_MAIN,
        "proto": proto,
    }


def _attr(msg: Any, name: str) -> Any:
    # get_attr exists in 0.7 and 0.9; 0.7's msg.get(NAME) does not look at attributes.
    return msg.get_attr(name)


def _link_info(msg: Any, addresses: frozenset[str]) -> LinkInfo:
    linkinfo = _attr(msg, "IFLA_LINKINFO")
    kind = _attr(linkinfo, "IFLA_INFO_KIND") if linkinfo is not None else None
    alias = _attr(msg, "IFLA_IFALIAS")
    return LinkInfo(
        name=str(_attr(msg, "IFLA_IFNAME")),
        ifindex=int(msg["index"]),
        kind=str(kind) if kind else None,
        alias=str(alias) if alias else None,
        mtu=int(_attr(msg, "IFLA_MTU") or 0),
        up=bool(int(msg["flags"]) & IFF_UP),
        addresses=addresses,
    )


def _address_text(msg: Any) -> str | None:
    """ "ADDR/PREFIXLEN" of one address message, or None for link-local and odd messages."""
    family = msg["family"]
    if family == socket.AF_INET:
        # On a point-to-point address IFA_ADDRESS is the peer; IFA_LOCAL is ours.
        ip = _attr(msg, "IFA_LOCAL") or _attr(msg, "IFA_ADDRESS")
    elif family == socket.AF_INET6:
        ip = _attr(msg, "IFA_ADDRESS") or _attr(msg, "IFA_LOCAL")
    else:
        return None
    if not ip:
        return None
    address = ipaddress.ip_interface(f"{ip}/{msg['prefixlen']}")
    if address.version == 6 and address.ip.is_link_local:
        return None
    return str(address)


def _addresses_by_index(msgs: Iterable[Any]) -> dict[int, frozenset[str]]:
    grouped: dict[int, set[str]] = {}
    for msg in msgs:
        text = _address_text(msg)
        if text is not None:
            grouped.setdefault(int(msg["index"]), set()).add(text)
    return {index: frozenset(texts) for index, texts in grouped.items()}


def _route_network(msg: Any, proto: int) -> tuple[int, str] | None:
    """(outgoing link, destination) of a route message if it is ours to report, else None."""
    table = _attr(msg, "RTA_TABLE")
    if table is None:
        table = msg["table"]
    oif = _attr(msg, "RTA_OIF")
    if table != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST or msg["proto"] != proto or oif is None:
        return None
    family = msg["family"]
    dst = _attr(msg, "RTA_DST")
    if dst is None:  # a default route carries no RTA_DST
        dst = "0.0.0.0" if family == socket.AF_INET else "::"
    return oif, str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}"))


def kernel_has_wireguard() -> bool:
    """Whether the running kernel has WireGuard: loaded, built in, or installed as a module.

    Reads files only: it never loads a module (a netlink probe could, via autoloading).
    """
    release = os.uname().release
    module_dirs = [Path("/lib/modules") / release, Path("/usr/lib/modules") / release]
    return _wireguard_available(Path("/sys/module"), module_dirs, Path("/proc/config.gz"))


def _wireguard_available(sys_module: Path, module_dirs: Iterable[Path], config_gz: Path) -> bool:
    if (sys_module / "wireguard").exists():
        return True
    for directory in module_dirs:
        if _lists_module(directory / "modules.builtin", "wireguard"):
            return True
        if _lists_module(directory / "modules.dep", "wireguard"):
            return True
    return _config_builtin(config_gz, "CONFIG_WIREGUARD")


def _lists_module(path: Path, module: str) -> bool:
    """Whether modules.dep / modules.builtin names `module` (compressed or not)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        file_name = line.split(":", 1)[0].strip().rsplit("/", 1)[-1]
        if file_name.split(".ko", 1)[0] == module and ".ko" in file_name:
            return True
    return False


def _config_builtin(config_gz: Path, option: str) -> bool:
    """Whether the kernel's embedded config says `option=y` (for kernels without modules)."""
    try:
        with gzip.open(config_gz, "rt", encoding="utf-8", errors="replace") as config:
            return any(line.strip() == f"{option}=y" for line in config)
    except (OSError, EOFError):
        return False
