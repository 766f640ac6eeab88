"""The service under faults and churn: `bmx7-wg run` with wireguard-go killed, bmx7
restarting, and 1,000 mesh nodes appearing, changing keys and leaving.

bmx7 is a stand-in (tests/bmx7sim): one SimNode answers the control socket for this
node; the test plays the mesh by writing `rcvdSms/<NODEID>:wg-bmx7` files as bmx7 would
deliver them. Sizes: BMX7_WG_CHURN_NODES (default 1000) and BMX7_WG_CHURN_SECONDS
(default 45; a nightly run uses a few hundred).
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bmx7_wg.base.nodeid import tunnel_address
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import format_announcement
from tests.bmx7sim.sim import SimNode
from tests.conftest import REPO, bmx7_wg_command, child_env
from tests.integration.netns import Host, Lab
from tests.integration.test_faults import wireguard_go_pids

NODES = int(os.environ.get("BMX7_WG_CHURN_NODES", "1000"))
SECONDS = float(os.environ.get("BMX7_WG_CHURN_SECONDS", "45"))


# --------------------------------------------------------------------- helpers


class RunningService:
    """`bmx7-wg -v run` in a host's namespace, its log in a file; stopped by its own PID."""

    def __init__(self, host: Host, log: Path) -> None:
        self.log = log
        cmd = ["ip", "netns", "exec", host.ns, *bmx7_wg_command(), "-v", "-c", str(host.config_path), "run"]
        # The service's state files go next to its log, not into the machine's /run/bmx7-wg.
        env = dict(child_env(), BMX7_WG_RUN_DIR=str(log.parent / "state"))
        with open(log, "w") as out:
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=out, cwd=REPO)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def text(self) -> str:
        return self.log.read_text()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def device_peers(host: Host) -> dict[str, set[str]]:
    proc = host.exec("wg", "show", host.ifname, "allowed-ips", check=False)
    if proc.returncode != 0:
        return {}
    out = {}
    for line in proc.stdout.strip().splitlines():
        key, _, ips = line.partition("\t")
        out[key] = set(ips.split()) - {"(none)"}
    return out


@dataclass
class MeshHost:
    host: Host
    bmx7: SimNode
    service: RunningService | None = None

    @property
    def rcvd(self) -> Path:
        return Path(self.bmx7.runtime_dir) / "sms" / "rcvdSms"

    def receive(self, node_id: str, key: str) -> None:
        # bmx7 writes received SMS in place; write-then-rename is what a careful daemon does.
        tmp = self.rcvd / f".{node_id}.tmp"
        tmp.write_bytes(format_announcement(key, 40456))
        os.replace(tmp, self.rcvd / f"{node_id}:wg-bmx7")

    def leave(self, node_id: str) -> None:
        (self.rcvd / f"{node_id}:wg-bmx7").unlink()


@pytest.fixture
def mesh_host(lab1: Lab, tmp_path: Path) -> Iterator[MeshHost]:
    host = lab1.hosts[0]
    bmx7 = SimNode(str(tmp_path / "bmx7"), "self", sync_sms=())
    bmx7.start()
    host.write_config(f"""[bmx7]
runtime_dir = "{bmx7.runtime_dir}"
trust = "all"
grace = 10

[interface.{host.ifname}]
mesh = true
backend = "userspace"
private_key_file = "{host.key_path}"
""")
    mh = MeshHost(host, bmx7)
    try:
        yield mh
    finally:
        if mh.service is not None:
            mh.service.stop()
        bmx7.stop()


# --------------------------------------------------------------------- service under faults


@pytest.mark.root
def test_wireguard_go_killed_under_the_service_is_restored(lab1: Lab, tmp_path: Path) -> None:
    host = lab1.hosts[0]
    other = PrivateKey.generate().public_key()
    host.write_config(f"""[interface.{host.ifname}]
backend = "userspace"
private_key_file = "{host.key_path}"
listen_port = 51820
addresses = ["{host.tunnel_ip}/24"]
[[interface.{host.ifname}.peer]]
public_key = "{other}"
endpoint = "192.0.2.99:51820"
allowed_ips = ["10.77.1.0/24"]
""")
    service = RunningService(host, tmp_path / "service.log")
    try:
        wait_until(lambda: other in device_peers(host), 30, "the service to configure the interface")
        restored = 0

        def whole(pid: int) -> bool:
            # A new daemon, and the device, address and route all back as configured.
            return (
                wireguard_go_pids(host.ifname) not in ([], [pid])
                and device_peers(host).get(other) == {"10.77.1.0/24"}
                and f"{host.tunnel_ip}/24" in host.exec("ip", "-o", "addr", "show", "dev", host.ifname).stdout
                and "10.77.1.0/24" in host.exec("ip", "route", "show", "dev", host.ifname).stdout
            )

        for _ in range(3):
            (pid,) = wireguard_go_pids(host.ifname)
            os.kill(pid, signal.SIGKILL)  # the daemon the service started, by its PID
            wait_until(lambda pid=pid: whole(pid), 30, "the interface to be restored")  # type: ignore[misc]
            restored += 1
        assert service.proc.poll() is None, service.text()
        assert restored == 3
    finally:
        service.stop()


@pytest.mark.root
def test_bmx7_restart_does_not_flap_peers(mesh_host: MeshHost, tmp_path: Path) -> None:
    host = mesh_host.host
    nodes = {secrets.token_hex(28).upper(): PrivateKey.generate().public_key() for _ in range(20)}
    for node_id, key in nodes.items():
        mesh_host.receive(node_id, key)
    mesh_host.service = RunningService(host, tmp_path / "service.log")
    wait_until(lambda: set(device_peers(host)) == set(nodes.values()), 30, "all mesh peers")
    log_before = mesh_host.service.text().count("remove peer")
    for _ in range(3):
        mesh_host.bmx7.restart()  # rcvdSms wiped
        time.sleep(1.0)  # what bmx7 takes to get the descriptions again
        for node_id, key in nodes.items():
            mesh_host.receive(node_id, key)
        time.sleep(0.5)
        assert set(device_peers(host)) == set(nodes.values())
    assert mesh_host.service.text().count("remove peer") == log_before, mesh_host.service.text()


# --------------------------------------------------------------------- churn


@pytest.mark.root
def test_churn_every_change_reaches_the_device(mesh_host: MeshHost, tmp_path: Path) -> None:
    host = mesh_host.host
    rnd = random.Random(int(os.environ.get("BMX7_WG_CHURN_SEED", "0")) or None)
    expected: dict[str, str] = {}  # node id -> public key, as the mesh says now
    spare: list[str] = []
    events = {"appear": 0, "key change": 0, "leave": 0}
    mesh_host.service = RunningService(host, tmp_path / "service.log")
    wait_until(lambda: host.ifname in host.links(), 30, "the service to create the interface")

    def want() -> dict[str, set[str]]:
        return {key: {f"{tunnel_address(n)}/128"} for n, key in expected.items()}

    def converged() -> bool:
        return device_peers(host) == want()

    # Phase 1: NODES nodes appear, in bursts of 100.
    for start in range(0, NODES, 100):
        for _ in range(min(100, NODES - start)):
            node_id = secrets.token_hex(28).upper()
            expected[node_id] = PrivateKey.generate().public_key()
            mesh_host.receive(node_id, expected[node_id])
            events["appear"] += 1
        time.sleep(0.2)
    wait_until(converged, 120, f"{NODES} peers on the device")
    rss_start = mesh_host.service.rss_kib()

    # Phase 2: churn; every ~10 s the mesh holds still and the device must match it exactly.
    checkpoints = 0
    rss: list[int] = []
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline:
        stop_burst = min(deadline, time.monotonic() + 10)
        while time.monotonic() < stop_burst:
            for _ in range(rnd.randint(1, 20)):
                roll = rnd.random()
                if roll < 0.4 and expected:
                    node_id = rnd.choice(list(expected))
                    expected[node_id] = PrivateKey.generate().public_key()
                    mesh_host.receive(node_id, expected[node_id])
                    events["key change"] += 1
                elif roll < 0.7 and expected:
                    node_id = rnd.choice(list(expected))
                    del expected[node_id]
                    mesh_host.leave(node_id)
                    spare.append(node_id)
                    events["leave"] += 1
                else:
                    node_id = spare.pop() if spare and rnd.random() < 0.5 else secrets.token_hex(28).upper()
                    expected[node_id] = PrivateKey.generate().public_key()
                    mesh_host.receive(node_id, expected[node_id])
                    events["appear"] += 1
            time.sleep(rnd.uniform(0.02, 0.3))
        wait_until(converged, 60, f"the device to match the mesh at checkpoint {checkpoints + 1}")
        checkpoints += 1
        rss.append(mesh_host.service.rss_kib())
    assert mesh_host.service.proc.poll() is None, mesh_host.service.text()[-3000:]
    assert checkpoints >= 1
    # Memory flat: what the service holds after the churn is what it held before it,
    # give or take allocator slack, however many events went through.
    assert max(rss) < rss_start + 32 * 1024, (rss_start, rss)
    total = sum(events.values())
    print(
        f"\nchurn: {NODES} nodes, {total} events ({events}), {checkpoints} checkpoints converged, "
        f"RSS {rss_start} KiB after join, {rss[-1]} KiB at the end (max {max(rss)} KiB)"
    )
