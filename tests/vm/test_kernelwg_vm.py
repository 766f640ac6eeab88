"""Kernel WireGuard through bmx7_wg.wireguard.kernel, on Debian's own kernel (inside vm/run)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.state import Device, Peer
from bmx7_wg.wireguard.kernel import KernelWireGuard, KernelWireGuardError
from bmx7_wg.wireguard.probe import kernel_has_wireguard
from tests.vm.conftest import in_netns, sh

pytestmark = pytest.mark.vm


def wg_dump(name: str, netns: str | None = None) -> list[list[str]]:
    """`wg show NAME dump`: the view of the wg tool, independent of bmx7-wg."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    out = sh(*prefix, "wg", "show", name, "dump").stdout
    return [line.split("\t") for line in out.splitlines()]


@pytest.fixture
def wgk(token: str) -> Iterator[str]:
    name = f"wgk{token}"
    sh("ip", "link", "add", name, "type", "wireguard")
    try:
        yield name
    finally:
        sh("ip", "link", "del", name, check=False)


@pytest.fixture
def kwg() -> Iterator[KernelWireGuard]:
    with KernelWireGuard() as k:
        yield k


def make_peer(**fields: object) -> Peer:
    return Peer(public_key=PrivateKey.generate().public_key(), **fields)  # type: ignore[arg-type]


def test_kernel_has_wireguard() -> None:
    # What `backend = "auto"` asks before it picks the kernel.
    assert kernel_has_wireguard()


def test_fresh_device_reads_empty(wgk: str, kwg: KernelWireGuard) -> None:
    assert kwg.get(wgk) == Device()


def test_apply_read_back_update_remove(wgk: str, kwg: KernelWireGuard) -> None:
    key = PrivateKey.generate()
    a = make_peer(
        allowed_ips=frozenset({"10.9.1.0/24", "fd77::1/128"}),
        endpoint="192.0.2.1:51820",
        persistent_keepalive=25,
        preshared_key=PresharedKey(os.urandom(32)),
    )
    b = make_peer(allowed_ips=frozenset({"10.9.2.0/24"}), endpoint="[fd70::2]:40456")
    kwg.apply(DeviceChange(wgk, private_key=key, listen_port=40456, fwmark=0x77, add_peers=(a, b)))

    got = kwg.get(wgk)
    assert got.private_key is not None and got.private_key.raw == key.clamped
    assert (got.listen_port, got.fwmark) == (40456, 0x77)
    assert dict(got.peers) == {a.public_key: a, b.public_key: b}
    assert set(got.stats) == {a.public_key, b.public_key}
    # The wg tool sees the same device.
    dump = wg_dump(wgk)
    assert dump[0][1:4] == [key.public_key(), "40456", "0x77"]
    endpoints = {row[0]: row[2] for row in dump[1:]}
    assert endpoints == {a.public_key: a.endpoint, b.public_key: b.endpoint}

    # Update one field of a: only the keepalive changes, everything else stays.
    a2 = Peer(a.public_key, a.allowed_ips, a.endpoint, 0, a.preshared_key)
    kwg.apply(DeviceChange(wgk, update_peers=((a2, ("persistent_keepalive",)),)))
    assert dict(kwg.get(wgk).peers) == {a.public_key: a2, b.public_key: b}

    # Replace b's allowed IPs and endpoint, drop a's preshared key.
    b2 = Peer(b.public_key, frozenset({"10.9.3.0/24", "10.9.4.4/32"}), "192.0.2.9:1")
    a3 = Peer(a.public_key, a.allowed_ips, a.endpoint, 0, None)
    kwg.apply(DeviceChange(wgk, update_peers=(
        (b2, ("allowed_ips", "endpoint")), (a3, ("preshared_key",)),
    )))
    assert dict(kwg.get(wgk).peers) == {a.public_key: a3, b.public_key: b2}

    # Remove a; the port changes; b is left alone.
    kwg.apply(DeviceChange(wgk, listen_port=40457, remove_peers=(a.public_key,)))
    got = kwg.get(wgk)
    assert dict(got.peers) == {b.public_key: b2}
    assert got.listen_port == 40457
    assert got.private_key is not None and got.private_key.raw == key.clamped


def test_allowed_ip_moves_between_peers(wgk: str, kwg: KernelWireGuard) -> None:
    a = make_peer(allowed_ips=frozenset({"10.9.1.0/24"}))
    b = make_peer()
    kwg.apply(DeviceChange(wgk, add_peers=(a, b)))
    b2 = Peer(b.public_key, frozenset({"10.9.1.0/24"}))
    kwg.apply(DeviceChange(wgk, update_peers=((b2, ("allowed_ips",)),)))
    peers = kwg.get(wgk).peers
    assert peers[a.public_key].allowed_ips == frozenset()
    assert peers[b.public_key].allowed_ips == frozenset({"10.9.1.0/24"})


def test_many_peers_span_several_requests_and_messages(wgk: str, kwg: KernelWireGuard) -> None:
    peers = tuple(
        make_peer(allowed_ips=frozenset({f"10.{i // 250}.{i % 250}.0/24", f"fd77::{i + 1:x}/128"}))
        for i in range(600)
    )
    # One peer with more allowed IPs than fit in one dump message.
    big = make_peer(allowed_ips=frozenset(f"172.16.{i // 256}.{i % 256}/32" for i in range(3000)))
    started = time.monotonic()
    kwg.apply(DeviceChange(wgk, add_peers=(*peers, big)))
    applied = time.monotonic() - started
    got = kwg.get(wgk)
    assert dict(got.peers) == {p.public_key: p for p in (*peers, big)}
    assert len(wg_dump(wgk)) == 1 + len(peers) + 1
    print(f"601 peers / {2 * 600 + 3000} allowed IPs: apply {applied:.2f} s, "
          f"read {time.monotonic() - started - applied:.2f} s (under TCG)")


def test_no_change_sends_nothing(wgk: str, kwg: KernelWireGuard) -> None:
    before = wg_dump(wgk)
    kwg.apply(DeviceChange(wgk))
    assert wg_dump(wgk) == before


def test_errors_name_the_interface(token: str, kwg: KernelWireGuard) -> None:
    missing = f"nowg{token}"
    with pytest.raises(KernelWireGuardError, match=f"^{missing}: cannot read the WireGuard device"):
        kwg.get(missing)
    with pytest.raises(KernelWireGuardError, match=f"^{missing}: cannot set the listen port"):
        kwg.apply(DeviceChange(missing, listen_port=1))


def test_errors_never_show_the_private_key(token: str, kwg: KernelWireGuard) -> None:
    key = PrivateKey.generate()
    with pytest.raises(KernelWireGuardError) as info:
        kwg.apply(DeviceChange(f"nowg{token}", private_key=key))
    assert key.to_base64() not in str(info.value)
    assert "set the private key" in str(info.value)


# --- tunnels ------------------------------------------------------------------------


def setup_underlay(ns: list[str], token: str) -> tuple[str, str]:
    """A veth pair between the two namespaces, IPv4 (no neighbour discovery delays)."""
    va, vb = f"vk{token}a", f"vk{token}b"
    sh("ip", "link", "add", va, "netns", ns[0], "type", "veth", "peer", "name", vb, "netns", ns[1])
    for n, v, addr in ((ns[0], va, "192.168.77.1/24"), (ns[1], vb, "192.168.77.2/24")):
        sh("ip", "-n", n, "addr", "add", addr, "dev", v)
        sh("ip", "-n", n, "link", "set", v, "up")
        sh("ip", "-n", n, "link", "set", "lo", "up")
    return "192.168.77.1", "192.168.77.2"


def add_kernel_wg(ns: str, name: str, address: str) -> None:
    sh("ip", "-n", ns, "link", "add", name, "type", "wireguard")
    sh("ip", "-n", ns, "addr", "add", address, "dev", name)
    sh("ip", "-n", ns, "link", "set", name, "up")


def ping(ns: str, address: str) -> bool:
    # A few tries within 10 s: the first packet waits for the handshake.
    proc = sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", "2", "-w", "10", address,
              check=False)
    return proc.returncode == 0


def test_two_kernel_nodes_ping(netns: list[str], token: str) -> None:
    under_a, under_b = setup_underlay(netns, token)
    name_a, name_b = f"wka{token}", f"wkb{token}"
    add_kernel_wg(netns[0], name_a, "10.77.0.1/24")
    add_kernel_wg(netns[1], name_b, "10.77.0.2/24")
    key_a, key_b = PrivateKey.generate(), PrivateKey.generate()
    peer_b = Peer(key_b.public_key(), frozenset({"10.77.0.2/32"}), f"{under_b}:51821")
    peer_a = Peer(key_a.public_key(), frozenset({"10.77.0.1/32"}), f"{under_a}:51820")
    with in_netns(netns[0]):
        k_a = KernelWireGuard()
    with in_netns(netns[1]):
        k_b = KernelWireGuard()
    try:
        k_a.apply(DeviceChange(name_a, private_key=key_a, listen_port=51820, add_peers=(peer_b,)))
        k_b.apply(DeviceChange(name_b, private_key=key_b, listen_port=51821, add_peers=(peer_a,)))
        assert ping(netns[0], "10.77.0.2")
        assert ping(netns[1], "10.77.0.1")
        stats = k_a.get(name_a).stats[peer_b.public_key]
        assert stats.last_handshake > time.time() - 600
        assert stats.rx_bytes > 0 and stats.tx_bytes > 0
        # Reading is per namespace: each socket sees only its own namespace's device.
        with pytest.raises(KernelWireGuardError):
            k_a.get(name_b)
    finally:
        k_a.close()
        k_b.close()


@pytest.fixture
def wireguard_go(netns: list[str], token: str) -> Iterator[str]:
    """A wireguard-go interface in the second namespace, stopped by its own PID."""
    name = f"wgo{token}"
    env = {**os.environ, "WG_PROCESS_FOREGROUND": "1", "LOG_LEVEL": "error"}
    proc = subprocess.Popen(["ip", "netns", "exec", netns[1], "wireguard-go", name], env=env)
    try:
        sock = Path("/var/run/wireguard") / f"{name}.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"wireguard-go {name} did not start")
            time.sleep(0.05)
        yield name
    finally:
        sh("ip", "-n", netns[1], "link", "del", name, check=False)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()


def test_kernel_node_and_wireguard_go_node_ping(
    netns: list[str], token: str, wireguard_go: str, tmp_path: Path
) -> None:
    under_a, under_b = setup_underlay(netns, token)
    name_a = f"wka{token}"
    add_kernel_wg(netns[0], name_a, "10.78.0.1/24")
    key_a, key_b = PrivateKey.generate(), PrivateKey.generate()
    key_file = tmp_path / "b.key"
    key_file.write_text(key_b.to_base64() + "\n")
    key_file.chmod(0o600)
    b = ["ip", "netns", "exec", netns[1]]
    sh(*b, "wg", "set", wireguard_go, "private-key", str(key_file), "listen-port", "51821",
       "peer", key_a.public_key(), "allowed-ips", "10.78.0.1/32", "endpoint", f"{under_a}:51820")
    sh("ip", "-n", netns[1], "addr", "add", "10.78.0.2/24", "dev", wireguard_go)
    sh("ip", "-n", netns[1], "link", "set", wireguard_go, "up")
    peer_b = Peer(key_b.public_key(), frozenset({"10.78.0.2/32"}), f"{under_b}:51821")
    with in_netns(netns[0]), KernelWireGuard() as k_a:
        k_a.apply(DeviceChange(name_a, private_key=key_a, listen_port=51820, add_peers=(peer_b,)))
        assert ping(netns[0], "10.78.0.2")
        assert ping(netns[1], "10.78.0.1")
        assert k_a.get(name_a).stats[peer_b.public_key].rx_bytes > 0
