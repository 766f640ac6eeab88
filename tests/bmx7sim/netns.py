"""An N-node BMX7 stand-in mesh in network namespaces, with its fd70 underlay routed.

    with Mesh(n=3) as mesh:
        node = mesh.nodes[0]
        node.netns, node.runtime_dir, node.node_id, node.primary_ip, node.sim

Every node gets a namespace and a veth `bx0` into one bridge (in a hub namespace).
Like bmx7, each node carries its fd70 primary address with prefix length 16 on its
bmx7 device, so every primary address is on-link. Static neighbour entries avoid the
lost first IPv6 neighbour lookup (see ENVIRONMENT.md). Everything is removed on exit,
also after a failed setup. Needs root.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from dataclasses import dataclass

from .sim import SimMesh, SimNode, make_node_id, wipe


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def _mac(index: int, token: str) -> str:
    return f"02:b7:{token[0:2]}:{token[2:4]}:{index >> 8:02x}:{index & 0xFF:02x}"


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
    def __init__(self, n: int = 3, *, delay: float = 0.3, netns: bool = True,
                 trusted_nodes_dir: bool = False, sync_sms: tuple[str, ...] = (),
                 base_dir: str | None = None) -> None:
        self.n = n
        self.token = secrets.token_hex(2)
        self.use_netns = netns
        self.hub = f"b7s{self.token}hub"
        self.base_dir = base_dir or tempfile.mkdtemp(prefix=f"bmx7sim-{self.token}-")
        self.sim = SimMesh(delay=delay)
        self.nodes: list[MeshNode] = []
        self._trusted = trusted_nodes_dir
        self._sync_sms = sync_sms
        self._namespaces: list[str] = []

    def __enter__(self) -> Mesh:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        if self.use_netns:
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
            node = MeshNode(i, f"b7s{self.token}n{i + 1}", runtime_dir, sim, _mac(i + 1, self.token))
            self.nodes.append(node)
            if self.use_netns:
                self._wire(node)
        if self.use_netns:
            for node in self.nodes:
                for other in self.nodes:
                    if other is not node:
                        _ip("-6", "neigh", "replace", other.primary_ip, "lladdr", other.mac,
                            "nud", "permanent", "dev", "bx0", netns=node.netns)
        for node in self.nodes:
            self.sim.add(node.sim)
        self.sim.start()

    def _add_netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name)

    def _wire(self, node: MeshNode) -> None:
        self._add_netns(node.netns)
        peer = f"b7h{node.index + 1}"
        _ip("link", "add", "bx0", "address", node.mac, "netns", node.netns,
            "type", "veth", "peer", "name", peer, "netns", self.hub)
        _ip("link", "set", peer, "master", "br0", "up", netns=self.hub)
        _ip("-6", "addr", "add", f"{node.primary_ip}/16", "dev", "bx0", "nodad", netns=node.netns)
        _ip("link", "set", "bx0", "up", netns=node.netns)

    def close(self) -> None:
        self.sim.stop()
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._namespaces.clear()
        wipe(self.base_dir)

    def node(self, name: str) -> MeshNode:
        return next(n for n in self.nodes if n.name == name)
