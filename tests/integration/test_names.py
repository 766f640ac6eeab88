"""Mesh names end to end: `ping NAME.mesh` and `ping SHORTID.mesh` through the tunnel.

Three namespaces in a line (n1 - n2 - n3, the bmx7 stand-in), `bmx7-wg run` on each.
Each namespace resolves through /etc/netns/NS/hosts, which `ip netns exec` bind-mounts
over /etc/hosts. n1 and n2 name that file as their `hosts_file` (renamed into place);
n3 keeps /etc/hosts, the bind mount itself (renaming over it fails: rewritten in place).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.base.nodeid import tunnel_address
from bmx7_wg.net.hostsfile import BEGIN, split
from bmx7_wg.service import events
from tests.bmx7sim.netns import Mesh
from tests.conftest import bmx7_wg_command, child_env
from tests.integration.netns import BACKEND
from tests.integration.service import SLOW, Service

pytestmark = pytest.mark.root

OUTSIDE = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# the office printer\n10.0.0.9 printer\n"


class NamedNode:
    def __init__(self, mesh: Mesh, index: int, workdir: Path, *, own_file: bool) -> None:
        self.node = mesh.nodes[index]
        self.netns = self.node.netns
        self.ifname = f"wn{mesh.token}{index + 1}"
        self.workdir = workdir / self.netns
        self.workdir.mkdir()
        self.netns_etc = Path("/etc/netns") / self.netns
        self.hosts = self.netns_etc / "hosts"
        # n1, n2: the file itself; n3: /etc/hosts as `ip netns exec` shows it (a bind mount).
        self.hosts_file = str(self.hosts) if own_file else "/etc/hosts"
        self.config = self.workdir / "bmx7-wg.toml"
        self.config.write_text(
            f"""[bmx7]
runtime_dir = "{self.node.runtime_dir}"
trust = "all"

[names]
hosts_file = "{self.hosts_file}"

[interface.{self.ifname}]
mesh = true
private_key_file = "{self.workdir / "wg.key"}"
backend = "{BACKEND}"
"""
        )
        self.service: Service | None = None
        self.inode = 0

    def exec(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *cmd], capture_output=True, text=True, timeout=timeout
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, *bmx7_wg_command(), "-c", str(self.config), *args],
            capture_output=True,
            text=True,
            env=child_env(),
            timeout=120,
        )

    def block(self) -> tuple[str, ...]:
        return split(self.hosts.read_text(encoding="latin-1")).block or ()

    def names(self) -> set[str]:
        return {name for line in self.block() for name in line.split()[1:]}

    def outside(self) -> str:
        cut = split(self.hosts.read_text(encoding="latin-1"))
        return cut.before + cut.after

    def ping(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.exec("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "-w", "15", name)


def wait_for(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def named(tmp_path: Path) -> Iterator[list[NamedNode]]:
    with Mesh(n=3, delay=0.3) as mesh:
        # Two nodes give themselves the same name; the third its own.
        mesh.nodes[0].sim.name = "alpha"
        mesh.nodes[1].sim.name = "Alpha"
        mesh.nodes[2].sim.name = "node3"
        nodes = [NamedNode(mesh, i, tmp_path, own_file=i < 2) for i in range(3)]
        try:
            for n in nodes:
                n.netns_etc.mkdir(parents=True)
                n.hosts.write_text(OUTSIDE)
                n.inode = n.hosts.stat().st_ino
            for n in nodes:
                n.service = Service(n.workdir, n.netns, n.config, "--interval", "3")
            for n in nodes:
                n.service.wait_notify("READY=1")
            yield nodes
        finally:
            for n in nodes:
                if n.service is not None:
                    n.service.stop()
                n.cli("down")
            for n in nodes:
                for f in n.netns_etc.iterdir() if n.netns_etc.exists() else ():
                    f.unlink()
                if n.netns_etc.exists():
                    n.netns_etc.rmdir()


def test_nodes_reach_each_other_by_name_through_the_tunnel(named: list[NamedNode]) -> None:
    n1, n2, n3 = named
    short = {n.netns: n.node.node_id[:8].lower() for n in named}
    assert wait_for(lambda: {"node3.mesh", f"{short[n2.netns]}.mesh"} <= n1.names())
    assert wait_for(lambda: {f"{short[n1.netns]}.mesh", f"{short[n2.netns]}.mesh"} <= n3.names())
    for name in ("node3.mesh", f"{short[n3.netns]}.mesh", "NODE3.MESH"):
        proc = n1.ping(name)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert str(tunnel_address(n3.node.node_id)) in proc.stdout  # resolved to the tunnel address
    # The tunnel address is routed into the WireGuard interface, not the underlay.
    route = n1.exec("ip", "-6", "route", "get", str(tunnel_address(n3.node.node_id))).stdout
    assert f"dev {n1.ifname}" in route
    # n3 writes through the bind mount (in place) and pings n1 by its short id.
    proc = n3.ping(f"{short[n1.netns]}.mesh")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert n3.hosts.stat().st_ino == n3.inode  # rewritten in place, under the bind mount
    assert n1.hosts.stat().st_ino != n1.inode  # replaced by a rename
    assert [p.name for p in n1.netns_etc.iterdir()] == ["hosts"]

    # "alpha" is claimed twice: n3 gives it to neither, n1 and n2 see their own name in it.
    for n in named:
        assert "alpha.mesh" not in n.names()
    assert n3.service is not None
    refused = n3.service.wait_journal(f"MESSAGE_ID={events.NAME_REFUSED}", count=2)
    assert {e["BMX7WG_NODE_ID"] for e in refused} >= {n1.node.node_id, n2.node.node_id}
    assert all(n.outside() == OUTSIDE for n in named)

    # show and address know the names.
    shown = json.loads(n1.cli("show", n1.ifname, "--json").stdout)["interfaces"][0]["peers"]
    by_node = {p["node_id"]: p["host_names"] for p in shown}
    assert by_node[n3.node.node_id] == ["node3.mesh", f"{short[n3.netns]}.mesh"]
    assert f"names: node3.mesh, {short[n3.netns]}.mesh" in n1.cli("show", n1.ifname).stdout
    found = json.loads(n1.cli("address", "node3", "--json").stdout)
    assert found["node_id"] == n3.node.node_id
    assert found["tunnel_address"] == str(tunnel_address(n3.node.node_id))


def test_hostile_names_and_a_stop_and_down(named: list[NamedNode]) -> None:
    n1, n2, n3 = named
    assert wait_for(lambda: "node3.mesh" in n1.names())
    # n3 renames itself to something hostile: its name goes, at the next full reconcile.
    n3.node.sim.name = "evil\n10.0.0.9 printer\x1b[2J"
    assert wait_for(lambda: "node3.mesh" not in n1.names())
    assert n1.outside() == OUTSIDE
    text = n1.hosts.read_bytes()
    assert b"evil" not in text and b"\x1b" not in text
    assert n1.service is not None
    match = (f"MESSAGE_ID={events.NAME_REFUSED}", f"BMX7WG_NODE_ID={n3.node.node_id}")
    refused = n1.service.wait_journal(*match)
    assert "\\n10.0.0.9 printer\\x1b[2J" in refused[-1]["MESSAGE"]
    assert "\x1b" not in refused[-1]["MESSAGE"] and "\n" not in refused[-1]["MESSAGE"]
    short3 = f"{n3.node.node_id[:8].lower()}.mesh"
    assert short3 in n1.names()  # its short-id name stays

    # A service stop leaves the names (the peers stay too); `down` takes them.
    before = n1.block()
    n1.service.stop()
    n1.service = None
    assert n1.block() == before
    proc = n1.cli("down")
    assert proc.returncode == 0, proc.stderr
    assert n1.hosts.read_text() == OUTSIDE
    # n3's names go the same way through the bind mount.
    assert n3.service is not None
    n3.service.stop()
    n3.service = None
    assert n3.block()
    assert n3.cli("down").returncode == 0
    assert n3.hosts.read_text() == OUTSIDE
    assert BEGIN not in n2.outside()
    assert sorted(os.listdir(n1.netns_etc)) == ["hosts"]


def test_the_units_sandbox_read_only_dir_and_a_writable_hosts_file(tmp_path: Path) -> None:
    """As bmx7-wg.service makes it (ProtectSystem=strict, ReadWritePaths=-/etc/hosts): the
    directory read-only, the file alone bind-mounted writable. No temporary file can be
    made beside it, so the block is written in place."""
    etc = tmp_path / "etc"
    etc.mkdir()
    hosts = etc / "hosts"
    hosts.write_text(OUTSIDE)
    script = f"""
set -e
mount --bind {etc} {etc}
mount -o remount,bind,ro {etc}
mount --bind {hosts} {hosts}
mount -o remount,bind,rw {hosts}
! touch {etc}/probe 2>/dev/null
exec "$@"
"""
    code = (
        "import sys; from bmx7_wg.net.hostsfile import write_block; "
        "print(write_block(sys.argv[1], ['fd77::1\\tnode3.mesh 89888edf.mesh']))"
    )
    proc = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            *bmx7_wg_command()[:1],
            "-c",
            code,
            str(hosts),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "True"
    assert split(hosts.read_text()).block == ("fd77::1\tnode3.mesh 89888edf.mesh",)
    assert split(hosts.read_text()).before == OUTSIDE
    assert sorted(p.name for p in etc.iterdir()) == ["hosts"]
