"""An N-node BMX7 stand-in mesh in network namespaces, with its fd70 underlay routed as bmx7 does.

    with Mesh(n=3) as mesh:
        node = mesh.nodes[0]
        node.netns, node.runtime_dir, node.node_id, node.primary_ip, node.sim

The default topology is a line, n1 - n2 - n3 ...: neighbours are joined by a veth, named
in node i's namespace `bx<j>` for the link to node j. As bmx7 does on every dev it
runs on (see the fixtures' trust-step1b-and-routes.txt), each node carries its fd70
primary address with prefix length 16 on each of its devs, a rule `pref 70 lookup 70`,
IPv6 forwarding, and in table 70 one route per known node, via the next hop's
link-local address: `fd70:...:x via fe80::... dev bxN proto static metric 1024`. So
n1 reaches n3 only through n2 (hop limit 63 on arrival). The routes follow the stand-in's
view (sim.py): withdrawn while a restarted node has not brought them back, kept through a
killed node until its timeout. Static neighbour entries avoid the lost first IPv6
neighbour lookup of a fresh veth (see ENVIRONMENT.md).

`topology="hub"` keeps the old underlay: every node on one bridge, fd70 on-link.

`Mesh(names=[...], create=False)` does only bmx7's part in namespaces that exist already,
wired as above (the demo makes them). Everything the mesh made is removed on exit, also
after a failed setup. Needs root.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .sim import SimMesh, SimNode, Timings, make_node_id, wipe

BMX7_TABLE = "70"
BMX7_RULE_PREF = "70"


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True)


def _sysctl(netns: str, key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"],
                   check=True, capture_output=True, text=True)


def _mac(index: int, token: str) -> str:
    return f"02:b7:{token[0:2]}:{token[2:4]}:{index >> 8:02x}:{index & 0xFF:02x}"


def dev_name(to_index: int) -> str:
    """The dev in a node's namespace that leads to node `to_index` (1-based)."""
    return f"bx{to_index}"


@dataclass
class MeshNode:
    index: int
    netns: str
    runtime_dir: str
    sim: SimNode
    mac: str

    @property
    def node_id(self) -> str:
        return self.sim.node_id

    @property
    def name(self) -> str:
        return self.sim.name

    @property
    def primary_ip(self) -> str:
        return self.sim.primary_ip

    def exec(self, *cmd: str, check: bool = True, timeout: float = 30,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside this node's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], check=check,
                              capture_output=True, text=True, timeout=timeout, env=env)


class Mesh:
    def __init__(self, n: int = 3, *, delay: float | None = 0.3, netns: bool = True,
                 trusted_nodes_dir: bool = False, sync_sms: tuple[str, ...] = (),
                 base_dir: str | None = None, topology: str = "line",
                 timings: Timings | None = None, seed: int | None = None,
                 names: Sequence[str] | None = None, create: bool = True) -> None:
        if topology not in ("line", "hub"):
            raise ValueError(f"unknown topology {topology!r}")
        self.n = len(names) if names else n
        self.token = secrets.token_hex(2)
        self.use_netns = netns
        self.topology = topology
        self.create = create
        self.hub = f"b7s{self.token}hub"
        self._own_dir = base_dir is None  # removed on exit only if made here
        self.base_dir = base_dir or tempfile.mkdtemp(prefix=f"bmx7sim-{self.token}-")
        self.sim = SimMesh(delay=delay, timings=timings, seed=seed)
        self.nodes: list[MeshNode] = []
        self._names = list(names) if names else [f"b7s{self.token}n{i + 1}" for i in range(self.n)]
        self._trusted = trusted_nodes_dir
        self._sync_sms = sync_sms
        self._namespaces: list[str] = []
        self._routes: dict[str, dict[str, tuple[str, str]]] = {}  # netns -> dest ip -> (via, dev)
        self._lladdr: dict[tuple[str, str], str] = {}  # (netns, dev) -> its link-local address
        self._route_lock = threading.Lock()

    def __enter__(self) -> Mesh:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def line(self) -> bool:
        return self.use_netns and self.topology == "line"

    def _setup(self) -> None:
        if self.use_netns and self.topology == "hub":
            self._add_netns(self.hub)
            _ip("link", "add", "br0", "type", "bridge", netns=self.hub)
            _ip("link", "set", "br0", "up", netns=self.hub)
        for i in range(self.n):
            name = f"node{i + 1}"
            runtime_dir = os.path.join(self.base_dir, name, "run")
            trusted = os.path.join(self.base_dir, name, "trustedNodes") if self._trusted else None
            if trusted:
                os.makedirs(trusted, exist_ok=True)
            sim = SimNode(runtime_dir, name, node_id=make_node_id(), sync_sms=self._sync_sms,
                          trusted_nodes_dir=trusted)
            node = MeshNode(i, self._names[i], runtime_dir, sim, _mac(i + 1, self.token))
            self.nodes.append(node)
        if self.line:
            self._wire_line()
        elif self.use_netns:
            for node in self.nodes:
                self._wire_hub(node)
            for node in self.nodes:
                for other in self.nodes:
                    if other is not node:
                        _ip("-6", "neigh", "replace", other.primary_ip, "lladdr", other.mac,
                            "nud", "permanent", "dev", "bx0", netns=node.netns)
        for node in self.nodes:
            self.sim.add(node.sim, neighbours=[] if self.line else None)
        if self.line:
            for a, b in itertools.pairwise(self.nodes):
                self.sim.link(a.sim, b.sim)
            self.sync_routes()
            self.sim.observers.append(self.sync_routes)
        self.sim.start()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name)

    def _wire_hub(self, node: MeshNode) -> None:
        self._add_netns(node.netns)
        peer = f"b7h{node.index + 1}"
        _ip("link", "add", "bx0", "address", node.mac, "netns", node.netns,
            "type", "veth", "peer", "name", peer, "netns", self.hub)
        _ip("link", "set", peer, "master", "br0", "up", netns=self.hub)
        _ip("-6", "addr", "add", f"{node.primary_ip}/16", "dev", "bx0", "nodad", netns=node.netns)
        _ip("link", "set", "bx0", "up", netns=node.netns)

    def _wire_line(self) -> None:
        if self.create:
            for node in self.nodes:
                self._add_netns(node.netns)
                # No duplicate address detection: link-local addresses usable at once.
                for conf in ("all", "default"):
                    _sysctl(node.netns, f"net.ipv6.conf.{conf}.accept_dad", "0")
            for a, b in itertools.pairwise(self.nodes):
                _ip("link", "add", dev_name(b.index + 1), "netns", a.netns, "type", "veth",
                    "peer", "name", dev_name(a.index + 1), "netns", b.netns)
        for node in self.nodes:
            devs = [dev_name(o.index + 1) for o in self._line_neighbours(node)]
            node.sim.devs = tuple(devs)
            node.sim.dev = devs[0] if devs else "bx0"
            # What bmx7 does where it runs: forwarding, its rule, its primary address per dev.
            _sysctl(node.netns, "net.ipv6.conf.all.forwarding", "1")
            _ip("-6", "rule", "add", "pref", BMX7_RULE_PREF, "lookup", BMX7_TABLE, netns=node.netns)
            for dev in devs:
                _ip("link", "set", dev, "up", netns=node.netns)
                _ip("-6", "addr", "add", f"{node.primary_ip}/16", "dev", dev, "nodad", netns=node.netns)
        for node in self.nodes:
            for other in self._line_neighbours(node):
                dev, peer_dev = dev_name(other.index + 1), dev_name(node.index + 1)
                node.sim.dev_to[other.node_id] = dev
                ll, mac = self._link_local(other.netns, peer_dev)
                self._lladdr[(other.netns, peer_dev)] = ll
                _ip("-6", "neigh", "replace", ll, "lladdr", mac, "nud", "permanent", "dev", dev,
                    netns=node.netns)

    def _line_neighbours(self, node: MeshNode) -> list[MeshNode]:
        return [o for o in self.nodes if abs(o.index - node.index) == 1]

    @staticmethod
    def _link_local(netns: str, dev: str, timeout: float = 20.0) -> tuple[str, str]:
        # The kernel adds the fe80 address once it has seen the carrier come up, which its
        # link watcher reports up to a second late (more under emulation): wait for it.
        deadline = time.monotonic() + timeout
        while True:
            out = json.loads(_ip("-j", "-6", "addr", "show", "dev", dev, "scope", "link", netns=netns).stdout)
            for entry in out:
                for addr in entry.get("addr_info", []):
                    if addr.get("family") == "inet6":
                        link = json.loads(_ip("-j", "link", "show", "dev", dev, netns=netns).stdout)[0]
                        return str(addr["local"]), str(link["address"])
            if time.monotonic() > deadline:
                raise RuntimeError(f"{netns}: {dev} has no IPv6 link-local address after {timeout:.0f} s")
            time.sleep(0.05)

    def sync_routes(self) -> None:
        """Make every namespace's table 70 match the stand-in's routes (only the difference)."""
        by_id = {n.node_id: n for n in self.nodes}
        with self._route_lock:
            for node in self.nodes:
                routes = self.sim.routes(node.sim, only=lambda n: n.node_id in by_id)
                if routes is None:  # a killed bmx7 leaves its routes behind
                    continue
                want: dict[str, tuple[str, str]] = {}
                for dest_id, via in routes.items():
                    dest, hop = by_id.get(dest_id), by_id.get(via.node_id)
                    if dest is None or hop is None or abs(hop.index - node.index) != 1:
                        continue  # a node of the radio only: no namespace, no address
                    ll = self._lladdr[(hop.netns, dev_name(node.index + 1))]
                    want[dest.primary_ip] = (ll, dev_name(hop.index + 1))
                have = self._routes.setdefault(node.netns, {})
                for ip in [ip for ip in have if ip not in want]:
                    _ip("-6", "route", "del", f"{ip}/128", "table", BMX7_TABLE, netns=node.netns,
                        check=False)
                    del have[ip]
                for ip, (ll, dev) in want.items():
                    if have.get(ip) != (ll, dev):
                        _ip("-6", "route", "replace", f"{ip}/128", "via", ll, "dev", dev, "table",
                            BMX7_TABLE, "proto", "static", "metric", "1024", netns=node.netns,
                            check=False)
                        have[ip] = (ll, dev)

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            self.sim.observers.remove(self.sync_routes)
        self.sim.stop()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._namespaces.clear()
        if self._own_dir:
            wipe(self.base_dir)

    def node(self, name: str) -> MeshNode:
        return next(n for n in self.nodes if n.name == name)
