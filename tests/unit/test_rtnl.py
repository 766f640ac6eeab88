"""rtnetlink without a kernel: bmx7_wg.net.rtnl's messages, checked against pyroute2's own
message classes, its reply handling on a scripted socket, and netlink.py's kernel probe on
fake trees. (tests/integration/test_netlink.py has the same code against a real kernel.)"""

from __future__ import annotations

import errno
import gzip
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from bmx7_wg.net import rtnl
from bmx7_wg.wireguard.probe import _wireguard_available, kernel_has_wireguard

REPO = Path(__file__).resolve().parents[2]


def encoded(msg: Any, kind: int, seq: int = 0, flags: int = 0) -> bytes:
    msg["header"]["type"] = kind
    msg["header"]["sequence_number"] = seq
    msg["header"]["flags"] = flags
    msg.encode()
    return bytes(msg.data)


def decoded(cls: Any, data: bytes) -> Any:
    msg = cls(data)
    msg.decode()
    return msg


# --- messages, both ways ---------------------------------------------------------------


def test_parse_link_as_pyroute2_writes_it() -> None:
    msg = ifinfmsg()
    msg["index"], msg["flags"] = 7, 0x1043
    msg["attrs"] = [
        ("IFLA_IFNAME", "wg0"),
        ("IFLA_MTU", 1420),
        ("IFLA_IFALIAS", "managed-by=bmx7-wg"),
        ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "wireguard")]}),
    ]
    data = encoded(msg, rtnl.RTM_NEWLINK)
    assert rtnl._parse_link(data, 16, len(data)) == rtnl.Link(
        index=7, name="wg0", kind="wireguard", alias="managed-by=bmx7-wg", mtu=1420, flags=0x1043
    )
    bare = ifinfmsg()
    bare["index"] = 1
    bare["attrs"] = [("IFLA_IFNAME", "lo")]
    data = encoded(bare, rtnl.RTM_NEWLINK)
    assert rtnl._parse_link(data, 16, len(data)) == rtnl.Link(1, "lo", None, None, 0, 0)


def test_parse_address_as_pyroute2_writes_it() -> None:
    msg = ifaddrmsg()
    msg["family"], msg["prefixlen"], msg["index"] = socket.AF_INET, 24, 7
    msg["attrs"] = [("IFA_ADDRESS", "10.9.0.2"), ("IFA_LOCAL", "10.9.0.1")]
    data = encoded(msg, rtnl.RTM_NEWADDR)
    assert rtnl._parse_address(data, 16, len(data)) == rtnl.Address(
        socket.AF_INET, 7, 24, socket.inet_aton("10.9.0.2"), socket.inet_aton("10.9.0.1")
    )


def test_parse_route_takes_the_table_beyond_eight_bits() -> None:
    msg = rtmsg()
    msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["type"] = socket.AF_INET6, 16, 252, 77, 1
    msg["attrs"] = [("RTA_TABLE", 1000), ("RTA_DST", "fd77::"), ("RTA_OIF", 7)]
    data = encoded(msg, rtnl.RTM_NEWROUTE)
    assert rtnl._parse_route(data, 16, len(data)) == rtnl.Route(
        family=socket.AF_INET6, table=1000, type=1, protocol=77, oif=7,
        dst=socket.inet_pton(socket.AF_INET6, "fd77::"), dst_len=16,
    )


def request(kind: int, flags: int, body: bytes) -> bytes:
    return rtnl._NLMSGHDR.pack(16 + len(body), kind, flags, 1, 0) + body


def test_route_request_as_pyroute2_reads_it() -> None:
    body = rtnl._route_request(
        socket.AF_INET, 1000, socket.inet_aton("10.9.1.0"), 24, 7, 77, 253, 1
    )
    msg = decoded(rtmsg, request(rtnl.RTM_NEWROUTE, 0, body))
    assert (msg["family"], msg["dst_len"], msg["table"], msg["proto"], msg["scope"], msg["type"]) == (
        socket.AF_INET, 24, rtnl.RT_TABLE_COMPAT, 77, 253, 1
    )
    assert msg.get_attr("RTA_TABLE") == 1000
    assert msg.get_attr("RTA_DST") == "10.9.1.0"
    assert msg.get_attr("RTA_OIF") == 7


@pytest.mark.parametrize(
    ("family", "address", "flags", "attrs"),
    [
        # IPv4: IFA_LOCAL and IFA_ADDRESS both, as `ip addr add` sends them.
        (socket.AF_INET, "10.9.0.1", 0, {"IFA_LOCAL": "10.9.0.1", "IFA_ADDRESS": "10.9.0.1"}),
        # nodad in the header's 8 bits and in IFA_FLAGS.
        (socket.AF_INET6, "fd77::1", 0x02, {"IFA_ADDRESS": "fd77::1", "IFA_FLAGS": 0x02}),
    ],
)
def test_address_request_as_pyroute2_reads_it(
    family: int, address: str, flags: int, attrs: dict[str, Any]
) -> None:
    body = rtnl._address_request(7, family, socket.inet_pton(family, address), 24, flags)
    msg = decoded(ifaddrmsg, request(rtnl.RTM_NEWADDR, 0, body))
    assert (msg["family"], msg["prefixlen"], msg["flags"], msg["index"]) == (family, 24, flags, 7)
    assert {name: value for name, value in msg["attrs"]} == attrs


def test_attributes_are_padded_and_read_back() -> None:
    data = rtnl._attr(3, b"wg0\0") + rtnl._attr(20, b"abcde") + rtnl._attr(4, struct.pack("=I", 1420))
    assert len(data) % 4 == 0
    assert rtnl._attrs(data, 0, len(data)) == {3: b"wg0\0", 20: b"abcde", 4: struct.pack("=I", 1420)}
    # A truncated attribute ends the list; it is never read past the message.
    assert rtnl._attrs(data[:-2], 0, len(data) - 2) == {3: b"wg0\0", 20: b"abcde"}
    assert rtnl._string(b"\xff\xfeif\0") == "\ufffd\ufffdif"  # not UTF-8, still printable
    assert rtnl._string(b"\0") is None and rtnl._u32(b"\1\0") is None


# --- replies, on a scripted socket -------------------------------------------------------


class ScriptedSocket:
    """Answers each request with the datagrams a function makes of its sequence number."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.pending: list[bytes] = []
        self.sent: list[bytes] = []
        self.closed = False

    def sendto(self, data: bytes, address: object) -> int:
        self.sent.append(data)
        seq = rtnl._NLMSGHDR.unpack_from(data)[3]
        self.pending += self.answers.pop(0)(seq)
        return len(data)

    def recv_into(self, buffer: bytearray, size: int, flags: int) -> int:
        datagram = self.pending.pop(0)
        buffer[: len(datagram)] = datagram[: len(buffer)]
        return len(datagram)

    def close(self) -> None:
        self.closed = True


def scripted(*answers: Any) -> tuple[rtnl.RouteSocket, ScriptedSocket]:
    rs = rtnl.RouteSocket.__new__(rtnl.RouteSocket)
    rs._closed, rs._buffer, rs._seq = False, bytearray(rtnl.RECV_BUFFER), 0
    fake = ScriptedSocket(*answers)
    rs._sock = fake  # type: ignore[assignment]
    return rs, fake


def link_message(seq: int, index: int, name: str, flags: int = rtnl.NLM_F_MULTI) -> bytes:
    msg = ifinfmsg()
    msg["index"] = index
    msg["attrs"] = [("IFLA_IFNAME", name)]
    return encoded(msg, rtnl.RTM_NEWLINK, seq, flags)


def done(seq: int, code: int = 0, kind: int = rtnl.NLMSG_DONE, flags: int = rtnl.NLM_F_MULTI) -> bytes:
    return rtnl._NLMSGHDR.pack(20, kind, flags, seq, 0) + struct.pack("=i", -code)


def test_dump_over_several_datagrams_skips_other_answers() -> None:
    rs, fake = scripted(
        lambda seq: [
            link_message(seq - 1, 99, "stale") + link_message(seq, 1, "lo"),  # a late answer
            link_message(seq, 2, "wg0") + done(seq),
        ]
    )
    assert [link.name for link in rs.links()] == ["lo", "wg0"]
    kind, flags = rtnl._NLMSGHDR.unpack_from(fake.sent[0])[1:3]
    assert (kind, flags) == (rtnl.RTM_GETLINK, rtnl.NLM_F_REQUEST | rtnl.NLM_F_DUMP)


def test_interrupted_dump_is_asked_again() -> None:
    rs, fake = scripted(
        lambda seq: [link_message(seq, 1, "lo", rtnl.NLM_F_MULTI | rtnl.NLM_F_DUMP_INTR) + done(seq)],
        lambda seq: [link_message(seq, 1, "lo") + link_message(seq, 2, "wg0") + done(seq)],
    )
    assert [link.name for link in rs.links()] == ["lo", "wg0"]
    assert len(fake.sent) == 2


def test_change_waits_for_its_acknowledgement_and_raises_its_error() -> None:
    rs, fake = scripted(
        lambda seq: [done(seq, 0, rtnl.NLMSG_ERROR, 0)],
        lambda seq: [done(seq, errno.EEXIST, rtnl.NLMSG_ERROR, 0)],
    )
    rs.set_link(7, mtu=1420)
    with pytest.raises(OSError) as info:
        rs.add_address(7, socket.AF_INET, socket.inet_aton("10.9.0.1"), 24)
    assert info.value.errno == errno.EEXIST
    assert not fake.closed  # the kernel answered: the socket is in order
    kind, flags = rtnl._NLMSGHDR.unpack_from(fake.sent[1])[1:3]
    assert kind == rtnl.RTM_NEWADDR
    assert flags == rtnl.NLM_F_REQUEST | rtnl.NLM_F_ACK | rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL


def test_missing_link_is_none() -> None:
    rs, _ = scripted(lambda seq: [done(seq, errno.ENODEV, rtnl.NLMSG_ERROR, 0)])
    assert rs.link("nope0") is None


def test_malformed_reply_drops_the_socket() -> None:
    rs, fake = scripted(lambda seq: [rtnl._NLMSGHDR.pack(400, rtnl.RTM_NEWLINK, 0, seq, 0) + b"\0" * 8])
    with pytest.raises(OSError) as info:
        rs.links()
    assert info.value.errno == errno.EBADMSG
    assert fake.closed and rs._sock is None  # the next request opens a new socket


def test_closed_socket_refuses_requests() -> None:
    rs, fake = scripted()
    rs.close()
    assert fake.closed
    with pytest.raises(OSError) as info:
        rs.links()
    assert info.value.errno == errno.EBADF


# --- no kernel needed: the import and the kernel-support probe ----------------------------


def test_import_does_not_load_pyroute2() -> None:
    code = (
        "import sys\n"
        "import bmx7_wg.net.netlink\n"
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


@pytest.mark.parametrize("kernel_answers", [True, False])
def test_a_hidden_module_directory_asks_generic_netlink(
    monkeypatch: pytest.MonkeyPatch, kernel_answers: bool
) -> None:
    # systemd's ProtectKernelModules= makes /usr/lib/modules unreadable for the service.
    from bmx7_wg.wireguard import kernel, probe

    class Probe:
        opened = 0

        def __init__(self) -> None:
            Probe.opened += 1
            if not kernel_answers:
                raise kernel.KernelWireGuardUnavailable("kernel", "open", "no WireGuard")

        def close(self) -> None:
            pass

    monkeypatch.setattr(probe, "_wireguard_available", lambda *a: False)
    monkeypatch.setattr(kernel, "KernelWireGuard", Probe)
    monkeypatch.setattr(probe, "_hidden", lambda d: False)
    assert kernel_has_wireguard() is False and Probe.opened == 0
    monkeypatch.setattr(probe, "_hidden", lambda d: True)
    assert kernel_has_wireguard() is kernel_answers and Probe.opened == 1


def test_hidden_means_present_but_unreadable(tmp_path: Path) -> None:
    from bmx7_wg.wireguard.probe import _hidden

    assert not _hidden(tmp_path) and not _hidden(tmp_path / "missing")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0)
    # As the service sees it: root without CAP_DAC_OVERRIDE (its bounding set) cannot look in.
    code = f"from bmx7_wg.wireguard.probe import _hidden; assert _hidden({str(locked)!r})"
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        cmd = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--", *cmd]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
