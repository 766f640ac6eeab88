"""bmx7_wg.net.netlink against a real kernel, each test in a fresh network namespace.

The test thread enters the namespace with setns(2) (namespaces belong to threads), so
Netlink(), which takes no namespace argument, works on that namespace only. What the
kernel holds is checked independently with `ip -n NS -j ...`, which reads the named
namespace whatever namespace this thread is in.

Names carry a random token: wireguard-go's control sockets live in one directory
shared by every namespace on the machine, and other test runs may be going on.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bmx7_wg.errors import ApplyError, BackendUnavailable
from bmx7_wg.net import rtnl
from bmx7_wg.net.netlink import (
    LinkInfo,
    LinkNotFound,
    Netlink,
    NetlinkOperationError,
    WireGuardUnsupported,
    _RouteKey,
)
from bmx7_wg.net.pyroute import PyrouteSocket
from bmx7_wg.wireguard.probe import kernel_has_wireguard

REPO = Path(__file__).resolve().parents[2]
PROTO = 77
CLONE_NEWNET = 0x40000000
WG_SOCKET_DIR = Path("/var/run/wireguard")

needs_root = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]
needs_wireguard_go = pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go")


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def ip(ns: str, *args: str) -> None:
    subprocess.run(["ip", "-n", ns, *args], check=True, capture_output=True, text=True)


def ip_json(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-n", ns, "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out) if out.strip() else []


def ip_addresses(ns: str, dev: str) -> dict[str, dict[str, Any]]:
    """ "local/prefixlen" -> the address entry, as `ip -j addr` reports it."""
    links = ip_json(ns, "addr", "show", "dev", dev)
    return {f"{a['local']}/{a['prefixlen']}": a for link in links for a in link["addr_info"]}


def ip_route_dsts(ns: str, *selector: str) -> set[str]:
    found: set[str] = set()
    for family in ("-4", "-6"):
        found |= {r["dst"] for r in ip_json(ns, family, "route", "show", *selector)}
    return found


@dataclass(frozen=True)
class Namespace:
    name: str
    token: str


@pytest.fixture
def netns() -> Iterator[Namespace]:
    token = secrets.token_hex(3)
    name = f"bwnl-{token}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(f"/run/netns/{name}", os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield Namespace(name, token)
        finally:
            _setns(original)
    finally:
        os.close(original)
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(params=["rtnl", "pyroute2"])
def nl(netns: Namespace, request: pytest.FixtureRequest) -> Iterator[Netlink]:
    """A Netlink on each rtnetlink socket: the standard library's (wireguard-go) and
    pyroute2's (the kernel backend); both must behave alike."""
    with Netlink(request.param) as netlink:
        yield netlink


@pytest.fixture
def veth(netns: Namespace) -> tuple[str, str]:
    a, b = f"va{netns.token}", f"vb{netns.token}"
    ip(netns.name, "link", "add", a, "type", "veth", "peer", "name", b)
    return a, b  # removed with the namespace


@dataclass(frozen=True)
class WireguardGo:
    name: str
    process: subprocess.Popen[bytes]


@pytest.fixture
def wireguard_go(netns: Namespace) -> Iterator[WireguardGo]:
    name = f"wg{netns.token}"
    env = dict(os.environ, WG_PROCESS_FOREGROUND="1", LOG_LEVEL="error")
    # `ip netns exec` execs wireguard-go, so this PID is the daemon's own.
    process = subprocess.Popen(["ip", "netns", "exec", netns.name, "wireguard-go", name], env=env)
    try:
        # wireguard-go sets its tun's MTU (1420) after the link appears and before it opens
        # its socket: a test that sets the MTU must not race it (as wggo.start waits too).
        _wait_for(lambda: (WG_SOCKET_DIR / f"{name}.sock").exists(), timeout=10)
        yield WireguardGo(name, process)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        # After a kill the daemon leaves its socket behind; the name is this test's own.
        (WG_SOCKET_DIR / f"{name}.sock").unlink(missing_ok=True)


# Root, in a namespace of the test's own.


class TestLinks:
    pytestmark = needs_root

    def test_links_sees_only_its_namespace(
        self, netns: Namespace, nl: Netlink, veth: tuple[str, str]
    ) -> None:
        a, b = veth
        links = nl.links()
        assert set(links) == {"lo", a, b}
        by_ip = {link["ifname"]: link["ifindex"] for link in ip_json(netns.name, "link", "show")}
        assert {name: info.ifindex for name, info in links.items()} == by_ip
        assert links[a].kind == "veth"
        assert links["lo"].kind is None
        assert links[a].alias is None
        assert links[a].mtu == 1500
        assert links[a].up is False
        assert links[a].addresses == frozenset()

    def test_alias_mtu_up(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, _ = veth
        nl.set_alias(a, "managed-by=bmx7-wg")
        nl.set_mtu(a, 1380)
        nl.set_up(a)
        info = nl.link(a)
        assert info is not None
        assert (info.alias, info.mtu, info.up) == ("managed-by=bmx7-wg", 1380, True)
        [shown] = ip_json(netns.name, "link", "show", "dev", a)
        assert shown["ifalias"] == "managed-by=bmx7-wg"
        assert shown["mtu"] == 1380
        assert "UP" in shown["flags"]
        assert nl.links()[a] == info

    def test_writes_touch_only_what_they_name(
        self, netns: Namespace, nl: Netlink, veth: tuple[str, str]
    ) -> None:
        """Each change is one RTM_NEWLINK carrying only its own attribute (and set_up only
        IFF_UP in ifi_change): the others stay as they were."""
        a, _ = veth
        ip(netns.name, "link", "set", a, "alias", "before", "mtu", "1400", "multicast", "off")
        nl.set_up(a)
        [shown] = ip_json(netns.name, "link", "show", "dev", a)
        assert (shown["ifalias"], shown["mtu"]) == ("before", 1400)
        assert "UP" in shown["flags"] and "MULTICAST" not in shown["flags"]
        nl.set_alias(a, "after")
        nl.set_mtu(a, 1300)
        [shown] = ip_json(netns.name, "link", "show", "dev", a)
        assert (shown["ifalias"], shown["mtu"]) == ("after", 1300)
        assert "UP" in shown["flags"] and "MULTICAST" not in shown["flags"]

    def test_disable_ipv6_autoconf(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        [shown] = ip_json(netns.name, "-d", "link", "show", "dev", a)
        assert shown["inet6_addr_gen_mode"] == "eui64"
        nl.disable_ipv6_autoconf(a)
        [shown] = ip_json(netns.name, "-d", "link", "show", "dev", a)
        assert shown["inet6_addr_gen_mode"] == "none"
        nl.set_up(a)
        nl.set_up(b)
        # The control: its peer, left as it was, gets fe80 when it goes up.
        _wait_for(lambda: any(k.startswith("fe80:") for k in ip_addresses(netns.name, b)))
        assert ip_addresses(netns.name, a) == {}

    def test_bad_mtu_is_a_clear_error(self, nl: Netlink, veth: tuple[str, str]) -> None:
        a, _ = veth
        with pytest.raises(NetlinkOperationError) as caught:
            nl.set_mtu(a, 10)
        assert str(caught.value) == f"{a}: cannot set MTU 10: Invalid argument"
        assert caught.value.errno == errno.EINVAL
        assert isinstance(caught.value, ApplyError)

    def test_delete(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        nl.delete(a)
        assert nl.link(a) is None
        assert nl.link(b) is None  # a veth's peer goes with it
        assert {link["ifname"] for link in ip_json(netns.name, "link", "show")} == {"lo"}

    def test_missing_link(self, netns: Namespace, nl: Netlink) -> None:
        name = f"nx{netns.token}"
        assert nl.link(name) is None
        with pytest.raises(LinkNotFound) as caught:
            nl.set_mtu(name, 1400)
        assert str(caught.value) == f"{name}: cannot set MTU 1400: No such device"
        calls: list[Callable[[], None]] = [
            lambda: nl.delete(name),
            lambda: nl.set_alias(name, "x"),
            lambda: nl.set_up(name),
            lambda: nl.disable_ipv6_autoconf(name),
            lambda: nl.add_address(name, "10.9.0.1/24"),
            lambda: nl.remove_address(name, "10.9.0.1/24"),
            lambda: nl.add_route(name, "10.9.1.0/24", PROTO),
            lambda: nl.remove_route(name, "10.9.1.0/24", PROTO),
        ]
        for call in calls:
            with pytest.raises(LinkNotFound, match=f"^{name}: cannot .*: No such device$"):
                call()
        with pytest.raises(LinkNotFound) as waited:
            nl.wait_for_link(name, timeout=0.2)
        assert str(waited.value) == f"{name}: cannot find link: it did not appear within 0.2 s"

    def test_create_wireguard_without_kernel_support(self, netns: Namespace, nl: Netlink) -> None:
        if kernel_has_wireguard():
            pytest.skip("this kernel has WireGuard; the kernel path is tested in the VM")
        name = f"wk{netns.token}"
        with pytest.raises(WireGuardUnsupported) as caught:
            nl.create_wireguard(name)
        assert str(caught.value) == (
            f"{name}: cannot create WireGuard link: "
            "the kernel has no WireGuard support (Operation not supported)"
        )
        assert isinstance(caught.value, ApplyError)
        assert isinstance(caught.value, BackendUnavailable)
        assert nl.link(name) is None


class TestAddresses:
    pytestmark = needs_root

    def test_add_list_remove(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        nl.set_up(a)
        nl.set_up(b)
        wanted = {"10.9.0.1/24", "fd77::1/128", "fd77:1::5/64"}
        for address in sorted(wanted):
            nl.add_address(a, address)
        info = nl.link(a)
        assert info is not None
        assert info.addresses == wanted
        assert nl.links()[a].addresses == wanted
        shown = ip_addresses(netns.name, a)
        assert wanted <= set(shown)
        assert shown["fd77::1/128"].get("nodad") is True
        assert shown["fd77:1::5/64"].get("nodad") is True
        assert shown["10.9.0.1/24"]["family"] == "inet"

        # IPv4 as `ip addr add` makes it: IFA_LOCAL, and IFA_ADDRESS the same (ip shows an
        # "address" only when it differs, as the peer of a point-to-point address).
        v4 = shown["10.9.0.1/24"]
        assert (v4["local"], v4["scope"]) == ("10.9.0.1", "global")
        assert "address" not in v4 and "nodad" not in v4
        assert shown["fd77::1/128"]["scope"] == "global"
        assert "tentative" not in shown["fd77:1::5/64"]  # nodad: usable at once

        nl.remove_address(a, "10.9.0.1/24")
        nl.remove_address(a, "fd77::1/128")
        info = nl.link(a)
        assert info is not None
        assert info.addresses == {"fd77:1::5/64"}
        assert "10.9.0.1/24" not in ip_addresses(netns.name, a)

    def test_link_local_is_left_out(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        nl.set_up(a)
        nl.set_up(b)
        _wait_for(lambda: any(k.startswith("fe80:") for k in ip_addresses(netns.name, a)))
        info = nl.link(a)
        assert info is not None
        assert info.addresses == frozenset()

    def test_point_to_point_address_reports_the_local_side(
        self, netns: Namespace, nl: Netlink, veth: tuple[str, str]
    ) -> None:
        a, _ = veth
        ip(netns.name, "addr", "add", "10.1.0.1", "peer", "10.1.0.2/32", "dev", a)
        info = nl.link(a)
        assert info is not None
        assert info.addresses == {"10.1.0.1/32"}

    def test_errors(self, nl: Netlink, veth: tuple[str, str]) -> None:
        a, _ = veth
        nl.add_address(a, "10.9.0.1/24")
        with pytest.raises(NetlinkOperationError) as caught:
            nl.add_address(a, "10.9.0.1/24")
        assert str(caught.value) == f"{a}: cannot add address 10.9.0.1/24: File exists"
        assert caught.value.errno == errno.EEXIST
        with pytest.raises(NetlinkOperationError) as caught:
            nl.remove_address(a, "10.9.9.9/24")
        assert str(caught.value) == (
            f"{a}: cannot remove address 10.9.9.9/24: "
            "the link has no such address (Cannot assign requested address)"
        )
        with pytest.raises(NetlinkOperationError, match="not an IP address"):
            nl.add_address(a, "10.9.0.300/24")

    def test_errors_ipv6(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, _ = veth
        nl.add_address(a, "fd77::1/64")
        with pytest.raises(NetlinkOperationError) as caught:
            nl.add_address(a, "fd77::1/64")
        assert str(caught.value) == f"{a}: cannot add address fd77::1/64: File exists"
        assert caught.value.errno == errno.EEXIST
        for missing in ("fd77::2/64", "fd77::1/128"):  # another address; another prefix length
            with pytest.raises(NetlinkOperationError) as caught:
                nl.remove_address(a, missing)
            assert str(caught.value) == (
                f"{a}: cannot remove address {missing}: "
                "the link has no such address (Cannot assign requested address)"
            )
            assert caught.value.errno == errno.EADDRNOTAVAIL
        assert set(ip_addresses(netns.name, a)) == {"fd77::1/64"}

    def test_same_address_on_two_links(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        """NLM_F_EXCL is per link: the other link may hold the same address, and removing
        it from one leaves the other's."""
        a, b = veth
        for link in (a, b):
            nl.add_address(link, "10.9.0.1/24")
            nl.add_address(link, "fd77::1/128")
        nl.remove_address(a, "10.9.0.1/24")
        nl.remove_address(a, "fd77::1/128")
        assert ip_addresses(netns.name, a) == {}
        assert set(ip_addresses(netns.name, b)) == {"10.9.0.1/24", "fd77::1/128"}


class TestRoutes:
    pytestmark = needs_root

    def test_routes_by_protocol(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        nl.set_up(a)
        nl.set_up(b)
        index_a = _index(nl, a)
        ours = {"10.9.1.0/24", "fd77::/16", "0.0.0.0/0", "::/0"}
        for network in sorted(ours):
            nl.add_route(a, network, PROTO)
        # Routes bmx7-wg must neither list nor remove: other protocol, other table, other link.
        ip(netns.name, "route", "add", "10.9.2.0/24", "dev", a, "proto", "static")
        ip(netns.name, "-6", "route", "add", "fd78::/16", "dev", a, "proto", "static")
        ip(netns.name, "route", "add", "10.9.3.0/24", "dev", a, "proto", str(PROTO), "table", "100")
        ip(netns.name, "route", "add", "10.9.4.0/24", "dev", b, "proto", str(PROTO))

        assert _routes(nl, index_a, PROTO) == ours
        assert _routes(nl, index_a, 4) == {"10.9.2.0/24", "fd78::/16"}
        assert _routes(nl, _index(nl, b), PROTO) == {"10.9.4.0/24"}
        shown = ip_route_dsts(netns.name, "dev", a, "proto", str(PROTO))
        assert shown == {"10.9.1.0/24", "fd77::/16", "default"}
        [v4] = ip_json(netns.name, "route", "show", "10.9.1.0/24")
        assert v4["scope"] == "link"  # what `ip route add NET dev IF` makes

        with pytest.raises(NetlinkOperationError) as caught:
            nl.remove_route(a, "10.9.2.0/24", PROTO)
        assert str(caught.value) == (
            f"{a}: cannot remove route 10.9.2.0/24: "
            f"the link has no such route with protocol {PROTO} (No such process)"
        )
        with pytest.raises(NetlinkOperationError):
            nl.remove_route(a, "fd78::/16", PROTO)
        with pytest.raises(NetlinkOperationError):
            nl.remove_route(b, "10.9.1.0/24", PROTO)

        for network in sorted(ours):
            nl.remove_route(a, network, PROTO)
        assert _routes(nl, index_a, PROTO) == frozenset()
        assert _routes(nl, index_a, 4) == {"10.9.2.0/24", "fd78::/16"}
        [other_table] = ip_json(netns.name, "route", "show", "table", "100")
        assert other_table["dst"] == "10.9.3.0/24"
        assert ip_route_dsts(netns.name, "dev", b, "proto", str(PROTO)) == {"10.9.4.0/24"}

    def test_route_as_ip_shows_it(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, _ = veth
        nl.set_up(a)
        for network in ("10.9.1.0/24", "0.0.0.0/0", "fd77::/16", "::/0"):
            nl.add_route(a, network, PROTO)
        shown = {
            family: ip_json(netns.name, family, "-d", "route", "show", "table", "all", "proto", str(PROTO))
            for family in ("-4", "-6")
        }
        # Main table, unicast; IPv4 with link scope (`ip route add NET dev IF`), IPv6 global.
        assert sorted((r["dst"], r["dev"], r["table"], r["type"], r["scope"]) for r in shown["-4"]) == [
            ("10.9.1.0/24", a, "main", "unicast", "link"),
            ("default", a, "main", "unicast", "link"),
        ]
        assert sorted((r["dst"], r["dev"], r["table"], r["type"], r["scope"]) for r in shown["-6"]) == [
            ("default", a, "main", "unicast", "global"),
            ("fd77::/16", a, "main", "unicast", "global"),
        ]
        main = ip_route_dsts(netns.name, "table", "main", "proto", str(PROTO))
        assert main == {"10.9.1.0/24", "fd77::/16", "default"}
        nl.remove_route(a, "0.0.0.0/0", PROTO)
        nl.remove_route(a, "::/0", PROTO)
        assert ip_route_dsts(netns.name, "table", "all", "proto", str(PROTO)) == {"10.9.1.0/24", "fd77::/16"}

    def test_table_beyond_eight_bits(self, netns: Namespace, veth: tuple[str, str]) -> None:
        """rtnl takes any table (Netlink uses only main): one beyond rtm_table's 8 bits goes
        in RTA_TABLE."""
        a, _ = veth
        ip(netns.name, "link", "set", a, "up")
        index = int(ip_json(netns.name, "link", "show", "dev", a)[0]["ifindex"])
        reader = rtnl.RouteSocket()
        try:
            key = _RouteKey(
                family=socket.AF_INET,
                table=1000,
                dst=bytes([10, 9, 5, 0]),
                dst_len=24,
                oif=index,
                protocol=PROTO,
            )
            reader.add_route(**key, scope=253, route_type=1)
            [shown] = ip_json(netns.name, "-4", "route", "show", "table", "1000")
            assert (shown["dst"], shown["dev"]) == ("10.9.5.0/24", a)
            assert ip_route_dsts(netns.name, "table", "main") == set()
            reader.delete_route(**key, scope=255)
            assert ip_json(netns.name, "-4", "route", "show", "table", "1000") == []
        finally:
            reader.close()

    def test_errors(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, _ = veth
        with pytest.raises(NetlinkOperationError) as caught:
            nl.add_route(a, "10.9.1.0/24", PROTO)  # the link is down
        assert str(caught.value) == f"{a}: cannot add route 10.9.1.0/24: Network is down"
        nl.set_up(a)
        nl.add_route(a, "10.9.1.0/24", PROTO)
        with pytest.raises(NetlinkOperationError) as caught:
            nl.add_route(a, "10.9.1.0/24", PROTO)
        assert str(caught.value) == f"{a}: cannot add route 10.9.1.0/24: File exists"
        assert caught.value.errno == errno.EEXIST
        with pytest.raises(NetlinkOperationError, match="host bits"):
            nl.add_route(a, "10.9.1.1/24", PROTO)

    def test_errors_ipv6(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        nl.set_up(a)
        nl.set_up(b)
        nl.add_route(a, "fd77::/16", PROTO)
        with pytest.raises(NetlinkOperationError) as caught:
            nl.add_route(a, "fd77::/16", PROTO)
        assert str(caught.value) == f"{a}: cannot add route fd77::/16: File exists"
        assert caught.value.errno == errno.EEXIST
        # Not there: another network; another link; another protocol.
        ip(netns.name, "-6", "route", "add", "fd78::/16", "dev", a, "proto", "static")
        for link, network in ((a, "fd79::/16"), (b, "fd77::/16"), (a, "fd78::/16")):
            with pytest.raises(NetlinkOperationError) as caught:
                nl.remove_route(link, network, PROTO)
            assert str(caught.value) == (
                f"{link}: cannot remove route {network}: "
                f"the link has no such route with protocol {PROTO} (No such process)"
            )
            assert caught.value.errno == errno.ESRCH
        assert ip_route_dsts(netns.name, "dev", a) >= {"fd77::/16", "fd78::/16"}


@needs_wireguard_go
class TestWireguardGo:
    pytestmark = needs_root

    def test_tun_link(
        self,
        netns: Namespace,
        nl: Netlink,
        veth: tuple[str, str],
        wireguard_go: WireguardGo,
    ) -> None:
        name = wireguard_go.name
        info = nl.wait_for_link(name)
        assert (info.kind, info.up, info.addresses) == ("tun", False, frozenset())

        nl.set_alias(name, "managed-by=bmx7-wg")
        nl.disable_ipv6_autoconf(name)
        nl.set_mtu(name, 1400)
        nl.set_up(name)
        nl.add_address(name, "10.9.0.1/24")
        nl.add_address(name, "fd77::1/128")
        nl.add_route(name, "fd77::/16", PROTO)
        nl.add_route(name, "10.9.1.0/24", PROTO)

        [shown] = ip_json(netns.name, "-d", "link", "show", "dev", name)
        assert shown["inet6_addr_gen_mode"] == "none"
        # The control: in this namespace a link that may autoconfigure gets fe80 at once.
        a, b = veth
        nl.set_up(a)
        nl.set_up(b)
        _wait_for(lambda: any(k.startswith("fe80:") for k in ip_addresses(netns.name, a)))
        assert not any(k.startswith("fe80:") for k in ip_addresses(netns.name, name))
        assert set(ip_addresses(netns.name, name)) == {"10.9.0.1/24", "fd77::1/128"}

        info = nl.wait_for_link(name)
        assert info.alias == "managed-by=bmx7-wg"
        assert (info.mtu, info.up) == (1400, True)
        assert info.addresses == {"10.9.0.1/24", "fd77::1/128"}
        assert _routes(nl, info.ifindex, PROTO) == {"fd77::/16", "10.9.1.0/24"}

        # Deleting the tun stops the daemon, which removes its socket.
        nl.delete(name)
        assert wireguard_go.process.wait(timeout=5) is not None
        assert nl.link(name) is None
        assert not (WG_SOCKET_DIR / f"{name}.sock").exists()


# The stdlib reader against pyroute2, on the same namespace in several states.


class TestReaderMatchesPyroute2:
    """Netlink reads through bmx7_wg.net.rtnl; pyroute2, which it replaced for reading, is the
    reference: the raw dumps must agree field by field, and Netlink's results must be
    what the pyroute2-based reading (kept below as `_pyroute2_*`) made of them."""

    pytestmark = needs_root

    def test_fresh_veth(self, nl: Netlink, veth: tuple[str, str]) -> None:
        _assert_matches_pyroute2(nl, veth)

    def test_addresses(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        ip(netns.name, "link", "set", a, "up")
        ip(netns.name, "link", "set", b, "up")
        ip(netns.name, "addr", "add", "10.9.0.1/24", "dev", a)
        ip(netns.name, "addr", "add", "10.1.0.1", "peer", "10.1.0.2/32", "dev", a)  # point-to-point
        ip(netns.name, "addr", "add", "192.168.7.9/32", "dev", b)
        ip(netns.name, "-6", "addr", "add", "fd77::1/128", "dev", a, "nodad")
        ip(netns.name, "-6", "addr", "add", "fd77:1:0:0:1:0:0:5/64", "dev", a, "nodad")
        ip(netns.name, "-6", "addr", "add", "::ffff:10.9.9.9/128", "dev", b, "nodad")  # embedded IPv4
        ip(netns.name, "-6", "addr", "add", "fe80::77/64", "dev", b, "nodad")  # link-local, by hand
        _wait_for(lambda: any(k.startswith("fe80:") for k in ip_addresses(netns.name, a)))
        links = _assert_matches_pyroute2(nl, veth)
        assert links[a].addresses == {"10.9.0.1/24", "10.1.0.1/32", "fd77::1/128", "fd77:1::1:0:0:5/64"}
        assert links[b].addresses == {"192.168.7.9/32", "::ffff:a09:909/128"}

    def test_alias_mtu_down_up(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        ip(netns.name, "link", "set", a, "alias", "managed-by=bmx7-wg", "mtu", "1380", "up")
        ip(netns.name, "link", "set", b, "alias", "ünïcode alias", "mtu", "9000")
        links = _assert_matches_pyroute2(nl, veth)
        assert (links[a].alias, links[a].mtu, links[a].up) == ("managed-by=bmx7-wg", 1380, True)
        assert (links[b].alias, links[b].mtu, links[b].up) == ("ünïcode alias", 9000, False)
        ip(netns.name, "link", "set", a, "down")
        ip(netns.name, "link", "set", "lo", "up")
        ip(netns.name, "link", "set", b, "alias", "")  # an empty alias reads as none
        links = _assert_matches_pyroute2(nl, veth)
        assert (links[a].up, links["lo"].up, links[b].alias) == (False, True, None)

    def test_routes(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        a, b = veth
        ip(netns.name, "link", "set", a, "up")
        ip(netns.name, "link", "set", b, "up")
        ip(netns.name, "addr", "add", "10.9.0.1/24", "dev", a)
        ip(netns.name, "-6", "addr", "add", "fd77::1/64", "dev", a, "nodad")
        for route in [
            ["10.9.1.0/24", "dev", a, "proto", str(PROTO)],
            ["default", "dev", a, "proto", str(PROTO)],
            ["10.9.2.0/24", "via", "10.9.0.2", "proto", str(PROTO)],  # a gateway route
            ["10.9.3.0/24", "dev", b, "proto", "static"],
            ["10.9.4.0/24", "dev", a, "proto", str(PROTO), "table", "100"],
            ["10.9.5.0/24", "dev", a, "proto", str(PROTO), "table", "1000"],  # beyond rtm_table's 8 bits
            ["blackhole", "10.9.6.0/24", "proto", str(PROTO)],
            ["unreachable", "10.9.7.0/24", "proto", str(PROTO)],
            ["prohibit", "10.9.8.0/24", "proto", str(PROTO)],
        ]:
            ip(netns.name, "route", "add", *route)
        for route in [
            ["fd78::/16", "dev", a, "proto", str(PROTO)],
            ["default", "dev", b, "proto", str(PROTO)],
            ["fd79::/16", "dev", a, "proto", "boot"],
            ["fd7a::/16", "dev", a, "proto", str(PROTO), "table", "100"],
            ["blackhole", "fd7b::/16", "proto", str(PROTO)],
            ["unreachable", "fd7c::/16", "proto", str(PROTO)],
            ["::ffff:0:0/96", "dev", a, "proto", str(PROTO)],  # printed with an embedded IPv4
        ]:
            ip(netns.name, "-6", "route", "add", *route)
        _assert_matches_pyroute2(nl, veth)
        index_a, index_b = _index(nl, a), _index(nl, b)
        assert nl.link_routes(PROTO).ours == {
            index_a: {"10.9.1.0/24", "0.0.0.0/0", "10.9.2.0/24", "fd78::/16", "::ffff:0:0/96"},
            index_b: {"::/0"},
        }

    def test_thousands_of_routes(self, netns: Namespace, nl: Netlink, veth: tuple[str, str]) -> None:
        """More than one datagram of dump: the reader must follow the multipart reply."""
        a, b = veth
        ip(netns.name, "link", "set", a, "up")
        ip(netns.name, "link", "set", b, "up")
        v4 = {f"10.{100 + i // 250}.{i % 250}.0/24" for i in range(2000)}
        v6 = {str(ipaddress.ip_network(f"fd77:{i:x}::/32")) for i in range(500)}
        batch = [f"route add {n} dev {a} proto {PROTO}" for n in sorted(v4)]
        batch += [f"route add {n} dev {b} proto {PROTO}" for n in sorted(v6)]
        subprocess.run(
            ["ip", "-n", netns.name, "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True
        )
        assert len(rtnl.RouteSocket().routes()) > 2500
        _assert_matches_pyroute2(nl, veth)
        assert nl.link_routes(PROTO).ours == {_index(nl, a): v4, _index(nl, b): v6}

    @needs_wireguard_go
    def test_wireguard_go_tun(
        self, netns: Namespace, nl: Netlink, veth: tuple[str, str], wireguard_go: WireguardGo
    ) -> None:
        name = wireguard_go.name
        nl.wait_for_link(name)
        ip(netns.name, "link", "set", name, "alias", "managed-by=bmx7-wg", "mtu", "1420", "up")
        ip(netns.name, "addr", "add", "10.9.0.1/24", "dev", name)
        ip(netns.name, "route", "add", "10.9.1.0/24", "dev", name, "proto", str(PROTO))
        links = _assert_matches_pyroute2(nl, (*veth, name))
        assert (links[name].kind, links[name].mtu, links[name].up) == ("tun", 1420, True)
        assert _routes(nl, links[name].ifindex, PROTO) == {"10.9.1.0/24"}

    def test_no_such_link_and_bad_names(self, netns: Namespace, nl: Netlink) -> None:
        assert nl.link(f"nx{netns.token}") is None
        assert nl.link("") is None
        too_long = "x" * 20
        with pytest.raises(NetlinkOperationError) as caught:
            nl.link(too_long)
        assert str(caught.value) == f"{too_long}: cannot read link: Numerical result out of range"

    def test_a_dump_given_up_half_way(
        self, netns: Namespace, veth: tuple[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The kernel refuses a new dump while one runs on the socket: after a dump is given
        up (here: its parser fails on the first route), the next one must still work."""
        a, _ = veth
        ip(netns.name, "link", "set", a, "up")
        batch = [f"route add 10.{100 + i // 250}.{i % 250}.0/24 dev {a}" for i in range(1000)]
        subprocess.run(
            ["ip", "-n", netns.name, "-batch", "-"], input="\n".join(batch) + "\n", text=True, check=True
        )
        reader = rtnl.RouteSocket()
        try:

            def fail(data: bytes, start: int, end: int) -> rtnl.Route:
                raise KeyboardInterrupt

            with monkeypatch.context() as patch:
                patch.setattr(rtnl, "_parse_route", fail)
                with pytest.raises(KeyboardInterrupt):
                    reader.routes()
            assert len(reader.routes()) >= 1000
            assert {link.name for link in reader.links()} >= {"lo", a}
        finally:
            reader.close()

    def test_closed(self, netns: Namespace, veth: tuple[str, str]) -> None:
        """A closed Netlink neither reads nor writes (nor opens a socket to do so)."""
        a, _ = veth
        nl = Netlink()
        assert a in nl.links()
        nl.set_up(a)
        nl.close()
        nl.close()
        with pytest.raises(NetlinkOperationError, match=r"^cannot list links: Bad file descriptor$"):
            nl.links()
        with pytest.raises(NetlinkOperationError, match=f"^{a}: cannot set alias: Bad file descriptor$"):
            nl.set_alias(a, "x")

    def test_read_failures_name_the_operation(
        self, nl: Netlink, veth: tuple[str, str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def refuse(*args: object) -> None:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        for method in ("links", "addresses", "routes", "link"):
            monkeypatch.setattr(nl._rtnl, method, refuse)
        expected = [
            (nl.links, "cannot list links: Operation not permitted"),
            (lambda: nl.link_routes(PROTO).ours, "cannot list routes: Operation not permitted"),
            (lambda: nl.link(veth[0]), f"{veth[0]}: cannot read link: Operation not permitted"),
        ]
        for call, message in expected:
            with pytest.raises(NetlinkOperationError) as caught:
                call()
            assert str(caught.value) == message
            assert caught.value.errno == errno.EPERM


class TestWithoutPyroute2:
    pytestmark = needs_root

    def test_a_full_cycle_never_imports_pyroute2(self, netns: Namespace, veth: tuple[str, str]) -> None:
        """Importing pyroute2 costs ~100 ms, as much as `wg syncconf` needs for a whole
        change: neither reading nor any write of Netlink may import it. Here it cannot be
        imported at all, and the cycle must still run."""
        a, _ = veth
        code = (
            "import importlib.abc, json, sys\n"
            "class NoPyroute2(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.partition('.')[0] == 'pyroute2':\n"
            "            raise ImportError('pyroute2 imported')\n"
            "        return None\n"
            "sys.meta_path.insert(0, NoPyroute2())\n"
            "from bmx7_wg.net.netlink import Netlink\n"
            "name = sys.argv[1]\n"
            "seen = {}\n"
            "with Netlink() as nl:\n"
            "    nl.links()\n"
            f"    nl.link_routes({PROTO}).ours\n"
            "    nl.set_alias(name, 'managed-by=bmx7-wg')\n"
            "    nl.disable_ipv6_autoconf(name)\n"
            "    nl.set_mtu(name, 1420)\n"
            "    nl.set_up(name)\n"
            "    for address in ('10.9.0.1/24', 'fd77::1/128'):\n"
            "        nl.add_address(name, address)\n"
            "    for network in ('10.9.1.0/24', 'fd78::/16'):\n"
            f"        nl.add_route(name, network, {PROTO})\n"
            "    info = nl.link(name)\n"
            "    seen['written'] = [info.alias, info.mtu, info.up, sorted(info.addresses),\n"
            f"        sorted(nl.link_routes({PROTO}).ours[info.ifindex])]\n"
            f"    nl.remove_route(name, '10.9.1.0/24', {PROTO})\n"
            f"    nl.remove_route(name, 'fd78::/16', {PROTO})\n"
            "    nl.remove_address(name, '10.9.0.1/24')\n"
            "    nl.remove_address(name, 'fd77::1/128')\n"
            "    info = nl.link(name)\n"
            f"    seen['removed'] = [sorted(info.addresses),\n"
            f"        sorted(nl.link_routes({PROTO}).ours.get(info.ifindex, []))]\n"
            "    nl.delete(name)\n"
            "    seen['deleted'] = nl.link(name) is None\n"
            "seen['pyroute2'] = sorted(m for m in sys.modules if m.partition('.')[0] == 'pyroute2')\n"
            "print(json.dumps(seen))\n"
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        result = subprocess.run(
            ["ip", "netns", "exec", netns.name, sys.executable, "-c", code, a],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "written": [
                "managed-by=bmx7-wg",
                1420,
                True,
                ["10.9.0.1/24", "fd77::1/128"],
                ["10.9.1.0/24", "fd78::/16"],
            ],
            "removed": [[], []],
            "deleted": True,
            "pyroute2": [],
        }
        assert {link["ifname"] for link in ip_json(netns.name, "link", "show")} == {"lo"}


def _assert_matches_pyroute2(nl: Netlink, names: tuple[str, ...]) -> dict[str, LinkInfo]:
    """The reader's dumps equal pyroute2's, the kernel backend's socket (net/pyroute.py)
    reads the same values, and Netlink reads what pyroute2 made of them."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        reader = rtnl.RouteSocket()
        library = PyrouteSocket()
        try:
            assert _raw_links(reader) == _pyroute2_raw_links(ipr) == _raw_links(library)
            assert _raw_addresses(reader) == _pyroute2_raw_addresses(ipr) == _raw_addresses(library)
            assert _raw_routes(reader) == _pyroute2_raw_routes(ipr) == _raw_routes(library)
        finally:
            reader.close()
            library.close()
        links = nl.links()
        assert links == _pyroute2_links(ipr)
        assert set(names) <= set(links)
        for name in names:
            assert nl.link(name) == links[name]
        for proto in (PROTO, 2, 3, 4):  # 2 kernel, 3 boot, 4 static
            assert nl.link_routes(proto).ours == _pyroute2_routes_by_link(ipr, proto)
    return links


RawLink = tuple[int, str, str | None, str | None, int, int]


def _raw_links(reader: rtnl.RouteSocket | PyrouteSocket) -> list[RawLink]:
    return sorted(((k.index, k.name, k.kind, k.alias, k.mtu, k.flags) for k in reader.links()), key=repr)


def _pyroute2_raw_links(ipr: Any) -> list[RawLink]:
    found = []
    for msg in ipr.link("dump"):
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        alias = msg.get_attr("IFLA_IFALIAS") or None
        mtu = msg.get_attr("IFLA_MTU")
        found.append((msg["index"], msg.get_attr("IFLA_IFNAME"), kind, alias, mtu, msg["flags"]))
    return sorted(found, key=repr)


def _ntop(family: int, packed: bytes | None) -> str | None:
    return socket.inet_ntop(family, packed) if packed is not None else None


RawAddress = tuple[int, int, int, str | None, str | None]


def _raw_addresses(reader: rtnl.RouteSocket | PyrouteSocket) -> list[RawAddress]:
    return sorted(
        (
            (a.family, a.index, a.prefixlen, _ntop(a.family, a.address), _ntop(a.family, a.local))
            for a in reader.addresses()
        ),
        key=repr,
    )


def _pyroute2_raw_addresses(ipr: Any) -> list[RawAddress]:
    return sorted(
        (
            (m["family"], m["index"], m["prefixlen"], m.get_attr("IFA_ADDRESS"), m.get_attr("IFA_LOCAL"))
            for m in ipr.addr("dump")
        ),
        key=repr,
    )


RawRoute = tuple[int, int, int, int, int | None, str | None, int]


def _raw_routes(reader: rtnl.RouteSocket | PyrouteSocket) -> list[RawRoute]:
    # AF_UNSPEC may hold other families (multicast, MPLS); pyroute2 is asked for these two.
    return sorted(
        (
            (r.family, r.table, r.type, r.protocol, r.oif, _ntop(r.family, r.dst), r.dst_len)
            for r in reader.routes()
            if r.family in (socket.AF_INET, socket.AF_INET6)
        ),
        key=repr,
    )


def _pyroute2_raw_routes(ipr: Any) -> list[RawRoute]:
    found = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for m in ipr.route("dump", family=family):
            table = m.get_attr("RTA_TABLE")
            table = m["table"] if table is None else table
            oif, dst = m.get_attr("RTA_OIF"), m.get_attr("RTA_DST")
            found.append((m["family"], table, m["type"], m["proto"], oif, dst, m["dst_len"]))
    return sorted(found, key=repr)


# What Netlink read through pyroute2 before bmx7_wg.net.rtnl: the reference for its results.


def _pyroute2_links(ipr: Any) -> dict[str, LinkInfo]:
    by_index: dict[int, set[str]] = {}
    for msg in ipr.addr("dump"):
        family = msg["family"]
        if family == socket.AF_INET:
            address = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
        else:
            address = msg.get_attr("IFA_ADDRESS") or msg.get_attr("IFA_LOCAL")
        parsed = ipaddress.ip_interface(f"{address}/{msg['prefixlen']}")
        if not (parsed.version == 6 and parsed.ip.is_link_local):
            by_index.setdefault(msg["index"], set()).add(str(parsed))
    links = {}
    for msg in ipr.link("dump"):
        info = msg.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        alias = msg.get_attr("IFLA_IFALIAS")
        name = str(msg.get_attr("IFLA_IFNAME"))
        links[name] = LinkInfo(
            name=name,
            ifindex=int(msg["index"]),
            kind=str(kind) if kind else None,
            alias=str(alias) if alias else None,
            mtu=int(msg.get_attr("IFLA_MTU") or 0),
            up=bool(int(msg["flags"]) & 1),
            addresses=frozenset(by_index.get(msg["index"], set())),
        )
    return links


def _pyroute2_routes_by_link(ipr: Any, proto: int) -> dict[int, frozenset[str]]:
    found: dict[int, set[str]] = {}
    for family in (socket.AF_INET, socket.AF_INET6):
        for msg in ipr.route("dump", family=family):
            table = msg.get_attr("RTA_TABLE")
            table = msg["table"] if table is None else table
            oif = msg.get_attr("RTA_OIF")
            if table != 254 or msg["type"] != 1 or msg["proto"] != proto or oif is None:
                continue
            dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
            found.setdefault(oif, set()).add(str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}")))
    return {oif: frozenset(networks) for oif, networks in found.items()}


def _routes(nl: Netlink, ifindex: int, proto: int) -> frozenset[str]:
    """Main-table unicast routes out of one link with this rtm_protocol, both families."""
    return nl.link_routes(proto).ours.get(ifindex, frozenset())


def _index(nl: Netlink, name: str) -> int:
    info = nl.link(name)
    assert info is not None
    return info.ifindex


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
