"""The lab: create nodes (namespace, veth links, bmx7, `bmx7-wg run`), change them, remove them.

Each node `I` of lab NAME is the network namespace `NAME-nI` with:
- veth links `bxJ` to each neighbour J (netem on each end when asked);
- a real bmx7 (runtime dir `<lab dir>/nI/run`, its RSA key in `nI/etc`), trusting the
  nodes named in `nI/trustedNodes` (every node, until `fault revoke`);
- `bmx7-wg run` with its own configuration `nI/bmx7-wg.toml`, key `nI/wg.key` and state
  dir `nI/state`, on the WireGuard interface `wl<hash>n<I>` (the hash of the lab's name:
  wireguard-go's sockets share one directory across namespaces, so no two labs' names meet).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import bmx7_wg
from bmx7_wg.keys import PrivateKey
from bmx7_wg_lab import netns, procs
from bmx7_wg_lab.errors import (
    LabError,
    MissingTool,
    NameClash,
    NodeFailed,
    NoSuchLab,
    NotEnoughResources,
    UsageError,
)
from bmx7_wg_lab.record import LabRecord
from bmx7_wg_lab.topology import Topology, connected

BASE_DIR = "/run/bmx7-wg-lab"
ANNOUNCE = "wg-bmx7"  # bmx7-wg's default SMS name
WG_SOCKET_DIR = "/var/run/wireguard"
# Resident memory per node, measured at 10 and 25 nodes (bench/RESULTS.md, "The mesh lab"): bmx7
# about 4 MiB, `bmx7-wg run` 23 MiB, wireguard-go 6-9 MiB; 60 leaves room for the page cache,
# the lab's own files and a loaded machine.
NODE_MIB = 60
START_TIMEOUT = 120.0  # seconds for every bmx7 to answer (generous: the machine may be loaded)


def base_dir() -> Path:
    return Path(os.environ.get("BMX7_WG_LAB_DIR") or BASE_DIR)


def check_name(name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9]{0,11}", name):
        raise UsageError(f"--name {name!r}: 1-12 lower-case letters and digits, starting with a letter")
    return name


def interface_name(lab: str, node: int) -> str:
    return f"wl{hashlib.sha256(lab.encode()).hexdigest()[:4]}n{node}"


@dataclass(frozen=True)
class Bmx7:
    """The bmx7 daemon to run and where its plugins are (empty: bmx7's own default)."""

    path: str
    lib: str

    @classmethod
    def find(cls, option: str | None) -> Bmx7:
        wanted = option or os.environ.get("BMX7") or ""
        how_to_get = (
            "install the bmx7 package (apt install bmx7), or build it from this project's "
            "source tree with scripts/build-bmx7 and pass --bmx7 PATH (or BMX7=PATH)"
        )
        if wanted:
            path = wanted if "/" in wanted else shutil.which(wanted)
            if not path or not os.access(path, os.X_OK) or os.path.isdir(path):
                raise MissingTool(f"bmx7 {wanted!r} is not an executable file; {how_to_get}")
        else:
            path = shutil.which("bmx7") or (
                "/usr/sbin/bmx7" if os.access("/usr/sbin/bmx7", os.X_OK) else None
            )
            if path is None:
                raise MissingTool(f"bmx7 is not on PATH; {how_to_get}")
        path = os.path.abspath(path)
        # As the project's demo finds them: BMX7_LIB_PATH, else a lib/ beside the binary (a
        # build tree), else bmx7's own default (the package's).
        lib = os.environ.get("BMX7_LIB_PATH") or ""
        beside = os.path.join(os.path.dirname(path), "lib")
        if not lib and os.path.exists(os.path.join(beside, "bmx7_json.so")):
            lib = beside
        return cls(path, lib)


def check_tools(backend: str) -> None:
    needed = {"ip": "iproute2", "tc": "iproute2", "sysctl": "procps"}
    if backend != "kernel":
        needed["wireguard-go"] = "wireguard-go"
    missing = [f"{tool} (package {pkg})" for tool, pkg in needed.items() if shutil.which(tool) is None]
    if missing:
        raise MissingTool(
            f"missing: {', '.join(missing)}; install with apt install --no-install-recommends ..."
        )
    if os.geteuid() != 0:
        raise LabError("bmx7-wg-lab needs root (it creates network namespaces)")


def available_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def check_memory(nodes: int, available: int | None = None) -> None:
    available = available_mib() if available is None else available
    need = nodes * NODE_MIB
    if available and need > available:
        raise NotEnoughResources(
            f"{nodes} nodes need about {need} MiB ({NODE_MIB} MiB each: bmx7, bmx7-wg run, wireguard-go), "
            f"but only {available} MiB are available; use fewer nodes"
        )


def check_netem(name: str) -> None:
    """Whether this kernel has netem (sch_netem), tried on a veth in a namespace of our own.

    Some kernels (minimal VM kernels without modules) have none; a lab asked for delay, jitter
    or loss then stops before it makes anything, instead of half-way through."""
    probe = f"{name}-netem{os.getpid()}"
    netns.run(["ip", "netns", "add", probe])
    try:
        netns.run(["ip", "-n", probe, "link", "add", "nmprobe0", "type", "veth", "peer", "name", "nmprobe1"])
        try:
            netns.run(["tc", "-n", probe, "qdisc", "add", "dev", "nmprobe0", "root", "netem", "delay", "1ms"])
        except LabError as exc:
            raise MissingTool(
                f"this kernel cannot delay or drop packets: {exc} (netem, module sch_netem, is needed "
                "for --delay, --jitter and --loss; apt install linux-modules-extra or a kernel with "
                "CONFIG_NET_SCH_NETEM)"
            ) from None
    finally:
        netns.delete(probe)


INOTIFY_PER_NODE = 4  # measured: bmx7 2, `bmx7-wg run` 1, wireguard-go 1
INOTIFY_LIMIT = "/proc/sys/fs/inotify/max_user_instances"


def inotify_in_use() -> int:
    """inotify instances open now, by every process this user can see (root: all of them)."""
    count = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                        count += 1
        except OSError:
            continue
    return count


def check_inotify(nodes: int, limit: int | None = None, in_use: int | None = None) -> None:
    """Each node's daemons watch files with inotify; the kernel's per-user limit (128 by default)
    is reached at about 30 nodes, and a daemon that cannot watch stops. Refuse before starting."""
    if limit is None:
        try:
            with open(INOTIFY_LIMIT) as f:
                limit = int(f.read())
        except (OSError, ValueError):
            return
    in_use = inotify_in_use() if in_use is None else in_use
    need = nodes * INOTIFY_PER_NODE
    if in_use + need > limit:
        raise NotEnoughResources(
            f"{nodes} nodes need {need} inotify instances ({INOTIFY_PER_NODE} per node: bmx7 2, bmx7-wg 1, "
            f"wireguard-go 1), {in_use} are in use and the limit is {limit}; raise it with "
            f"sysctl -w fs.inotify.max_user_instances={max(1024, 2 * (in_use + need))}, or use fewer nodes"
        )


class Lab:
    """One lab, described by its record; every change is saved in the record as it is made."""

    def __init__(self, record: LabRecord) -> None:
        self.record = record
        self.children: dict[int, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------ finding and locking

    @staticmethod
    def directory(name: str) -> Path:
        return base_dir() / name

    @classmethod
    def open(cls, name: str) -> Lab:
        path = cls.directory(check_name(name)) / "lab.json"
        if not path.exists():
            raise NoSuchLab(f"no lab named {name!r} ({path} does not exist); start one with bmx7-wg-lab up")
        return cls(LabRecord.load(path))

    @staticmethod
    @contextlib.contextmanager
    def locked(name: str) -> Iterator[None]:
        """One lab command at a time per lab (a fault during `measure` would spoil its figures)."""
        base_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
        lock = base_dir() / f".{name}.lock"
        with open(lock, "w") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LabError(f"another bmx7-wg-lab command is working on lab {name!r}") from None
            try:
                yield
            finally:
                # A lab that is gone (down, or an up that failed) leaves no lock file and, if it
                # was the last one, no base directory either.
                if not (Lab.directory(name) / "lab.json").exists():
                    lock.unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        base_dir().rmdir()

    # ------------------------------------------------------------ up

    @classmethod
    def create(cls, name: str, topo: Topology, *, bmx7: Bmx7, backend: str, netem: dict[str, float]) -> Lab:
        directory = cls.directory(name)
        if (directory / "lab.json").exists():
            raise NameClash(
                f"a lab named {name!r} exists already (bmx7-wg-lab down --name {name} removes it)"
            )
        namespaces = {n: f"{name}-n{n}" for n in topo.nodes}
        taken = [ns for ns in namespaces.values() if netns.exists(ns)]
        if taken:
            raise NameClash(
                f"network namespace {taken[0]} exists already and is not this lab's; "
                f"choose another --name (ip netns list shows what exists)"
            )
        if any(netem.get(k) for k in ("delay_ms", "jitter_ms", "loss_pct")):
            check_netem(name)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        record = LabRecord(
            name=name,
            directory=str(directory),
            created=time.time(),
            topology=topo.spec,
            nodes=list(topo.nodes),
            links=list(topo.links),
            namespaces=namespaces,
            interfaces={n: interface_name(name, n) for n in topo.nodes},
            netem=netem,
            backend=backend,
            bmx7=bmx7.path,
            bmx7_lib=bmx7.lib,
        )
        record.save()
        lab = cls(record)
        for n in topo.nodes:
            lab._make_node(n)
        for a, b in topo.links:
            lab._make_link(a, b)
        for n in topo.nodes:
            lab.start_bmx7(n)
        lab.wait_for_bmx7(topo.nodes)
        lab._trust_everyone()
        for n in topo.nodes:
            lab.start_service(n)
        return lab

    def _make_node(self, n: int) -> None:
        d = self.record.node_dir(n)
        for sub in ("run", "etc", "trustedNodes", "state"):
            (d / sub).mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(d, 0o700)
        netns.add(self.record.namespaces[n])
        self._write_config(n)

    def _make_link(self, a: int, b: int) -> None:
        ns = self.record.namespaces
        netns.add_veth(ns[a], a, ns[b], b)
        em = self.record.netem
        if any(em.get(k) for k in ("delay_ms", "jitter_ms", "loss_pct")):
            for x, y in ((a, b), (b, a)):
                netns.netem(
                    ns[x],
                    netns.veth_name(y),
                    em.get("delay_ms", 0),
                    em.get("jitter_ms", 0),
                    em.get("loss_pct", 0),
                )

    def _write_config(self, n: int) -> None:
        d = self.record.node_dir(n)
        text = (
            f"# bmx7-wg on lab node n{n} (written by bmx7-wg-lab)\n"
            "[bmx7]\n"
            f'runtime_dir = "{d / "run"}"\n'
            f'trusted_nodes_dir = "{d / "trustedNodes"}"\n'
            "\n"
            f"[interface.{self.record.interfaces[n]}]\n"
            "mesh = true\n"
            f'private_key_file = "{d / "wg.key"}"\n'
            f'backend = "{self.record.backend}"\n'
            # Mesh names go to the node's own hosts file, never to the machine's /etc/hosts.
            "\n[names]\n"
            f'hosts_file = "{d / "hosts"}"\n'
        )

        (d / "bmx7-wg.toml").write_text(text, encoding="utf-8")

    # ------------------------------------------------------------ daemons

    def neighbours(self, n: int) -> list[int]:
        return sorted(
            {b for a, b in self.record.links if a == n} | {a for a, b in self.record.links if b == n}
        )

    def _bmx7_env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"}
        if self.record.bmx7_lib:
            env["BMX7_LIB_PATH"] = self.record.bmx7_lib
        return env

    def start_bmx7(self, n: int) -> None:
        d = self.record.node_dir(n)
        # Order matters to bmx7 (DESIGN.md, "BMX7 facts"): --runtimeDir first, dev= last.
        argv = [
            "ip", "netns", "exec", self.record.namespaces[n], self.record.bmx7,
            f"--runtimeDir={d / 'run'}", "plugin=bmx7_json.so", "plugin=bmx7_sms.so", "debug=0",
            "nodeRsaKey=6", f"/keyPath={d / 'etc' / 'rsa.der'}", f"hostname=n{n}", "syslog=0",
            f"descSqnPath={d / 'etc' / 'descSqn'}", "jsonUpdateInterval=1000",
        ]  # fmt: skip
        if self.record.trust_set:
            argv.append(f"trustedNodesDir={d / 'trustedNodes'}")
        argv += [f"dev={netns.veth_name(m)}" for m in self.neighbours(n)]
        self._spawn(n, "bmx7", argv, self._bmx7_env(), d / "bmx7.log")

    def start_service(self, n: int) -> None:
        d = self.record.node_dir(n)
        package_parent = str(Path(bmx7_wg.__file__).resolve().parent.parent)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": package_parent,  # the bmx7_wg this lab imports, installed or a source tree
            "BMX7_WG_RUN_DIR": str(d / "state"),
            "BMX7_WG_LOG_TIME": "1",
        }
        argv = [
            "ip", "netns", "exec", self.record.namespaces[n],
            sys.executable, "-m", "bmx7_wg", "-c", str(d / "bmx7-wg.toml"), "run",
        ]  # fmt: skip
        self._spawn(n, "bmx7-wg", argv, env, d / "bmx7-wg.log")

    def _spawn(self, n: int, role: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        old = self.record.process(n, role)
        if old is not None and procs.alive(old):
            raise LabError(f"{role} of node n{n} runs already (pid {old.pid})")
        proc, rec = procs.spawn(n, role, argv, env, log)
        self.children[proc.pid] = proc
        self.record.processes = [p for p in self.record.processes if not (p.node == n and p.role == role)]
        self.record.processes.append(rec)
        self.record.save()

    def stop(self, n: int, role: str, *, sig: int = signal.SIGTERM) -> None:
        p = self.record.process(n, role)
        if p is not None:
            procs.stop([p], sig=sig, grace=0.0 if sig == signal.SIGKILL else 10.0)

    def status_file(self, n: int) -> dict[str, object] | None:
        """bmx7's own status (json/status, rewritten every second), None before its first write."""
        try:
            data = json.loads((self.record.node_dir(n) / "run" / "json" / "status").read_text())
            status = data["status"]
            return status if isinstance(status, dict) else None
        except (OSError, ValueError, KeyError):
            return None

    def wait_for_bmx7(self, nodes: Sequence[int]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        pending = list(nodes)
        while pending:
            for n in list(pending):
                status = self.status_file(n)
                if status and isinstance(status.get("nodeId"), str):
                    self.record.node_ids[n] = str(status["nodeId"])
                    pending.remove(n)
                    continue
                p = self.record.process(n, "bmx7")
                if p is None or not procs.alive(p) or time.monotonic() > deadline:
                    log = self.record.node_dir(n) / "bmx7.log"
                    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
                    raise NodeFailed(
                        f"bmx7 of node n{n} "
                        + ("stopped" if p is None or not procs.alive(p) else "does not answer")
                        + f" (log {log}"
                        + (": " + " | ".join(tail) if tail else "")
                        + ")"
                    )
            time.sleep(0.1)
        self.record.save()

    def bmx7_command(self, n: int, *words: str) -> None:
        """`bmx7 -c WORDS` on node n's control socket (a live setting)."""
        argv = [self.record.bmx7, f"--runtimeDir={self.record.node_dir(n) / 'run'}", "-c", *words]
        try:
            out = subprocess.run(argv, env=self._bmx7_env(), capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LabError(f"bmx7 -c {' '.join(words)} on n{n}: {exc}") from exc
        if out.returncode != 0:
            raise LabError(f"bmx7 -c {' '.join(words)} on n{n}: {(out.stderr or out.stdout).strip()[-200:]}")

    # ------------------------------------------------------------ trust

    def _trust_everyone(self) -> None:
        """Every node trusts every node, through files bmx7 watches (so `fault revoke` can take one away)."""
        for n in self.record.nodes:
            self.write_trust(n)
        self.record.trust_set = True
        self.record.save()
        for n in self.record.nodes:
            self.bmx7_command(n, f"trustedNodesDir={self.record.node_dir(n) / 'trustedNodes'}")

    def write_trust(self, n: int) -> None:
        directory = self.record.node_dir(n) / "trustedNodes"
        wanted = {
            node_id
            for m, node_id in self.record.node_ids.items()
            if m in self.record.nodes and (n, m) not in self.record.distrust
        }
        present = set(os.listdir(directory))
        for stale in present - wanted:
            (directory / stale).unlink()
        for node_id in wanted - present:
            (directory / node_id).touch()

    def trusts(self, a: int, b: int) -> bool:
        return a != b and (a, b) not in self.record.distrust

    # ------------------------------------------------------------ keys

    def public_key(self, n: int) -> str | None:
        """Node n's WireGuard public key, from its key file (None before the service made it)."""
        try:
            text = (self.record.node_dir(n) / "wg.key").read_text().strip()
            return PrivateKey.from_base64(text).public_key()
        except (OSError, ValueError):
            return None

    # ------------------------------------------------------------ faults

    def node(self, n: int) -> int:
        if n not in self.record.nodes:
            have = ", ".join(f"n{m}" for m in self.record.nodes)
            raise UsageError(f"lab {self.record.name!r} has no node n{n} (it has {have})")
        return n

    def link(self, a: int, b: int) -> tuple[int, int]:
        key = (min(a, b), max(a, b))
        if key not in self.record.links:
            raise UsageError(f"no link between n{a} and n{b} (links: bmx7-wg-lab status)")
        return key

    def set_link(self, a: int, b: int, up: bool) -> None:
        key = self.link(a, b)
        ns = self.record.namespaces
        netns.set_link(ns[a], netns.veth_name(b), up)
        netns.set_link(ns[b], netns.veth_name(a), up)
        self.record.cut = [c for c in self.record.cut if c != key] + ([] if up else [key])
        self.record.save()

    def set_trust(self, a: int, b: int, trusted: bool) -> None:
        """Between two nodes, both ways: each one's bmx7 (and so its bmx7-wg) stops or starts
        trusting the other."""
        self.node(a)
        self.node(b)
        pairs = {(a, b), (b, a)}
        self.record.distrust = [p for p in self.record.distrust if p not in pairs]
        if not trusted:
            self.record.distrust += sorted(pairs)
        self.record.save()
        self.write_trust(a)
        self.write_trust(b)

    def new_key(self, n: int) -> None:
        """A new WireGuard key for node n: its service stops, the key file is replaced, the service starts."""
        self.stop(n, "bmx7-wg")
        path = self.record.node_dir(n) / "wg.key"
        tmp = path.with_suffix(".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(PrivateKey.generate().to_base64() + "\n")
        os.replace(tmp, path)
        self.start_service(n)

    def power_off(self, n: int) -> None:
        """Node n dies at once: every process in its namespace gets SIGKILL (bmx7, bmx7-wg, wireguard-go)."""
        procs.kill_pids(netns.pids(self.record.namespaces[n]))

    def add_node(self, to: Sequence[int]) -> int:
        for m in to:
            self.node(m)
        if not to:
            raise UsageError("a new node needs at least one link (--to N)")
        n = max(max(self.record.nodes), max(self.record.namespaces)) + 1
        ns = f"{self.record.name}-n{n}"
        if netns.exists(ns):
            raise NameClash(f"network namespace {ns} exists already and is not this lab's")
        self.record.namespaces[n] = ns
        self.record.interfaces[n] = interface_name(self.record.name, n)
        self.record.nodes.append(n)
        self.record.links += [(min(m, n), max(m, n)) for m in to]
        self.record.save()
        self._make_node(n)
        # The new node's bmx7 learns its links at start; its neighbours take the new veth live.
        for m in to:
            self._make_link(min(m, n), max(m, n))
        self.start_bmx7(n)
        self.wait_for_bmx7([n])
        for m in to:
            self.bmx7_command(m, f"dev={netns.veth_name(n)}")
        for m in self.record.nodes:
            self.write_trust(m)
        self.bmx7_command(n, f"trustedNodesDir={self.record.node_dir(n) / 'trustedNodes'}")
        self.start_service(n)
        return n

    def remove_node(self, n: int) -> None:
        self.node(n)
        if len(self.record.nodes) <= 2:
            raise UsageError("a lab keeps at least two nodes (bmx7-wg-lab down removes it all)")
        rest = [m for m in self.record.nodes if m != n]
        rest_links = [link for link in self.record.links if n not in link]
        if not connected(rest, rest_links):
            raise UsageError(f"removing n{n} would split the lab in two; cut links instead (fault cut)")
        self.stop(n, "bmx7-wg")
        self.stop(n, "bmx7")
        self._clear_namespace(self.record.namespaces[n], self.record.interfaces[n])
        self.record.nodes = rest
        self.record.links = rest_links
        self.record.cut = [c for c in self.record.cut if n not in c]
        self.record.distrust = [p for p in self.record.distrust if n not in p]
        self.record.processes = [p for p in self.record.processes if p.node != n]
        self.record.node_ids.pop(n, None)
        self.record.save()
        for m in rest:
            self.write_trust(m)
        shutil.rmtree(self.record.node_dir(n), ignore_errors=True)

    # ------------------------------------------------------------ down

    @staticmethod
    def _clear_namespace(namespace: str, interface: str) -> None:
        """What is left in one of our namespaces: its WireGuard link (stops a wireguard-go), any
        process still in it (only the lab starts processes there), then the namespace itself."""
        if netns.exists(namespace):
            if interface in netns.links(namespace):
                netns.run(["ip", "-n", namespace, "link", "del", interface], check=False)
            for _ in range(50):
                left = netns.pids(namespace)
                if not left:
                    break
                procs.kill_pids(left)
                time.sleep(0.1)
            netns.delete(namespace)
        sock = Path(WG_SOCKET_DIR) / f"{interface}.sock"
        if sock.is_socket():
            sock.unlink()  # a killed wireguard-go leaves it behind; the name is this lab's own

    def down(self) -> None:
        procs.stop(self.record.processes)
        for n, namespace in sorted(self.record.namespaces.items()):
            self._clear_namespace(
                namespace, self.record.interfaces.get(n, interface_name(self.record.name, n))
            )
        shutil.rmtree(self.record.directory, ignore_errors=True)
