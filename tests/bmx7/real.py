"""A line of real bmx7 daemons in network namespaces, with the stand-in's interface.

    with RealMesh(n=3) as mesh:
        node = mesh.nodes[0]
        node.netns, node.runtime_dir, node.node_id, node.primary_ip, node.name
        node.bmx7.restart() / .kill() / .stop() / .start() / .live_sms / .trusted_nodes_dir

`RealMesh` is `tests.bmx7sim.netns.Mesh` played by the real daemon: node i's namespace
holds a veth `bx<j>` to each line neighbour j, and bmx7 runs on those devs. bmx7 itself
adds its fd70 primary address, its table 70 routes and rule, and carries the SMS; this
harness only makes the namespaces and links and starts, stops and kills the daemons (by
their own PIDs). Command line as DESIGN.md "Running a real bmx7" has it (`--runtimeDir`
first, `dev=` last); duplicate address detection is off, so bmx7 finds the link-local
address it needs on its first try.

The daemon is `BMX7=PATH` (its plugins: `BMX7_LIB_PATH`, else a lib/ beside it), else the
build of `scripts/build-bmx7` (made when missing: about ten seconds, from the pinned
source). When there is neither, `find_bmx7` raises with the build's own message on how to
provide the source: no test is skipped for a missing bmx7.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

from bmx7_wg.base.nodeid import primary_address
from bmx7_wg.mesh.bmx7 import parse_parameters_text, parse_status
from tests.conftest import REPO

# Under software emulation (make test-vm) every process start is ~20 times slower.
SLOW = 8.0 if os.environ.get("BMX7_WG_IN_VM") else 1.0
PLUGINS = ("bmx7_json.so", "bmx7_sms.so")


class Bmx7Missing(RuntimeError):
    pass


@dataclass(frozen=True)
class Bmx7Build:
    binary: str
    lib_dir: str | None

    def env(self) -> dict[str, str]:
        return {"BMX7_LIB_PATH": self.lib_dir} if self.lib_dir else {}


_found: Bmx7Build | None = None


def find_bmx7() -> Bmx7Build:
    """`BMX7=PATH` when set, else the build of scripts/build-bmx7 (made if needed)."""
    global _found
    if _found is not None:
        return _found
    named = os.environ.get("BMX7", "")
    if named:
        binary = named if os.sep in named else (shutil.which(named) or named)
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise Bmx7Missing(f"BMX7={named} is not an executable bmx7")
    else:
        proc = subprocess.run([str(REPO / "scripts" / "build-bmx7")], capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            raise Bmx7Missing("scripts/build-bmx7 could not build bmx7 (the real daemon these tests run);"
                              " give a build with BMX7=PATH, or the source as its message says:\n"
                              + proc.stderr[-3000:])
        binary = proc.stdout.strip().splitlines()[-1]
    lib = os.environ.get("BMX7_LIB_PATH") or None
    beside = os.path.join(os.path.dirname(binary), "lib")
    if lib is None and os.path.exists(os.path.join(beside, "bmx7_json.so")):
        lib = beside
    _found = Bmx7Build(binary, lib)
    return _found


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=30)


def _sysctl(netns: str, key: str, value: str) -> None:
    path = "/proc/sys/" + key.replace(".", "/")
    subprocess.run(["ip", "netns", "exec", netns, "sh", "-c", f"echo {value} > {path}"],
                   check=True, capture_output=True, text=True, timeout=30)


def dev_name(to_index: int) -> str:
    """The dev in a node's namespace that leads to node `to_index` (1-based), as in the stand-in."""
    return f"bx{to_index}"


@dataclass
class RealBmx7:
    """One real bmx7 daemon: the part of a node that the stand-in's `SimNode` plays."""

    build: Bmx7Build
    netns: str
    base_dir: str  # runtime dir, key, descSqn and log live below it
    name: str
    devs: tuple[str, ...]
    trusted_nodes_dir: str | None = None
    sync_sms: tuple[str, ...] = ()
    node_id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    state: str = "new"  # "up", "left" (stop), "dead" (kill)
    starts: int = 0
    log_paths: list[str] = field(default_factory=list)

    @property
    def runtime_dir(self) -> str:
        return os.path.join(self.base_dir, "run")

    @property
    def socket_path(self) -> str:
        return os.path.join(self.runtime_dir, "sock")

    @property
    def key_path(self) -> str:
        return os.path.join(self.base_dir, "etc", "rsa.der")

    @property
    def primary_ip(self) -> str:
        return str(primary_address(self.node_id))

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command_line(self) -> list[str]:
        etc = os.path.join(self.base_dir, "etc")
        args = [self.build.binary, f"--runtimeDir={self.runtime_dir}", *(f"plugin={p}" for p in PLUGINS),
                "debug=0", "nodeRsaKey=6", f"/keyPath={self.key_path}", f"hostname={self.name}", "syslog=0",
                f"descSqnPath={os.path.join(etc, 'descSqn')}"]
        if self.trusted_nodes_dir is not None:
            args.append(f"trustedNodesDir={self.trusted_nodes_dir}")
        args.append("jsonUpdateInterval=1000")
        args += [f"syncSms={name}" for name in self.sync_sms]
        return args + [f"dev={dev}" for dev in self.devs]  # dev= last

    def start(self, timeout: float = 60.0) -> None:
        """Start the daemon; return once it answers on its control socket."""
        if self.running:
            raise RuntimeError(f"bmx7 on {self.name} runs already")
        os.makedirs(os.path.join(self.base_dir, "etc"), exist_ok=True)
        os.makedirs(self.runtime_dir, exist_ok=True)
        self.starts += 1
        log = os.path.join(self.base_dir, f"bmx7.{self.starts}.log")
        self.log_paths.append(log)
        env = {**os.environ, **self.build.env()}
        with open(log, "wb") as out:
            # `ip netns exec` execs the daemon: the PID is bmx7's own.
            self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *self.command_line()],
                                         stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True)
        deadline = time.monotonic() + timeout * SLOW
        while True:
            answer = self.command("jshow=status", check=False)
            if answer.returncode == 0 and '"nodeId"' in answer.stdout:
                self.node_id = parse_status(answer.stdout).node_id
                self.state = "up"
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"bmx7 on {self.name} exited {self.proc.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bmx7 on {self.name} does not answer after {timeout} s:"
                                   f" {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_paths:
            return ""
        with open(self.log_paths[-1], errors="replace") as fh:
            return "".join(fh.readlines()[-lines:])

    def _end(self, sig: int, state: str) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=20 * SLOW)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=20)
            self.state = state
        self.proc = None

    def stop(self) -> None:
        """SIGTERM: bmx7 ends as a service manager stops it."""
        self._end(signal.SIGTERM, "left")

    def kill(self) -> None:
        """SIGKILL: the socket, json/ and rcvdSms/ stay behind; the others time the node out."""
        self._end(signal.SIGKILL, "dead")

    def restart(self) -> None:
        self.stop()
        self.start()

    def command(self, *words: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """`bmx7 --runtimeDir=RUN -c WORDS...`, as a user types it."""
        return subprocess.run([self.build.binary, f"--runtimeDir={self.runtime_dir}", "-c", *words],
                              capture_output=True, text=True, env={**os.environ, **self.build.env()},
                              check=check, timeout=30)

    @property
    def live_sms(self) -> list[str]:
        """The SMS names bmx7 publishes now (its syncSms= instances)."""
        answer = self.command("parameters", check=False)
        if answer.returncode != 0:
            return []
        return [p.value for p in parse_parameters_text(answer.stdout) if p.name == "syncSms"]

    def trust(self, node_id: str, level: int = 2) -> None:
        """`bmx7 -c setTrustedNode=ID /trust=LEVEL`: bmx7 writes the file in trustedNodesDir."""
        self.command(f"setTrustedNode={node_id}", f"/trust={level}")

    def distrust(self, node_id: str) -> None:
        """`bmx7 -c setTrustedNode=-ID`: bmx7 removes the node's file."""
        self.command(f"setTrustedNode=-{node_id}")


@dataclass
class RealNode:
    """A node of the line: the stand-in's `MeshNode`, with a real bmx7 as `bmx7` (alias `sim`)."""

    index: int
    netns: str
    bmx7: RealBmx7

    @property
    def sim(self) -> RealBmx7:
        return self.bmx7

    @property
    def runtime_dir(self) -> str:
        return self.bmx7.runtime_dir

    @property
    def node_id(self) -> str:
        return self.bmx7.node_id

    @property
    def name(self) -> str:
        return self.bmx7.name

    @property
    def primary_ip(self) -> str:
        return self.bmx7.primary_ip

    def exec(self, *cmd: str, check: bool = True, timeout: float = 30,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside this node's namespace."""
        return subprocess.run(["ip", "netns", "exec", self.netns, *cmd], check=check,
                              capture_output=True, text=True, timeout=timeout, env=env)


class RealMesh:
    """n real bmx7 nodes in a line of namespaces: n1 reaches n3 only through n2."""

    def __init__(self, n: int = 3, *, trusted_nodes_dir: bool = False, sync_sms: tuple[str, ...] = (),
                 base_dir: str | None = None) -> None:
        self.build = find_bmx7()
        self.n = n
        self.token = secrets.token_hex(2)
        self._own_dir = base_dir is None
        self.base_dir = base_dir or tempfile.mkdtemp(prefix=f"bmx7real-{self.token}-")
        self._trusted = trusted_nodes_dir
        self._sync_sms = sync_sms
        self._namespaces: list[str] = []
        self.nodes: list[RealNode] = []

    def __enter__(self) -> RealMesh:
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _setup(self) -> None:
        for i in range(self.n):
            netns = f"b7r{self.token}n{i + 1}"
            _ip("netns", "add", netns)
            self._namespaces.append(netns)
            _ip("link", "set", "lo", "up", netns=netns)
            for conf in ("all", "default"):
                _sysctl(netns, f"net.ipv6.conf.{conf}.accept_dad", "0")
            devs = tuple(dev_name(j + 1) for j in (i - 1, i + 1) if 0 <= j < self.n)
            base = os.path.join(self.base_dir, f"node{i + 1}")
            trusted = os.path.join(base, "etc", "trustedNodes") if self._trusted else None
            if trusted:
                os.makedirs(trusted, exist_ok=True)
            bmx7 = RealBmx7(self.build, netns, base, f"node{i + 1}", devs, trusted, self._sync_sms)
            self.nodes.append(RealNode(i, netns, bmx7))
        for a, b in itertools.pairwise(self.nodes):
            _ip("link", "add", dev_name(b.index + 1), "netns", a.netns, "type", "veth",
                "peer", "name", dev_name(a.index + 1), "netns", b.netns)
        for node in self.nodes:
            for dev in node.bmx7.devs:
                _ip("link", "set", dev, "up", netns=node.netns)
        for node in self.nodes:
            node.bmx7.start()

    def wait_routes(self, timeout: float = 60.0) -> None:
        """Until every node has bmx7's table 70 route to every other node's primary address."""
        deadline = time.monotonic() + timeout * SLOW
        while True:
            missing = [(n.name, o.name) for n in self.nodes for o in self.nodes
                       if o is not n and o.primary_ip not in self.table70(n)]
            if not missing:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no fd70 route after {timeout} s (node, to): {missing}")
            time.sleep(0.2)

    @staticmethod
    def table70(node: RealNode) -> str:
        return _ip("-6", "route", "show", "table", "70", netns=node.netns, check=False).stdout

    def close(self) -> None:
        for node in self.nodes:
            try:
                node.bmx7.kill()
            except (OSError, subprocess.SubprocessError):
                pass
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self._namespaces.clear()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def node(self, name: str) -> RealNode:
        return next(n for n in self.nodes if n.name == name)
