"""wireguard-go started by bmx7_wg.wireguard.wggo, driven by bmx7_wg.wireguard.uapi, in a network namespace.

The link is created by a helper Python process under `ip netns exec NS` (so wireguard-go
makes its TUN interface there); the test process then talks to the daemon over its
socket, which is a filesystem path and reachable from any namespace.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from bmx7_wg.keys import PresharedKey, PrivateKey, clamp, encode_key
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.state import Peer
from bmx7_wg.wireguard import uapi
from bmx7_wg.wireguard.uapi import DeviceRefused, DeviceUnreachable, UapiClient

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]

START = """
import sys
from bmx7_wg.wireguard import wggo
from bmx7_wg.errors import Bmx7WgError
try:
    wggo.start(sys.argv[1])
except Bmx7WgError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
"""


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(list(args), capture_output=True, text=True, check=check, env=env, timeout=60)


def start_in(ns: str, ifname: str) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, sys.executable, "-c", START, ifname, check=False)


def daemon_pids(ifname: str) -> list[int]:
    """Live wireguard-go processes serving `ifname` (names carry a random token)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if (
            len(argv) >= 2
            and os.path.basename(argv[0]).startswith(b"wireguard-go")
            and argv[1] == ifname.encode()
            and state != "Z"  # a reaped-late zombie is already gone for our purposes
        ):
            pids.append(int(entry))
    return pids


def wait_gone(pids: list[int], timeout: float = 5.0) -> list[int]:
    deadline = time.monotonic() + timeout
    alive = pids
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if p in daemon_pids_any(p)]
    return alive


def daemon_pids_any(pid: int) -> list[int]:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return []
    return [] if state == "Z" else [pid]


def key(n: int, salt: int = 0) -> str:
    # Never all zeros: wireguard-go silently ignores a peer whose key equals the device's
    # own public key, which is zero while the device has no private key.
    return encode_key(bytes([n, salt + 1]) * 16)


@dataclass
class Live:
    ns: str
    ifname: str
    pids: list[int]
    client: UapiClient


@pytest.fixture
def ns() -> Iterator[str]:
    if shutil.which("wireguard-go") is None or shutil.which("ip") is None:
        pytest.skip("needs wireguard-go and iproute2")
    name = f"bu{secrets.token_hex(3)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


def stop(ns: str, ifname: str, pids: list[int]) -> None:
    # Deleting the link is how a wireguard-go device is stopped; kill (by its own PID)
    # only a daemon that survived that, and remove the stale socket such a kill leaves.
    run("ip", "-n", ns, "link", "del", ifname, check=False)
    for pid in wait_gone(pids):
        os.kill(pid, signal.SIGKILL)
    client = UapiClient()
    if client.exists(ifname) and not daemon_pids(ifname):
        os.unlink(client.socket_path(ifname))


@pytest.fixture
def live(ns: str) -> Iterator[Live]:
    ifname = f"{ns}wg"
    proc = start_in(ns, ifname)
    pids = daemon_pids(ifname)
    try:
        assert proc.returncode == 0, proc.stderr
        yield Live(ns, ifname, pids, UapiClient())
    finally:
        stop(ns, ifname, pids)


def test_start_creates_a_fresh_device_in_the_namespace(live: Live) -> None:
    assert live.client.exists(live.ifname)
    assert run("ip", "-n", live.ns, "link", "show", live.ifname, check=False).returncode == 0
    assert run("ip", "link", "show", live.ifname, check=False).returncode != 0
    device = live.client.get(live.ifname)
    assert device.private_key is None
    assert device.listen_port > 0
    assert dict(device.peers) == {}
    # One daemon, detached from us: its stdio is /dev/null (it holds none of our pipes)
    # and it runs in its own session.
    assert len(live.pids) == 1
    (pid,) = live.pids
    assert [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (0, 1, 2)] == ["/dev/null"] * 3
    assert os.getsid(pid) != os.getsid(0)


def tricky_v6() -> frozenset[str]:
    # Spellings where RFC 5952 choices matter (longest/first zero run, single zero field,
    # IPv4-mapped); the desired side spells them the way Python does.
    raw = [
        "fd77:0:0:1:0:0:1:1/128",
        "fd77:1:0:0:1:0:0:0/128",
        "fd77:0:1:0:1:0:1:0/128",
        "1:0:0:0:0:0:0:0/128",
        "::1/128",
        "::ffff:10.0.0.0/104",
        "64:ff9b::/96",
        "2001:db8::/32",
    ]
    return frozenset(str(ipaddress.ip_network(n)) for n in raw)


def base_peers() -> list[Peer]:
    return [
        Peer(
            public_key=key(1),
            allowed_ips=frozenset({"10.1.0.1/32", "10.1.1.0/24", "fd77::1/128"}),
            endpoint="192.0.2.1:51820",
            persistent_keepalive=25,
        ),
        Peer(
            public_key=key(2),
            allowed_ips=frozenset({"10.2.0.0/16", "fd77:2::/64"}),
            endpoint="[fd70::2]:40456",
            preshared_key=PresharedKey(os.urandom(32)),
        ),
        Peer(public_key=key(3), allowed_ips=tricky_v6()),
    ]


def configure(live: Live) -> tuple[bytes, list[Peer]]:
    raw = os.urandom(32)  # unclamped on purpose
    peers = base_peers()
    change = DeviceChange(
        live.ifname,
        private_key=PrivateKey(raw),
        listen_port=51820,
        fwmark=0x1234,
        add_peers=tuple(peers),
    )
    live.client.apply(change)
    return raw, peers


def test_round_trip(live: Live) -> None:
    raw, peers = configure(live)
    device = live.client.get(live.ifname)
    assert device.private_key is not None
    assert device.private_key.raw == clamp(raw)  # wireguard-go stores it clamped
    assert device.listen_port == 51820
    assert device.fwmark == 0x1234
    assert dict(device.peers) == {p.public_key: p for p in peers}
    # `wg` agrees with our reading of the keys.
    shown = run("ip", "netns", "exec", live.ns, "wg", "show", live.ifname, "peers").stdout.split()
    assert sorted(shown) == sorted(p.public_key for p in peers)


def test_update_only_touches_the_named_fields(live: Live) -> None:
    _, peers = configure(live)
    p1, p2, p3 = peers
    # The desired peer differs in three fields, but only the endpoint is named.
    wanted = replace(p1, endpoint="[fd70::9]:1", persistent_keepalive=0, allowed_ips=frozenset())
    live.client.apply(DeviceChange(live.ifname, update_peers=((wanted, ("endpoint",)),)))
    device = live.client.get(live.ifname)
    assert device.peers[p1.public_key] == replace(p1, endpoint="[fd70::9]:1")
    assert device.peers[p2.public_key] == p2 and device.peers[p3.public_key] == p3

    cleared = replace(p2, preshared_key=None, endpoint=None)
    live.client.apply(DeviceChange(live.ifname, update_peers=((cleared, ("preshared_key", "endpoint")),)))
    # endpoint None means "leave alone": the device keeps the old one.
    assert live.client.get(live.ifname).peers[p2.public_key] == replace(p2, preshared_key=None)

    p3b = replace(p3, persistent_keepalive=7)
    live.client.apply(DeviceChange(live.ifname, update_peers=((p3b, ("persistent_keepalive",)),)))
    assert live.client.get(live.ifname).peers[p3.public_key] == replace(p3, persistent_keepalive=7)


def test_update_only_never_creates_a_peer(live: Live) -> None:
    configure(live)
    ghost = Peer(public_key=key(9), allowed_ips=frozenset({"10.9.0.0/16"}), endpoint="192.0.2.9:1")
    live.client.apply(DeviceChange(live.ifname, update_peers=((ghost, ("allowed_ips", "endpoint")),)))
    assert key(9) not in live.client.get(live.ifname).peers


def test_remove_add_and_move_allowed_ips_in_one_change(live: Live) -> None:
    _, (p1, p2, p3) = configure(live)
    # p2 takes 10.1.0.1/32 from p1 (p1 is not even mentioned); p3 goes; p4 takes over
    # one of p3's prefixes, which the removal earlier in the same request freed.
    p2b = replace(p2, allowed_ips=p2.allowed_ips | {"10.1.0.1/32"})
    p4 = Peer(public_key=key(4), allowed_ips=frozenset({"2001:db8::/32"}), endpoint="[::1]:9")
    change = DeviceChange(
        live.ifname,
        remove_peers=(p3.public_key,),
        update_peers=((p2b, ("allowed_ips",)),),
        add_peers=(p4,),
    )
    live.client.apply(change)
    device = live.client.get(live.ifname)
    assert set(device.peers) == {p1.public_key, p2.public_key, p4.public_key}
    assert device.peers[p1.public_key].allowed_ips == p1.allowed_ips - {"10.1.0.1/32"}
    assert device.peers[p2.public_key] == p2b
    assert device.peers[p4.public_key] == p4


def test_refused_change_names_interface_and_errno(live: Live) -> None:
    with pytest.raises(DeviceRefused) as info:
        live.client.set(live.ifname, "set=1\nlisten_port=99999\n\n")
    assert info.value.errno == 22
    assert str(info.value).startswith(
        f"{live.ifname}: the WireGuard device refused the change (errno 22: invalid argument)"
    )


def test_refusal_early_in_a_big_request_is_reported_not_hung(live: Live) -> None:
    # wireguard-go answers at the first bad line and drops the rest of the request: the
    # client must report the errno, not a broken pipe, and must not wait for more.
    peers = tuple(Peer(public_key=key(i % 256, i // 256)) for i in range(20_000))
    body = uapi.format_set(DeviceChange(live.ifname, add_peers=peers))
    request = "set=1\nlisten_port=99999\n" + body[len("set=1\n") :]
    with pytest.raises(DeviceRefused):
        live.client.set(live.ifname, request)
    assert dict(live.client.get(live.ifname).peers) == {}


def test_start_takes_a_device_another_start_brought_up(live: Live) -> None:
    # As when an apply was killed while starting wireguard-go and the next one, planned
    # before that device appeared, starts it again: the running device is the one, and no
    # second daemon is left behind.
    proc = start_in(live.ns, live.ifname)
    assert proc.returncode == 0, proc.stderr
    assert daemon_pids(live.ifname) == live.pids
    assert live.client.get(live.ifname).listen_port > 0


def test_start_detects_the_name_taken_in_another_namespace(live: Live) -> None:
    other = f"{live.ns}x"
    run("ip", "netns", "add", other)
    try:
        proc = start_in(other, live.ifname)
        assert proc.returncode == 1
        assert "runs in another network namespace" in proc.stderr, proc.stderr
        # The failed start leaves no interface behind.
        assert run("ip", "-n", other, "link", "show", live.ifname, check=False).returncode != 0
    finally:
        run("ip", "netns", "del", other, check=False)
    assert live.client.get(live.ifname).listen_port > 0


def test_link_del_stops_the_daemon(live: Live) -> None:
    run("ip", "-n", live.ns, "link", "del", live.ifname)
    assert wait_gone(live.pids) == []
    deadline = time.monotonic() + 5
    while live.client.exists(live.ifname) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not live.client.exists(live.ifname)
    with pytest.raises(DeviceUnreachable, match="is wireguard-go running"):
        live.client.get(live.ifname)


def test_10000_peers(live: Live) -> None:
    # Baselines here: add 10,000 peers ~0.9 s, get + parse ~0.1 s; the bounds only catch
    # a change of complexity.
    peers = tuple(
        Peer(public_key=key(i % 256, i // 256), allowed_ips=frozenset({f"fd77::{i + 1:x}/128"}))
        for i in range(10_000)
    )
    t0 = time.perf_counter()
    live.client.apply(DeviceChange(live.ifname, add_peers=peers))
    t1 = time.perf_counter()
    device = live.client.get(live.ifname)
    t2 = time.perf_counter()
    assert len(device.peers) == 10_000
    assert dict(device.peers) == {p.public_key: p for p in peers}
    assert t1 - t0 < 20 and t2 - t1 < 5
