"""What a local user or a misbehaving local input can do to `apply` and the service.

Issue 25's findings: any local user could make every `apply`, `down` and reconcile wait
10 s and exit 7 by flocking a left-over lock file read-only; a bmx7 control socket that
answers one byte every 0.5 s stalled the service for over 70 s; a FIFO at the mesh state
file blocked the service's start for ever; `rcvdSms/` replaced by a symlink was followed.
Each is run here as it would happen, against the real CLI and service in a namespace.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg import lock
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import format_announcement
from tests.integration.netns import Host, Lab
from tests.integration.service import Service
from tests.integration.test_attacks import FakeBmx7, allowed_ips, mesh_config, node_id

pytestmark = pytest.mark.root

NOBODY = 65534


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Host, FakeBmx7]]:
    lab = Lab(tmp_path, 1)
    lab.make_keys()
    bmx7 = FakeBmx7(tmp_path / "bmx7")
    try:
        yield lab.hosts[0], bmx7
    finally:
        bmx7.stop()
        lab.close()


# -- the lock --------------------------------------------------------------------------------


def _netns_inode(host: Host) -> str:
    return host.exec("stat", "-L", "-c", "%i", "/proc/self/ns/net").stdout.strip()


def test_a_local_user_cannot_hold_the_lock(node: tuple[Host, FakeBmx7]) -> None:
    host, _ = node
    host.write_config(
        f'[interface.{host.ifname}]\nbackend = "userspace"\nprivate_key_file = "{host.key_path}"\n'
        f'listen_port = 51820\naddresses = ["{host.tunnel_ip}/24"]\n'
    )
    # As systemd's RuntimeDirectory= makes it, and a lock file as an earlier version left
    # it (0644): nobody opens it read-only and holds an flock on it.
    run_dir = Path(lock.LOCK_DIR)
    run_dir.mkdir(exist_ok=True)
    run_dir.chmod(0o755)
    lock_file = run_dir / f"netns-{_netns_inode(host)}.lock"
    lock_file.write_text("1 apply\n")
    lock_file.chmod(0o644)
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(lock_file)!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    squatter = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
    )
    try:
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "held"
        # Before: 10 s of "waiting for the lock", then exit 7, nothing applied.
        applied = host.run("apply", check=False)
        assert applied.returncode == 0, applied.stderr
        assert "not honoured" in applied.stderr and "waiting for the lock" not in applied.stderr
        assert host.ifname in host.links()
        st = run_dir.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)
        down = host.run("down", check=False)
        assert down.returncode == 0, down.stderr
        assert "not a private file" not in down.stderr  # the lock file is ours now
        assert host.ifname not in host.links()
    finally:
        assert squatter.stdin is not None
        squatter.stdin.close()
        squatter.wait(timeout=30)
    assert not lock_file.exists()


# -- slow and blocking inputs ----------------------------------------------------------------


class DrippingBmx7:
    """bmx7's control socket, answering one byte every `every` seconds, for ever."""

    def __init__(self, path: Path, every: float = 0.5) -> None:
        if path.exists() or path.is_symlink():
            path.unlink()
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(16)
        self.every = every
        self.done = threading.Event()
        self.asked = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.done.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.asked += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(2000)
            while not self.done.wait(self.every):
                try:
                    conn.sendall(b"{")
                except OSError:
                    return

    def close(self) -> None:
        self.done.set()
        self.server.shutdown(socket.SHUT_RDWR)
        self.server.close()
        self.thread.join(10)


def _mesh_with_a_static_peer(host: Host, bmx7: FakeBmx7, static_key: str) -> None:
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16"')
    with host.config_path.open("a") as fh:
        fh.write(
            f'[[interface.{host.ifname}.peer]]\npublic_key = "{static_key}"\nallowed_ips = ["10.99.0.0/24"]\n'
        )


def test_a_dripping_control_socket_holds_up_neither_apply_nor_the_service(
    node: tuple[Host, FakeBmx7], tmp_path: Path
) -> None:
    host, bmx7 = node
    bmx7.stop()
    dripping = DrippingBmx7(bmx7.root / "sock")
    try:
        first = PrivateKey.generate().public_key()
        _mesh_with_a_static_peer(host, bmx7, first)
        # Before: each byte restarted the 3 s timeout, and the answer never ends.
        applied = host.run("apply", check=False)
        assert applied.returncode == 0, applied.stderr
        assert "no complete answer within 3 s" in applied.stderr, applied.stderr
        assert first in allowed_ips(host)

        workdir = tmp_path / "svc"
        workdir.mkdir()
        # As systemd sets it for WatchdogSec=6s: a ping every 3 s.
        svc = Service(workdir, host.ns, host.config_path, env={"WATCHDOG_USEC": "6000000"})
        try:
            svc.wait_notify("READY=1", timeout=60)
            for _ in range(3):
                svc.wait_notify("WATCHDOG=1", timeout=30)
            # A change of the configuration still goes in while bmx7 drips.
            second = PrivateKey.generate().public_key()
            _mesh_with_a_static_peer(host, bmx7, second)
            svc.signal(1)  # SIGHUP
            svc.wait_notify("READY=1", timeout=60)
            assert allowed_ips(host).get(second) == {"10.99.0.0/24"}
            assert svc.running()
        finally:
            svc.stop()
        assert dripping.asked >= 3
    finally:
        dripping.close()


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_state_file_that_is_a_fifo_or_a_symlink_does_not_hold_the_start(
    node: tuple[Host, FakeBmx7], tmp_path: Path, kind: str
) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16"')
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    state = run_dir / f"mesh-{host.ifname}.json"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"format": 1, "interface": "' + host.ifname + '", "peers": []}')
    if kind == "fifo":
        os.mkfifo(state, 0o600)  # no writer: a blocking open waits for ever
    else:
        state.symlink_to(elsewhere)
    workdir = tmp_path / "svc"
    workdir.mkdir()
    svc = Service(workdir, host.ns, host.config_path, run_dir=run_dir)
    try:
        svc.wait_notify("READY=1", timeout=60)
        warned = svc.wait_journal("SYSLOG_IDENTIFIER=bmx7-wg", "PRIORITY=4", timeout=30)
        messages = " ".join(str(e.get("MESSAGE")) for e in warned)
        reason = "is not a regular file" if kind == "fifo" else "is a symbolic link"
        assert f"ignoring the mesh state file {state}: it {reason}" in messages, messages
    finally:
        svc.stop()
    # The stop writes the state file anew, in place of what was there, never through it.
    assert state.is_file() and not state.is_symlink()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert elsewhere.read_text().endswith('"peers": []}')


# -- symlinks in bmx7's directories ---------------------------------------------------------


def test_a_symlinked_rcvdsms_is_not_followed(node: tuple[Host, FakeBmx7], tmp_path: Path) -> None:
    host, bmx7 = node
    mesh_config(host, bmx7, trust="all", accept='"10.9.0.0/16"')
    # Elsewhere, a directory holding what would be a valid announcement.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    sender, key = node_id(), PrivateKey.generate().public_key()
    (elsewhere / f"{sender}:wg-bmx7").write_bytes(format_announcement(key, 40456, ["10.9.1.0/24"]))
    shutil.rmtree(bmx7.rcvd)
    bmx7.rcvd.symlink_to(elsewhere)
    applied = host.run("apply", check=False)
    assert applied.returncode == 0, applied.stderr
    assert "it is a symbolic link, not bmx7's directory" in applied.stderr, applied.stderr
    assert key not in allowed_ips(host)
    assert key not in host.run("show").stdout
