"""The mesh behaviour of `bmx7-wg run` against the real bmx7 (`make test-bmx7`).

Each node is a network namespace with a real bmx7 daemon (tests/bmx7/real.py: `BMX7=PATH`,
else scripts/build-bmx7's build from the pinned source) and `bmx7-wg run` on it, next to a
private journald (tests/integration/service.py). The nodes form a line, n1 - n2 - n3, so
that n1 reaches n3 only through n2, along bmx7's own table 70 routes.

bmx7's pace is its own (DESIGN.md, "BMX7 facts"): routes and SMS take seconds, a restarted
middle node brings the far node's SMS back after 6-11 s, a killed node stays in the
others' view for ~68 s. Every wait polls for its condition with a generous limit; the
times printed are measured, not asserted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.service import events
from tests.bmx7.real import RealMesh, RealNode
from tests.integration.service import Service
from tests.integration.test_mesh import Node, device_peers, wait_for

pytestmark = pytest.mark.root

ANNOUNCE = "wg-bmx7"
MESH_TIMEOUT = 120.0  # a line of three real nodes forms in ~5-15 s; the machine may be busy


class Site:
    """A node of the line with `bmx7-wg run` on it (the service is started by `serve`)."""

    def __init__(self, node: RealNode, wg: Node, workdir: Path) -> None:
        self.node = node
        self.wg = wg
        self.workdir = workdir
        self.service: Service | None = None
        self.services: list[Service] = []

    @property
    def name(self) -> str:
        return self.node.name

    def serve(self) -> Service:
        workdir = self.workdir / f"svc{len(self.services) + 1}"
        workdir.mkdir(parents=True)
        self.service = Service(workdir, self.node.netns, self.wg.config_path, run_dir=self.workdir / "state")
        self.services.append(self.service)
        self.svc.wait_notify("READY=1", timeout=60)
        return self.service

    @property
    def svc(self) -> Service:
        assert self.service is not None, f"no service on {self.name}"
        return self.service

    def stop_service(self) -> None:
        if self.service is not None:
            assert self.svc.stop() == 0, self.svc.stderr_path.read_text()
            self.service = None

    def journal(self, *match: str) -> list[dict[str, object]]:
        return [e for svc in self.services for e in svc.journal(*match)]

    def received(self) -> set[str]:
        return self.wg.received()


@pytest.fixture
def line(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[RealMesh, list[Site]]]:
    trusted = bool(getattr(request, "param", False))
    with RealMesh(n=3, trusted_nodes_dir=trusted) as mesh:
        sites = []
        for node in mesh.nodes:
            workdir = tmp_path / node.name
            workdir.mkdir()
            wg = Node(mesh, node, workdir)  # type: ignore[arg-type]  # RealMesh has the stand-in's interface
            wg.configure()
            sites.append(Site(node, wg, workdir))
        try:
            yield mesh, sites
        except BaseException:
            for n in mesh.nodes:
                print(f"--- bmx7 on {n.name}:\n{n.bmx7.log_tail()}")
            raise
        finally:
            for site in sites:
                for svc in site.services:
                    svc.stop()
                site.wg.run("down", check=False)


def others(site: Site, sites: list[Site]) -> set[str]:
    return {s.node.node_id for s in sites if s is not site}


def from_others(site: Site, sites: list[Site]) -> set[str]:
    """The rcvdSms/ entries of the other nodes' announcements (`Node.received` leaves out our own)."""
    return {f"{node_id}:{ANNOUNCE}" for node_id in others(site, sites)}


def wait_full_mesh(sites: list[Site], timeout: float = MESH_TIMEOUT) -> float:
    """Until every node's device has a peer for each other node; seconds it took."""
    start = time.monotonic()
    assert wait_for(lambda: all(len(device_peers(s.wg)) == len(sites) - 1 for s in sites), timeout), {
        s.name: len(device_peers(s.wg)) for s in sites
    }
    for s in sites:
        assert set(s.wg.peers()) == others(s, sites), s.name
    return time.monotonic() - start


def route_to(node: RealNode, address: str) -> str:
    return node.exec("ip", "-6", "route", "get", address).stdout


def ping(site: Site, address: str, timeout: float = 60.0) -> bool:
    return wait_for(lambda: site.wg.ping(address), timeout)


def removed(site: Site) -> list[dict[str, object]]:
    return site.journal(f"MESSAGE_ID={events.PEER_REMOVED}")


def test_line_joins_through_bmx7_routes_and_follows_a_key_change(line: tuple[RealMesh, list[Site]]) -> None:
    """Three nodes become each other's peers; n1's tunnel to n3 has n3's fd70 address as its
    endpoint, which bmx7 routes through n2; a new key on n3 reaches n1 through the mesh."""
    _, sites = line
    a, b, c = sites
    t0 = time.monotonic()
    for s in sites:
        s.serve()
    took = wait_full_mesh(sites)
    print(f"full mesh of three real nodes {time.monotonic() - t0:.1f} s after the services started"
          f" ({took:.1f} s after the last was ready)")
    assert a.received() == from_others(a, sites)
    assert f"{a.node.node_id}:{ANNOUNCE}" in os.listdir(os.path.join(a.node.runtime_dir, "sms", "rcvdSms"))
    peer = a.wg.peers()[c.node.node_id]
    assert peer["endpoint"] == f"[{c.node.primary_ip}]:40456"
    assert peer["tunnel_address"] == c.wg.tunnel_ip
    # n3's fd70 is in bmx7's table 70, via n2's link-local address on the link to n2.
    route = route_to(a.node, c.node.primary_ip)
    assert " via fe80:" in route and " dev bx2 " in route and "table 70" in route, route
    # One router between: n2. Asked until it answers (a loaded machine may drop the first echo).
    replies: list[str] = []

    def underlay_answers() -> bool:
        replies.append(a.node.exec("ping", "-6", "-n", "-c", "1", "-W", "5", c.node.primary_ip,
                                   check=False).stdout)
        return " ttl=" in replies[-1]

    assert wait_for(underlay_answers, 60), replies[-1]
    assert "ttl=63" in replies[-1], replies[-1]
    assert ping(a, c.wg.tunnel_ip), "n1 -> n3 over WireGuard through n2"
    assert ping(c, a.wg.tunnel_ip)
    handshake = a.node.exec("wg", "show", a.wg.ifname, "endpoints").stdout
    assert f"[{c.node.primary_ip}]:40456" in handshake

    # Key change: n3's service stops, its key goes, and the service starts again with a new one.
    old = peer["public_key"]
    c.stop_service()
    c.wg.run("down")
    c.wg.key_path.unlink()
    t1 = time.monotonic()
    c.serve()
    assert wait_for(lambda: (c.node.node_id in a.wg.peers()
                             and a.wg.peers()[c.node.node_id]["public_key"] != old), MESH_TIMEOUT)
    print(f"new key of n3 on n1's device {time.monotonic() - t1:.1f} s after n3's service started")
    assert old not in device_peers(a.wg)
    assert ping(a, c.wg.tunnel_ip)
    assert ping(b, c.wg.tunnel_ip)


@pytest.mark.parametrize("line", [True], indirect=True)
def test_revocation_through_bmx7_trust_and_a_denied_node(line: tuple[RealMesh, list[Site]]) -> None:
    """Trust comes from bmx7's trustedNodesDir, set with `bmx7 -c setTrustedNode=ID`: n1 drops n3's
    peer when bmx7 no longer trusts n3; with trust = "all", a node in `denied` gets no peer."""
    mesh, sites = line
    a, b, c = sites
    for s in sites:  # bmx7 routes only along trusted nodes: everyone trusts everyone first
        for o in sites:
            if o is not s:
                s.node.bmx7.trust(o.node.node_id)
    assert len(os.listdir(a.node.bmx7.trusted_nodes_dir or "")) == 2
    for s in sites:
        s.serve()
    wait_full_mesh(sites)
    c_key = a.wg.peers()[c.node.node_id]["public_key"]
    t0 = time.monotonic()
    a.node.bmx7.distrust(c.node.node_id)
    assert wait_for(lambda: c_key not in device_peers(a.wg), 30)
    print(f"revocation by setTrustedNode=-ID: peer gone {1000 * (time.monotonic() - t0):.0f} ms later")
    entry = a.svc.wait_journal(f"MESSAGE_ID={events.PEER_REMOVED}")[0]
    assert entry["BMX7WG_PEER"] == c_key
    assert set(a.wg.peers()) == {b.node.node_id}
    # Trust comes back: so does the peer.
    a.node.bmx7.trust(c.node.node_id)
    assert wait_for(lambda: c_key in device_peers(a.wg), MESH_TIMEOUT)

    # trust = "all" (bmx7's list ignored), n2 denied by name: n3 stays, n2 goes.
    a.wg.configure(trust="all", bmx7_extra=f'denied = ["{b.node.node_id}"]')
    a.svc.signal(signal.SIGHUP)
    assert wait_for(lambda: set(a.wg.peers()) == {c.node.node_id}, 30)
    refused = a.svc.wait_journal(
        f"MESSAGE_ID={events.ANNOUNCEMENT_REFUSED}", f"BMX7WG_NODE_ID={b.node.node_id}")
    assert "denied" in str(refused[0]["MESSAGE"])
    assert ping(a, c.wg.tunnel_ip), "n1 -> n3 still crosses n2, which is denied only as a peer"
    assert mesh.nodes[0] is a.node


def test_restart_of_the_middle_bmx7_flaps_nothing(line: tuple[RealMesh, list[Site]]) -> None:
    """bmx7 restarts on n2 (wiping its rcvdSms/, forgetting syncSms=): n2's service registers
    its name again, everything comes back, and no node removes a peer meanwhile."""
    _, sites = line
    a, b, c = sites
    for s in sites:
        s.serve()
    wait_full_mesh(sites)
    before = {s.name: device_peers(s.wg) for s in sites}
    t0 = time.monotonic()
    b.node.bmx7.restart()
    assert wait_for(lambda: ANNOUNCE in b.node.bmx7.live_sms, 30)
    registered = time.monotonic() - t0
    assert wait_for(lambda: all(s.received() == from_others(s, sites) for s in sites), MESH_TIMEOUT)
    back = time.monotonic() - t0
    assert ping(a, c.wg.tunnel_ip, MESH_TIMEOUT)
    print(f"middle bmx7 restarted: name registered again after {registered:.1f} s, every SMS back after "
          f"{back:.1f} s, n1 -> n3 over WireGuard after {time.monotonic() - t0:.1f} s")
    restarted = b.svc.wait_journal(f"MESSAGE_ID={events.BMX7_AVAILABLE}")
    assert restarted[0]["BMX7WG_RESTARTED"] == "yes"
    for s in sites:
        assert removed(s) == [], s.name
    assert {s.name: device_peers(s.wg) for s in sites} == before


def test_killed_bmx7_is_reported_and_peers_kept(line: tuple[RealMesh, list[Site]]) -> None:
    """bmx7 is SIGKILLed on n1: n1's service says so in the journal and keeps its peers for (at
    least) the grace; n2 and n3 keep n1's peer too (bmx7 keeps a killed node ~68 s). bmx7 comes
    back: the name is registered again and nothing was removed anywhere."""
    _, sites = line
    a, b, c = sites
    grace = 20  # bmx7 brings n1's received SMS back within it after the restart (~5-11 s)
    for s in sites:
        s.wg.configure(bmx7_extra=f"grace = {grace}")
        s.serve()
    wait_full_mesh(sites)
    before = {s.name: device_peers(s.wg) for s in sites}
    a.node.bmx7.kill()
    assert os.path.exists(a.node.bmx7.socket_path)  # left behind, as after a crash
    down = a.svc.wait_journal(f"MESSAGE_ID={events.BMX7_UNAVAILABLE}", timeout=30)[0]
    assert down["BMX7WG_KEPT"] == "2" and down["BMX7WG_SOCKET"] == a.node.bmx7.socket_path
    assert "bmx7 is not running" in str(down["MESSAGE"])
    shown = a.wg.run("show", a.wg.ifname)
    assert "bmx7 is not running" in shown.stderr
    time.sleep(grace + 3)  # beyond the grace: nothing may have gone
    assert {s.name: device_peers(s.wg) for s in sites} == before
    assert ping(b, c.wg.tunnel_ip)
    t0 = time.monotonic()
    a.node.bmx7.start()
    assert wait_for(lambda: ANNOUNCE in a.node.bmx7.live_sms, 30)
    a.svc.wait_journal(f"MESSAGE_ID={events.BMX7_AVAILABLE}")
    assert wait_for(lambda: a.received() == from_others(a, sites), MESH_TIMEOUT)
    print(f"killed bmx7 started again: every SMS back on n1 after {time.monotonic() - t0:.1f} s")
    assert ping(a, c.wg.tunnel_ip, MESH_TIMEOUT)
    for s in sites:
        assert removed(s) == [], s.name
    assert {s.name: device_peers(s.wg) for s in sites} == before
