"""bmx7_wg.netlink against a real kernel, each test in a fresh network namespace.

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
import gzip
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bmx7_wg.errors import ApplyError, BackendUnavailable
from bmx7_wg.netlink import (
    LinkNotFound,
    Netlink,
    NetlinkOperationError,
    WireGuardUnsupported,
    _wireguard_available,
    kernel_has_wireguard,
)

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


@pytest.fixture
def nl(netns: Namespace) -> Iterator[Netlink]:
    with Netlink() as netlink:
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


# Not root: the cost of importing the module, and the kernel-support probe on fake trees.


def test_import_does_not_load_pyroute2() -> None:
    code = (
        "import sys\n"
        "import bmx7_wg.netlink\n"
        "assert 'pyroute2' not in sys.modules, 'pyroute2 imported at import time'\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def _module_tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    sys_module = tmp_path / "sys_module"
    sys_module.mkdir()
    modules = tmp_path / "modules"
    modules.mkdir()
    return sys_module, modules, tmp_path / "config.gz"


def test_wireguard_probe_finds_nothing(tmp_path: Path) -> None:
    sys_module, modules, config = _module_tree(tmp_path)
    (modules / "modules.dep").write_text(
        "kernel/drivers/net/tun.ko.xz:\nkernel/drivers/net/wireguardx.ko.xz:\n"
    )
    (modules / "modules.builtin").write_text("kernel/net/ipv6/ipv6.ko\n")
    with gzip.open(config, "wt") as f:
        f.write("CONFIG_TUN=y\nCONFIG_WIREGUARD=m\n")  # =m but not installed: unusable
    assert not _wireguard_available(sys_module, [modules, tmp_path / "missing"], config)


@pytest.mark.parametrize(
    "where",
    ["loaded", "dep", "dep-zst", "builtin", "config"],
)
def test_wireguard_probe_finds_it(tmp_path: Path, where: str) -> None:
    sys_module, modules, config = _module_tree(tmp_path)
    if where == "loaded":
        (sys_module / "wireguard").mkdir()
    elif where == "dep":
        (modules / "modules.dep").write_text(
            "kernel/drivers/net/wireguard/wireguard.ko.xz: kernel/lib/crypto/libcurve25519.ko.xz\n"
        )
    elif where == "dep-zst":
        (modules / "modules.dep").write_text("kernel/drivers/net/wireguard/wireguard.ko.zst:\n")
    elif where == "builtin":
        (modules / "modules.builtin").write_text("kernel/drivers/net/wireguard/wireguard.ko\n")
    else:
        with gzip.open(config, "wt") as f:
            f.write("CONFIG_WIREGUARD=y\n")
    assert _wireguard_available(sys_module, [tmp_path / "missing", modules], config)


def test_kernel_has_wireguard_is_a_plain_bool() -> None:
    assert isinstance(kernel_has_wireguard(), bool)


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
        started = time.monotonic()
        with pytest.raises(LinkNotFound) as waited:
            nl.wait_for_link(name, timeout=0.2)
        assert time.monotonic() - started < 1.0
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

        assert nl.routes(index_a, PROTO) == ours
        assert nl.routes(index_a, 4) == {"10.9.2.0/24", "fd78::/16"}
        assert nl.routes(_index(nl, b), PROTO) == {"10.9.4.0/24"}
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
        assert nl.routes(index_a, PROTO) == frozenset()
        assert nl.routes(index_a, 4) == {"10.9.2.0/24", "fd78::/16"}
        [other_table] = ip_json(netns.name, "route", "show", "table", "100")
        assert other_table["dst"] == "10.9.3.0/24"
        assert ip_route_dsts(netns.name, "dev", b, "proto", str(PROTO)) == {"10.9.4.0/24"}

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
        with pytest.raises(NetlinkOperationError, match="host bits"):
            nl.add_route(a, "10.9.1.1/24", PROTO)


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
        assert nl.routes(info.ifindex, PROTO) == {"fd77::/16", "10.9.1.0/24"}

        # Deleting the tun stops the daemon, which removes its socket.
        nl.delete(name)
        assert wireguard_go.process.wait(timeout=5) is not None
        assert nl.link(name) is None
        assert not (WG_SOCKET_DIR / f"{name}.sock").exists()


def _index(nl: Netlink, name: str) -> int:
    info = nl.link(name)
    assert info is not None
    return info.ifindex


def _wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
