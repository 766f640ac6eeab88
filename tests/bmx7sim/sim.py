"""A stand-in for the parts of bmx7 that bmx7-wg touches, for N nodes in one process.

Per node (`SimNode`), in its own runtime directory:
- `json/status`, `json/originators/<NODEID>`, `json/parameters`, in bmx7's exact
  json-c formatting (see jsonc.py and the fixture tests);
- the control socket `<runtime_dir>/sock`, speaking bmx7's protocol: one read of the
  command words ending in "#", output, then "$" on success or a close without "$"
  after an error; commands `jshow=status|originators`, `parameters`, `syncSms=NAME`,
  `syncSms=-NAME`, `trustedNodesDir=DIR`;
- SMS: `sms/sendSms/NAME` is published only while NAME is registered; the other nodes
  get `sms/rcvdSms/<SENDERID>:NAME` hop by hop (see `Timings`), and the node itself
  gets its own copy at once, as bmx7 does; a changed file is rewritten, a deleted file
  or unregistered name removes the copies; `rcvdSms/` is wiped when a node (re)starts.

`SimMesh` is the "radio": a thread that moves SMS between its nodes along its links
(every node hears every other when no links are given). What happens when a node goes
away is what a real line of three nodes showed (DESIGN.md, "BMX7 facts"):
- `restart()` (or `start()` after a stop): the node wipes its `rcvdSms/`; the others
  lose its SMS, and that of the nodes they reach only through it, at once; it carries
  descriptions again after `Timings.rejoin` (so the far node's SMS is back on the near
  node after 6-11 s) and its fd70 routes come back after `Timings.fd70_down` (12-17 s);
- `kill()` (SIGKILL, power cut): nothing tells the others; they keep its SMS, its
  originator and their routes through it for `Timings.node_timeout` (~68 s);
- `stop()`: the node leaves and the others forget it at once (a stand-in shortcut for
  tests that do not wait for bmx7's timeout).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from . import jsonc

MAX_UNIX_MSG_SIZE = 2000
SMS_NAME_MAX = 15
ORDERED_OPTIONS = ("runtimeDir", "plugin", "nodeRsaKey", "hostname", "syslog", "dev",
                   "descSqnPath", "trustedNodesDir", "jsonUpdateInterval", "syncSms")
DEFAULTS = {"runtimeDir": "/var/run/bmx7", "descSqnPath": "/etc/bmx7/descSqn",
            "jsonUpdateInterval": "60000", "nodeRsaKey": "6", "syslog": "1",
            "trustedNodesDir": "/etc/bmx7/trustedNodes", "keyPath": "/etc/bmx7/rsa.der"}

Range = tuple[float, float]


@dataclass(frozen=True)
class Timings:
    """bmx7's delays, as measured on a real line of three nodes (DESIGN.md, issue 17).

    A range is drawn from uniformly, once per delivery.
    """

    first_hop: Range = (0.3, 1.0)  # a new SMS reaches a direct neighbour
    next_hop: Range = (1.4, 2.1)  # each further hop: two hops take ~2.4 s
    # A changed SMS: 0.3-5 s to a neighbour, 2.9-6.9 s over two hops on a real line
    # (tests/bmx7/test_conformance.py); the long ones when the change follows the node's
    # previous new description within seconds (not modelled): each further hop is slower.
    change: Range = (0.2, 0.9)  # the first hop
    change_next_hop: Range = (2.4, 3.6)  # each further hop
    # A withdrawn SMS (syncSms=-NAME, or its sendSms file removed) is gone on a node two hops
    # away within 0.1-0.2 s (tests/bmx7/test_conformance.py): bmx7 sends the new description at once.
    delete: float = 0.1  # per hop
    # After a restart, until the node carries descriptions again: with two hops of delivery
    # the far node's SMS is back on the near node 6-11 s after the middle node restarted.
    rejoin: Range = (3.9, 8.2)
    fd70_down: Range = (12.0, 17.0)  # after a restart, until routes through the node are back
    node_timeout: float = 68.0  # a killed node stays in the others' view this long

    @classmethod
    def flat(cls, delay: float, **changes: object) -> Timings:
        """Every hop of every kind of delivery takes `delay` (restart and timeout stay real)."""
        base = cls(first_hop=(delay, delay), next_hop=(delay, delay), change=(delay, delay),
                   change_next_hop=(delay, delay), delete=delay)
        return replace(base, **changes)  # type: ignore[arg-type]


def make_node_id(modulus: bytes | None = None) -> str:
    """A node id as bmx7 derives it: SHA224(0x00 || keyType 6 (RSA2048) || modulus)."""
    if modulus is None:
        # A random odd 2048-bit number with the top bit set stands in for an RSA modulus.
        raw = bytearray(os.urandom(256))
        raw[0] |= 0x80
        raw[-1] |= 1
        modulus = bytes(raw)
    return hashlib.sha224(b"\x00\x06" + modulus).hexdigest().upper()


def primary_ip(node_id: str) -> str:
    import ipaddress

    return str(ipaddress.IPv6Address(b"\xfd\x70" + bytes.fromhex(node_id)[:14]))


def _change_line(option: str, value: str | None) -> str:
    """bmx7's "--%-22s %c%-30s" change notice (or "--%-22s -" for a removal)."""
    if value is None:
        return f"INFO  : --{option:<22} -\n"
    return f"INFO  : --{option:<22}  {value:<30}\n"


@dataclass
class SimNode:
    runtime_dir: str
    name: str
    node_id: str = field(default_factory=make_node_id)
    sync_sms: tuple[str, ...] = ()  # registered at start (like syncSms=NAME on the command line)
    trusted_nodes_dir: str | None = None  # None: option not configured, every node trusted
    dev: str = "bx0"
    mesh: SimMesh | None = None
    devs: tuple[str, ...] = ()  # every dev= of the node (default: just `dev`)

    def __post_init__(self) -> None:
        self.live_sms: list[str] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.running = False
        self.state = "new"  # "up", "left" (stop), "dead" (kill)
        self.stopped_at = 0.0
        self.join_at = 0.0  # from then on it carries descriptions (SMS)
        self.route_at = 0.0  # from then on routes to and through it exist
        self.starts = 0
        self.dev_to: dict[str, str] = {}  # neighbour node id -> the dev leading to it
        self.commands: list[str] = []  # every command stream received, for tests

    # ------------------------------------------------------------ lifecycle

    @property
    def short_id(self) -> str:
        return self.node_id[:8]

    @property
    def primary_ip(self) -> str:
        return primary_ip(self.node_id)

    @property
    def socket_path(self) -> str:
        return os.path.join(self.runtime_dir, "sock")

    def start(self) -> None:
        for sub in ("json/originators", "json/descriptions", "sms/sendSms", "sms/rcvdSms"):
            os.makedirs(os.path.join(self.runtime_dir, sub), exist_ok=True)
        # bmx7 wipes the received SMS at every start.
        rcvd = os.path.join(self.runtime_dir, "sms", "rcvdSms")
        for entry in os.listdir(rcvd):
            os.unlink(os.path.join(rcvd, entry))
        self.live_sms = list(self.sync_sms)
        self.started = time.monotonic()
        if self.mesh is not None:
            self.mesh.starting(self)
        self.starts += 1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # bmx7 unlinks a stale socket it cannot connect to
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.socket_path)
        server.listen(10)
        self._server = server
        self.running = True
        self.state = "up"
        self.write_json()
        self._thread = threading.Thread(target=self._serve, name=f"bmx7sim-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The node leaves: the others forget it at once. The socket file stays (stale)."""
        self._halt("left")

    def kill(self) -> None:
        """Like SIGKILL: socket and files stay; the others keep it for `node_timeout`."""
        self._halt("dead")

    def _halt(self, state: str) -> None:
        if self.running:
            self.stopped_at = time.monotonic()
            self.state = state
        self.running = False
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def restart(self) -> None:
        self.stop()
        self.start()

    # ------------------------------------------------------------ JSON plugin

    def status(self) -> dict[str, object]:
        uptime = int(time.monotonic() - self.started)
        nodes = len(self.known_nodes())
        nbs = len(self.mesh.neighbours(self)) if self.mesh else 0
        return {"status": {
            "shortId": self.short_id, "nodeId": self.node_id, "name": self.name,
            "nodeKey": "RSA2048", "linkKeys": "RSA1024,DH2048M112",
            "shortDhash": self.node_id[-8:], "dhash": self.node_id[::-1],
            "version": "BMX7-0.2", "cv": 21, "revision": "9020896",
            "primaryIp": self.primary_ip, "tun6Address": "---", "tun4Address": "---",
            "descSqn": self.starts or 1, "lastDesc": 0, "ogmSqn": 1, "aggSize": 1, "aggMax": 9,
            "aggSend": 9,
            "uptime": f"0:{uptime // 3600:02d}:{uptime // 60 % 60:02d}:{uptime % 60:02d}",
            "cpu": "0.0", "mem": "5124K", "txQ": "0/50", "rxBpP": "0/0.0", "txBpP": "0/0.0",
            "nbs": nbs, "rts": max(nodes - 1, 0), "nodes": f"{nodes}/{nodes}",
            "descRefs": "8/8",
        }}

    def originator(self, other: SimNode) -> dict[str, object]:
        me = other is self
        hops, via = (0, None) if me or self.mesh is None else self.mesh.path(self, other)
        nb = via or other
        return {
            "shortId": other.short_id, "nodeId": other.node_id, "name": other.name,
            "assessedState": "neighboringQualifying", "as": "nQ", "pref": 9999 if me else 5001,
            "brcTo": 0, "signTo": 0, "tAPTo": 0, "nQTo": 0, "friend": 3 if me else 0, "recom": 0,
            "trustees": 0, "S": "A", "s": "A", "T": "A", "t": "A", "myIid": 1,
            "shortDHash": other.node_id[-8:], "descSqn": other.starts or 1,
            "descSqnMin": other.starts or 1, "lastDesc": 0,
            "descSize": "575+702", "descRefs": "8/8", "cv": "21", "revision": "9020896",
            "nodeKey": "RSA2048", "linkKeys": "RSA1024,DH2048M112", "primaryIp": other.primary_ip,
            "dev": "---" if me else self.dev_to.get(nb.node_id, self.dev), "myIdx": 0, "nbIdx": 0,
            "nbLocalIp": "::",
            "nbShortId": "---" if me else nb.short_id, "nbNodeId": "---" if me else nb.node_id,
            "nbName": "---" if me else nb.name, "metric": "257G" if me else "999M",
            "ogmHist": "0/5", "hops": 0 if me else max(hops, 1), "ogmSqn": 1, "nbIid": 0,
            "lastRef": 0, "nbs": 1,
        }

    def known_nodes(self) -> list[SimNode]:
        nodes = self.mesh.view(self) if self.mesh else []
        return sorted({n.node_id: n for n in [self, *nodes]}.values(), key=lambda n: n.node_id)

    def parameters(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        params: list[tuple[str, str, list[tuple[str, str]]]] = [
            ("runtimeDir", self.runtime_dir, []),
            ("plugin", "bmx7_json.so", []), ("plugin", "bmx7_sms.so", []),
            ("nodeRsaKey", "6", [("keyPath", os.path.join(self.runtime_dir, "rsa.der"))]),
            ("hostname", self.name, []), ("syslog", "0", []),
            *(("dev", dev, []) for dev in (self.devs or (self.dev,))),
        ]
        if self.trusted_nodes_dir is not None:
            params.append(("trustedNodesDir", self.trusted_nodes_dir, []))
        params += [("syncSms", name, []) for name in self.live_sms]
        return params

    def parameters_text(self) -> str:
        lines = ["PARAMETERS:\n"]
        for name, value, children in self.parameters():
            default = DEFAULTS.get(name, "0")
            lines.append(f" {name:<22} {value:<20} ({default}) \n")
            for cname, cvalue in children:
                lines.append(f"    /{cname:<18} {cvalue:<20} ({DEFAULTS.get(cname, '0')}) \n")
        return "".join(lines)

    def parameters_json(self) -> dict[str, object]:
        options: list[dict[str, object]] = []
        for name, value, children in self.parameters():
            instance: dict[str, object] = {"value": value}
            if children:
                instance["CHILD_INSTANCES"] = [{"name": c, "value": v} for c, v in children]
            if options and options[-1]["name"] == name:
                options[-1]["INSTANCES"].append(instance)  # type: ignore[attr-defined]
            else:
                options.append({"name": name, "INSTANCES": [instance]})
        return {"OPTIONS": options}

    def write_json(self) -> None:
        """What bmx7_json writes every jsonUpdateInterval."""
        jdir = os.path.join(self.runtime_dir, "json")
        _write(os.path.join(jdir, "status"), jsonc.dumps(self.status()) + "\n")
        _write(os.path.join(jdir, "parameters"), jsonc.dumps(self.parameters_json()) + "\n")
        odir = os.path.join(jdir, "originators")
        known = {n.node_id: n for n in self.known_nodes()}
        for entry in os.listdir(odir):
            if entry not in known:
                os.unlink(os.path.join(odir, entry))
        for node_id, node in known.items():
            _write(os.path.join(odir, node_id), jsonc.dumps(self.originator(node)) + "\n")

    # ------------------------------------------------------------ control socket

    def _serve(self) -> None:
        server = self._server
        while self.running and server is not None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    data = conn.recv(MAX_UNIX_MSG_SIZE)
                except OSError:
                    continue
                if not data:
                    continue
                answer, ok = self.handle(data.decode(errors="replace"))
                with contextlib.suppress(OSError):
                    conn.sendall(answer.encode() + (b"$" if ok else b""))

    def handle(self, stream: str) -> tuple[str, bool]:
        """Apply one command stream; return (output, success)."""
        self.commands.append(stream)
        words = stream.split()
        if not words or words[-1] != "#":
            return "ERROR apply_stream_opts: invalid argument: " + (words[-1] if words else "") \
                + "\n", False
        out: list[str] = []
        with self._lock:
            for word in words[:-1]:
                result = self._apply(word, out)
                if not result:
                    out.append(f"ERROR apply_stream_opts: invalid argument: {word.split('=', 1)[-1]}\n")
                    return "".join(out), False
            self.write_json()
        return "".join(out), True

    def _apply(self, word: str, out: list[str]) -> bool:
        option, _, value = word.partition("=")
        if word == "parameters":
            out.append(self.parameters_text())
        elif option == "jshow" and value == "status":
            out.append(jsonc.dumps(self.status()) + "\n")
        elif option == "jshow" and value == "originators":
            out.append(jsonc.dumps({"originators": [self.originator(n)
                                                    for n in self.known_nodes()]}) + "\n")
        elif option == "syncSms" and value.startswith("-"):
            name = value[1:]
            if name in self.live_sms:
                self.live_sms.remove(name)
                out.append(_change_line("syncSms", None))
        elif option == "syncSms":
            if not value or len(value) > SMS_NAME_MAX:
                out.append(f"ERROR : --syncSms  {value}  #  Failed ! ( diff:0 ad:0 val:0 min:0 "
                           f"max:0 def:0  OPT_CHECK 5 1 {len(value)} )\n")
                return False
            if value not in self.live_sms:
                self.live_sms.append(value)
                out.append(_change_line("syncSms", value))
        elif option == "trustedNodesDir" and value.startswith("/"):
            os.makedirs(value, exist_ok=True)
            self.trusted_nodes_dir = value
            out.append(f"INFO  : --{'trustedNodesDir':<22}  {value:<30}\n")
        else:
            return False
        return True


def _write(path: str, text: str) -> None:
    # bmx7_json opens with O_TRUNC and writes in place; a reader may see a short file.
    with open(path, "w") as fh:
        fh.write(text)


@dataclass
class _Published:
    data: bytes
    since: float  # when this content appeared
    seq: int  # bumped at every change, so that each version draws its own delays


class SimMesh:
    """Moves SMS between nodes along their links, like BMX7 descriptions do.

    `delay`: a number makes every hop of every delivery take that long (`Timings.flat`);
    None uses the measured `Timings`. `timings` overrides both. `links`: None lets every
    node hear every other (one hop); `link(a, b)` builds another topology.
    """

    def __init__(self, delay: float | None = 0.3, poll: float = 0.05, *,
                 timings: Timings | None = None, seed: int | None = None) -> None:
        self.nodes: list[SimNode] = []
        if timings is None:
            timings = Timings() if delay is None else Timings.flat(delay)
        self.timings = timings
        self.poll = poll
        self.rng = random.Random(seed)
        self.links: dict[str, set[str]] | None = None
        self.lock = threading.RLock()
        self.observers: list[Callable[[], None]] = []  # called after every round (routes)
        self._published: dict[tuple[str, str], _Published] = {}
        self._withdrawn: dict[tuple[str, str], float] = {}
        self._seq = 0
        self._connected: dict[tuple[str, str], float] = {}  # (receiver, sender) -> since
        self._drawn: dict[tuple[object, ...], float] = {}
        self._known: dict[str, frozenset[str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def delay(self) -> float:
        """The delay of one hop of a new SMS (its lower bound when drawn from a range)."""
        return self.timings.first_hop[0]

    def add(self, node: SimNode, start: bool = True,
            neighbours: Iterable[SimNode] | None = None) -> SimNode:
        """Add a node; with explicit links and no `neighbours`, it hears every node directly."""
        node.mesh = self
        with self.lock:
            others = list(self.nodes) if neighbours is None else list(neighbours)
            self.nodes.append(node)
            if self.links is not None:
                self.links.setdefault(node.node_id, set())
                for other in others:
                    self.link(node, other)
        if start:
            node.start()
        return node

    def link(self, a: SimNode, b: SimNode) -> None:
        """A direct link between a and b (the first call ends "everyone hears everyone")."""
        with self.lock:
            if self.links is None:
                self.links = {n.node_id: set() for n in self.nodes}
            self.links.setdefault(a.node_id, set()).add(b.node_id)
            self.links.setdefault(b.node_id, set()).add(a.node_id)

    def running_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes if n.running]

    def start(self) -> SimMesh:
        self._thread = threading.Thread(target=self._run, name="bmx7sim-mesh", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> SimMesh:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ who reaches whom

    def starting(self, node: SimNode) -> None:
        """Called by a node as it starts: a restart rejoins only after bmx7's delays."""
        now = time.monotonic()
        if node.starts == 0:
            node.join_at = node.route_at = now
        else:
            node.join_at = now + self.rng.uniform(*self.timings.rejoin)
            node.route_at = now + self.rng.uniform(*self.timings.fd70_down)

    def _lingers(self, node: SimNode, now: float) -> bool:
        return node.state == "dead" and now < node.stopped_at + self.timings.node_timeout

    def _carries(self, node: SimNode, now: float) -> bool:
        return node.running and now >= node.join_at

    def _routes_through(self, node: SimNode, now: float) -> bool:
        return (node.running and now >= node.route_at) or self._lingers(node, now)

    def _in_view(self, node: SimNode, now: float) -> bool:
        return self._carries(node, now) or self._lingers(node, now)

    def _adjacent(self, node: SimNode) -> list[SimNode]:
        if self.links is None:
            return [n for n in self.nodes if n is not node]
        ids = self.links.get(node.node_id, set())
        return [n for n in self.nodes if n.node_id in ids]

    def _bfs(self, origin: SimNode, member: Callable[[SimNode], bool]) -> dict[str, tuple[int, SimNode]]:
        """node id -> (hops, first hop) for every node reached through members."""
        found: dict[str, tuple[int, SimNode]] = {}
        frontier: list[tuple[SimNode, SimNode | None]] = [(origin, None)]
        seen = {origin.node_id}
        hops = 0
        while frontier:
            hops += 1
            nxt: list[tuple[SimNode, SimNode | None]] = []
            for node, first in frontier:
                for other in sorted(self._adjacent(node), key=lambda n: n.node_id):
                    if other.node_id in seen or not member(other):
                        continue
                    seen.add(other.node_id)
                    via = first or other
                    found[other.node_id] = (hops, via)
                    nxt.append((other, via))
            frontier = nxt
        return found

    def neighbours(self, node: SimNode) -> list[SimNode]:
        now = time.monotonic()
        with self.lock:
            return [n for n in self._adjacent(node) if self._in_view(n, now)]

    def view(self, node: SimNode) -> list[SimNode]:
        """The nodes this node's bmx7 knows (json/originators), itself excluded."""
        now = time.monotonic()
        with self.lock:
            if not self._carries(node, now):
                return []
            reached = self._bfs(node, lambda n: self._in_view(n, now))
            return [n for n in self.nodes if n.node_id in reached]

    def path(self, node: SimNode, other: SimNode) -> tuple[int, SimNode | None]:
        """(hops, next hop) from node to other in node's view; (0, None) if unknown."""
        now = time.monotonic()
        with self.lock:
            hops, via = self._bfs(node, lambda n: self._in_view(n, now)).get(other.node_id, (0, None))
            return hops, via

    def routes(self, node: SimNode, only: Callable[[SimNode], bool] | None = None
               ) -> dict[str, SimNode] | None:
        """bmx7's table-70 routes on this node: destination id -> next hop.

        None while the node is dead (a killed bmx7 leaves its routes as they are);
        empty while it is stopped or has not brought its routes back after a restart.
        `only`: the nodes that have an underlay to route over (the others carry SMS only).
        """
        now = time.monotonic()
        with self.lock:
            if node.state == "dead":
                return None
            if not (node.running and now >= node.route_at):
                return {}
            reached = self._bfs(node, lambda n: self._routes_through(n, now)
                                and (only is None or only(n)))
            return {node_id: via for node_id, (_, via) in reached.items()}

    # ------------------------------------------------------------ the radio

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            for observer in list(self.observers):
                with contextlib.suppress(Exception):
                    observer()
            self._stop.wait(self.poll)

    def _draw(self, key: tuple[object, ...], hops: int, *, change: bool = False) -> float:
        """The delay of a new (or changed) SMS over `hops` hops, drawn once per delivery."""
        if key not in self._drawn:
            if len(self._drawn) > 50000:
                self._drawn.clear()
            t = self.timings
            first, further = (t.change, t.change_next_hop) if change else (t.first_hop, t.next_hop)
            self._drawn[key] = self.rng.uniform(*first) + sum(
                self.rng.uniform(*further) for _ in range(hops - 1))
        return self._drawn[key]

    def step(self) -> None:
        """One round: read what each node publishes, deliver what is due."""
        with self.lock:
            now = time.monotonic()
            current: dict[tuple[str, str], bytes] = {}
            for node in self.nodes:
                if not self._carries(node, now):
                    continue
                for name in list(node.live_sms):
                    path = os.path.join(node.runtime_dir, "sms", "sendSms", name)
                    try:
                        if os.path.islink(path) or not os.path.isfile(path):
                            continue
                        with open(path, "rb") as fh:
                            current[(node.node_id, name)] = fh.read()
                    except OSError:
                        continue
            for key, data in current.items():
                old = self._published.get(key)
                if old is None or old.data != data:
                    self._seq += 1
                    self._published[key] = _Published(data, now, self._seq)
                self._withdrawn.pop(key, None)
            for key in list(self._published):
                if key not in current:
                    del self._published[key]
                    self._withdrawn[key] = now
            for node in self.running_nodes():
                self._deliver_own(node)
            for receiver in self.nodes:
                if self._carries(receiver, now):
                    self._deliver(receiver, now)
                elif receiver.running:
                    self._connected = {k: v for k, v in self._connected.items()
                                       if k[0] != receiver.node_id}
            for node in self.running_nodes():
                known = frozenset(n.node_id for n in self.view(node))
                if self._known.get(node.node_id) != known:
                    self._known[node.node_id] = known
                    with contextlib.suppress(OSError):
                        node.write_json()

    @staticmethod
    def _deliver_own(node: SimNode) -> None:
        """A node's own SMS is in its own rcvdSms/ as well, at once (also while it rejoins)."""
        rcvd = os.path.join(node.runtime_dir, "sms", "rcvdSms")
        try:
            present = {e for e in os.listdir(rcvd) if e.startswith(node.node_id + ":")}
        except FileNotFoundError:
            return
        for name in list(node.live_sms):
            path = os.path.join(node.runtime_dir, "sms", "sendSms", name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            data = _read(path)
            if data is None:
                continue
            entry = f"{node.node_id}:{name}"
            present.discard(entry)
            if _read(os.path.join(rcvd, entry)) != data:
                _write_bytes(os.path.join(rcvd, entry), data)
        for entry in present:  # unregistered, or its sendSms file is gone
            _unlink(os.path.join(rcvd, entry))

    def _deliver(self, receiver: SimNode, now: float) -> None:
        rcvd = os.path.join(receiver.runtime_dir, "sms", "rcvdSms")
        try:
            present = {entry: None for entry in os.listdir(rcvd)}
        except FileNotFoundError:
            return
        t = self.timings
        carrying = self._bfs(receiver, lambda n: self._carries(n, now))
        in_view = self._bfs(receiver, lambda n: self._in_view(n, now))
        for sender in self.nodes:
            if sender is receiver:
                continue
            pair = (receiver.node_id, sender.node_id)
            if sender.node_id not in carrying:
                self._connected.pop(pair, None)
                if sender.node_id not in in_view:  # gone from bmx7's view: its files go
                    for entry in present:
                        if entry.startswith(sender.node_id + ":"):
                            _unlink(os.path.join(rcvd, entry))
                continue  # else still believed alive (killed, not timed out): keep as is
            hops = carrying[sender.node_id][0]
            since = self._connected.setdefault(pair, now)
            for (sender_id, name), pub in self._published.items():
                if sender_id != sender.node_id:
                    continue
                entry = f"{sender_id}:{name}"
                path = os.path.join(rcvd, entry)
                have = _read(path) if entry in present else None
                if have == pub.data:
                    continue
                if have is None:
                    due = max(pub.since, since) + self._draw((pair, name, pub.seq, since), hops)
                else:
                    due = pub.since + self._draw((pair, name, pub.seq, "change"), hops, change=True)
                if now >= due:
                    _write_bytes(path, pub.data)
            for entry in present:
                sender_id, _, name = entry.partition(":")
                if sender_id != sender.node_id or (sender_id, name) in self._published:
                    continue
                gone = self._withdrawn.get((sender_id, name), now - t.delete * hops)
                if now >= gone + t.delete * hops:
                    _unlink(os.path.join(rcvd, entry))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return None


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def wipe(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
