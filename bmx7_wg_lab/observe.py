"""What a lab's nodes see right now: bmx7, announcements, WireGuard peers, reachability over fd77.

Reads files and sockets from the root namespace (bmx7's runtime dirs, wireguard-go's UAPI
sockets) and probes reachability with ICMPv6 echo from raw sockets made inside each node's
namespace, so a status of 50 nodes costs no process per node.
"""

from __future__ import annotations

import os
import random
import select
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bmx7_wg.base.nodeid import tunnel_address
from bmx7_wg.errors import Bmx7WgError
from bmx7_wg.wireguard.uapi import UapiClient
from bmx7_wg_lab import netns, procs
from bmx7_wg_lab.lab import ANNOUNCE, WG_SOCKET_DIR, Lab

FULL_MATRIX_UP_TO = 16  # nodes; above that each node probes a sample of the others
SAMPLE = 8  # targets per node when sampling


@dataclass(frozen=True)
class Device:
    peers: Mapping[str, float]  # public key -> last handshake (seconds since the epoch, 0 never)


@dataclass(frozen=True)
class NodeView:
    node: int
    bmx7_up: bool
    service_up: bool
    seen: int | None  # nodes bmx7 knows (its json/status "nodes"), None if unknown
    held: frozenset[int]  # nodes whose announcement this node's bmx7 holds (rcvdSms)
    held_mtime: Mapping[int, float] = field(default_factory=dict)  # when each announcement file was written
    device: Device | None = None  # None: no WireGuard device answers


def read_device(lab: Lab, n: int) -> Device | None:
    name = lab.record.interfaces[n]
    if os.path.exists(os.path.join(WG_SOCKET_DIR, f"{name}.sock")):
        try:
            dev = UapiClient(WG_SOCKET_DIR, timeout=5.0).get(name)
        except Bmx7WgError:
            return None
        return Device({k: dev.stats[k].last_handshake if k in dev.stats else 0.0 for k in dev.peers})
    # Kernel WireGuard: no socket; `wg show dump` inside the namespace.
    try:
        out = subprocess.run(
            ["ip", "netns", "exec", lab.record.namespaces[n], "wg", "show", name, "dump"],
            capture_output=True, text=True, timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    peers = {}
    for line in out.stdout.splitlines()[1:]:
        cols = line.split("\t")
        if len(cols) >= 5:
            peers[cols[0]] = float(cols[4])
    return Device(peers)


def read_node(lab: Lab, n: int, by_id: Mapping[str, int], *, with_device: bool = True) -> NodeView:
    d = lab.record.node_dir(n)
    bmx7 = lab.record.process(n, "bmx7")
    service = lab.record.process(n, "bmx7-wg")
    bmx7_up = bmx7 is not None and procs.alive(bmx7) and os.path.exists(d / "run" / "sock")
    status = lab.status_file(n) if bmx7_up else None
    seen = None
    if status and isinstance(status.get("nodes"), str):
        try:
            seen = int(str(status["nodes"]).split("/")[0])
        except ValueError:
            seen = None
    held: set[int] = set()
    mtimes: dict[int, float] = {}
    suffix = f":{ANNOUNCE}"
    try:
        with os.scandir(d / "run" / "sms" / "rcvdSms") as it:
            for entry in it:
                if entry.name.endswith(suffix):
                    m = by_id.get(entry.name[: -len(suffix)])
                    if m is not None and m != n:
                        held.add(m)
                        try:
                            mtimes[m] = entry.stat().st_mtime
                        except OSError:
                            pass
    except OSError:
        pass
    return NodeView(
        node=n,
        bmx7_up=bmx7_up,
        service_up=service is not None and procs.alive(service),
        seen=seen,
        held=frozenset(held),
        held_mtime=mtimes,
        device=read_device(lab, n) if with_device else None,
    )


def read_all(lab: Lab, *, with_device: bool = True) -> dict[int, NodeView]:
    by_id = {node_id: n for n, node_id in lab.record.node_ids.items()}
    return {n: read_node(lab, n, by_id, with_device=with_device) for n in lab.record.nodes}


def key_owners(lab: Lab) -> dict[str, int]:
    """Public key -> node, from the nodes' key files (the lab holds them all)."""
    owners = {}
    for n in lab.record.nodes:
        key = lab.public_key(n)
        if key:
            owners[key] = n
    return owners


# ---------------------------------------------------------------- reachability


def probe_pairs(lab: Lab, *, rng: random.Random | None = None) -> tuple[list[tuple[int, int]], bool]:
    """The (from, to) pairs a reachability check tries: all, or a sample per node above FULL_MATRIX_UP_TO."""
    nodes = [n for n in lab.record.nodes if n in lab.record.node_ids]
    if len(nodes) <= FULL_MATRIX_UP_TO:
        return [(a, b) for a in nodes for b in nodes if a != b], False
    rng = rng or random.Random()
    pairs = []
    for a in nodes:
        others = [b for b in nodes if b != a]
        pairs += [(a, b) for b in sorted(rng.sample(others, SAMPLE))]
    return pairs, True


class Prober:
    """ICMPv6 echo between nodes' fd77 addresses, from one raw socket per node (made in its namespace)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.sockets: dict[int, socket.socket] = {}
        self.ident = random.randrange(1 << 16)
        self.seq = 0

    def _socket(self, n: int) -> socket.socket:
        sock = self.sockets.get(n)
        if sock is None:
            with netns.inside(self.lab.record.namespaces[n]):
                sock = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
            sock.setblocking(False)
            self.sockets[n] = sock
        return sock

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()
        self.sockets.clear()

    def probe(self, pairs: Iterable[tuple[int, int]], timeout: float = 2.0) -> dict[tuple[int, int], bool]:
        """Send one echo request per pair (again every half second until answered); which pairs answered."""
        ids = self.lab.record.node_ids
        wanted = [(a, b) for a, b in pairs if a in ids and b in ids]
        address = {n: str(tunnel_address(ids[n])) for n in {x for pair in wanted for x in pair}}
        owner = {a: n for n, a in address.items()}
        answered: set[tuple[int, int]] = set()
        socks: dict[socket.socket, int] = {}
        for a, _ in wanted:
            if a not in socks.values():
                try:
                    socks[self._socket(a)] = a
                except OSError:
                    continue
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while len(answered) < len(wanted) and time.monotonic() < deadline:
            if time.monotonic() >= next_send:
                for a, b in wanted:
                    if (a, b) not in answered and a in socks.values():
                        self._send(self._socket(a), address[b])
                next_send = time.monotonic() + 0.5
            ready, _, _ = select.select(list(socks), [], [], 0.05)
            for sock in ready:
                while True:
                    try:
                        data, src = sock.recvfrom(2048)
                    except (BlockingIOError, OSError):
                        break
                    if len(data) >= 8 and data[0] == 129 and struct.unpack("!H", data[4:6])[0] == self.ident:
                        target = owner.get(src[0].split("%")[0])
                        if target is not None:
                            answered.add((socks[sock], target))
        return {pair: pair in answered for pair in wanted}

    def _send(self, sock: socket.socket, address: str) -> None:
        self.seq = (self.seq + 1) & 0xFFFF
        # Type 128 (echo request); the kernel fills in the checksum of an ICMPv6 raw socket.
        packet = struct.pack("!BBHHH", 128, 0, 0, self.ident, self.seq) + b"bmx7-wg-lab"
        try:
            sock.sendto(packet, (address, 0))
        except OSError:
            pass  # no route yet: that pair simply does not answer
