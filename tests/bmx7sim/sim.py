"""A stand-in for the parts of bmx7 that bmx7-wg touches, for N nodes in one process.

Per node (`SimNode`), in its own runtime directory:
- `json/status`, `json/originators/<NODEID>`, `json/parameters`, in bmx7's exact
  json-c formatting (see jsonc.py and the fixture tests);
- the control socket `<runtime_dir>/sock`, speaking bmx7's protocol: one read of the
  command words ending in "#", output, then "$" on success or a close without "$"
  after an error; commands `jshow=status|originators`, `parameters`, `syncSms=NAME`,
  `syncSms=-NAME`, `trustedNodesDir=DIR`, `setTrustedNode=ID [/trust=N]`;
- SMS: `sms/sendSms/NAME` is published only while NAME is registered; every other
  running node gets `sms/rcvdSms/<SENDERID>:NAME` after `delay` seconds; a changed
  file is rewritten, a deleted file, unregistered name or stopped node removes the
  copies; `rcvdSms/` is wiped when a node (re)starts.

`SimMesh` is the "radio": a thread that moves SMS between its nodes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field

from . import jsonc

MAX_UNIX_MSG_SIZE = 2000
SMS_NAME_MAX = 15
ORDERED_OPTIONS = ("runtimeDir", "plugin", "nodeRsaKey", "hostname", "syslog", "dev",
                   "descSqnPath", "trustedNodesDir", "jsonUpdateInterval", "syncSms")
DEFAULTS = {"runtimeDir": "/var/run/bmx7", "descSqnPath": "/etc/bmx7/descSqn",
            "jsonUpdateInterval": "60000", "nodeRsaKey": "6", "syslog": "1",
            "trustedNodesDir": "/etc/bmx7/trustedNodes", "keyPath": "/etc/bmx7/rsa.der"}


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

    def __post_init__(self) -> None:
        self.live_sms: list[str] = []
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.running = False
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
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)  # bmx7 unlinks a stale socket it cannot connect to
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(self.socket_path)
        server.listen(10)
        self._server = server
        self.running = True
        self.write_json()
        self._thread = threading.Thread(target=self._serve, name=f"bmx7sim-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the daemon; like a killed bmx7 the socket file stays behind (stale)."""
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
        nodes = len(self.mesh.running_nodes()) if self.mesh else 1
        return {"status": {
            "shortId": self.short_id, "nodeId": self.node_id, "name": self.name,
            "nodeKey": "RSA2048", "linkKeys": "RSA1024,DH2048M112",
            "shortDhash": self.node_id[-8:], "dhash": self.node_id[::-1],
            "version": "BMX7-0.2", "cv": 21, "revision": "9020896",
            "primaryIp": self.primary_ip, "tun6Address": "---", "tun4Address": "---",
            "descSqn": 1, "lastDesc": 0, "ogmSqn": 1, "aggSize": 1, "aggMax": 9, "aggSend": 9,
            "uptime": f"0:{uptime // 3600:02d}:{uptime // 60 % 60:02d}:{uptime % 60:02d}",
            "cpu": "0.0", "mem": "5124K", "txQ": "0/50", "rxBpP": "0/0.0", "txBpP": "0/0.0",
            "nbs": max(nodes - 1, 0), "rts": max(nodes - 1, 0), "nodes": f"{nodes}/{nodes}",
            "descRefs": "8/8",
        }}

    def originator(self, other: SimNode) -> dict[str, object]:
        me = other is self
        return {
            "shortId": other.short_id, "nodeId": other.node_id, "name": other.name,
            "assessedState": "neighboringQualifying", "as": "nQ", "pref": 9999 if me else 5001,
            "brcTo": 0, "signTo": 0, "tAPTo": 0, "nQTo": 0, "friend": 3 if me else 0, "recom": 0,
            "trustees": 0, "S": "A", "s": "A", "T": "A", "t": "A", "myIid": 1,
            "shortDHash": other.node_id[-8:], "descSqn": 1, "descSqnMin": 1, "lastDesc": 0,
            "descSize": "575+702", "descRefs": "8/8", "cv": "21", "revision": "9020896",
            "nodeKey": "RSA2048", "linkKeys": "RSA1024,DH2048M112", "primaryIp": other.primary_ip,
            "dev": "---" if me else self.dev, "myIdx": 0, "nbIdx": 0, "nbLocalIp": "::",
            "nbShortId": "---" if me else other.short_id, "nbNodeId": "---" if me else other.node_id,
            "nbName": "---" if me else other.name, "metric": "257G" if me else "999M",
            "ogmHist": "0/5", "hops": 0 if me else 1, "ogmSqn": 1, "nbIid": 0, "lastRef": 0,
            "nbs": 1,
        }

    def known_nodes(self) -> list[SimNode]:
        nodes = self.mesh.running_nodes() if self.mesh else [self]
        return sorted({n.node_id: n for n in [self, *nodes]}.values(), key=lambda n: n.node_id)

    def parameters(self) -> list[tuple[str, str, list[tuple[str, str]]]]:
        params: list[tuple[str, str, list[tuple[str, str]]]] = [
            ("runtimeDir", self.runtime_dir, []),
            ("plugin", "bmx7_json.so", []), ("plugin", "bmx7_sms.so", []),
            ("nodeRsaKey", "6", [("keyPath", os.path.join(self.runtime_dir, "rsa.der"))]),
            ("hostname", self.name, []), ("syslog", "0", []), ("dev", self.dev, []),
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
    since: float


class SimMesh:
    """Moves SMS between nodes, like BMX7 descriptions do, after `delay` seconds."""

    def __init__(self, delay: float = 0.3, poll: float = 0.05) -> None:
        self.nodes: list[SimNode] = []
        self.delay = delay
        self.poll = poll
        self._published: dict[tuple[str, str], _Published] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, node: SimNode, start: bool = True) -> SimNode:
        node.mesh = self
        self.nodes.append(node)
        if start:
            node.start()
        return node

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

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self.poll)

    def step(self) -> None:
        """One round: read what each node publishes, deliver what is due."""
        now = time.monotonic()
        current: dict[tuple[str, str], bytes] = {}
        for node in self.running_nodes():
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
                self._published[key] = _Published(data, now)
        for key in list(self._published):
            if key not in current:
                del self._published[key]
        for receiver in self.running_nodes():
            self._deliver(receiver, now)

    def _deliver(self, receiver: SimNode, now: float) -> None:
        rcvd = os.path.join(receiver.runtime_dir, "sms", "rcvdSms")
        wanted: dict[str, bytes] = {}
        for (sender_id, name), pub in self._published.items():
            if sender_id != receiver.node_id and now - pub.since >= self.delay:
                wanted[f"{sender_id}:{name}"] = pub.data
        try:
            present = set(os.listdir(rcvd))
        except FileNotFoundError:
            return
        for entry in present - set(wanted):
            # Keep copies of a publication that changed but is not due yet.
            sender_id, _, name = entry.partition(":")
            if (sender_id, name) in self._published:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(rcvd, entry))
        for entry, data in wanted.items():
            path = os.path.join(rcvd, entry)
            try:
                with open(path, "rb") as fh:
                    if fh.read() == data:
                        continue
            except OSError:
                pass
            _write_bytes(path, data)


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def wipe(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
