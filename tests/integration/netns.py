"""Test hosts: network namespaces joined by veth links, each able to run bmx7-wg.

Every name carries a random token so that runs (and engineers) never collide: the
wireguard-go control sockets live in one directory shared by all namespaces.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import bmx7_wg_command, child_env

BACKEND = os.environ.get("BMX7_WG_TEST_BACKEND", "userspace")


def sh(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), check=check, capture_output=True, text=True, input=input, timeout=60, env=child_env()
    )


@dataclass
class Host:
    """One test host: a network namespace with a config file and a state directory."""

    ns: str
    index: int
    workdir: Path
    underlay: str  # this host's underlay IPv4 address
    ifname: str  # the WireGuard interface bmx7-wg manages on it
    tunnel_ip: str  # its address inside the tunnel
    public_key: str = ""
    config_path: Path = field(init=False)
    key_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.config_path = self.workdir / f"{self.ns}.toml"
        self.key_path = self.workdir / f"{self.ns}.key"

    def run(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`bmx7-wg -c CONFIG ARGS` inside this host's namespace."""
        cmd = ["ip", "netns", "exec", self.ns, *bmx7_wg_command(), "-c", str(self.config_path), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), input=input, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def run_json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json").stdout)

    def exec(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.ns, *args, check=check)

    def ping(self, address: str, count: int = 3) -> bool:
        # A few quick tries: the first handshake takes a moment on a fresh tunnel.
        proc = self.exec("ping", "-c", str(count), "-i", "0.2", "-W", "2", "-w", "10", address, check=False)
        return proc.returncode == 0

    def python(self, script: str, ready: str) -> subprocess.Popen[str]:
        """`script` run by this interpreter inside the namespace, once it has printed the
        line `ready` (stdin and stdout are pipes; the caller ends it)."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == ready
        return proc

    def write_config(self, text: str) -> None:
        self.config_path.write_text(text)

    def links(self) -> dict[str, Any]:
        out = self.exec("ip", "-j", "-d", "link", "show").stdout
        return {link["ifname"]: link for link in json.loads(out)}

    def snapshot(self) -> str:
        """Everything a user could see change: links, addresses, routes, WireGuard devices."""
        parts = [
            self.exec("ip", "-o", "link", "show").stdout,
            self.exec("ip", "-o", "addr", "show").stdout,
            self.exec("ip", "route", "show", "table", "all").stdout,
            self.exec("ip", "-6", "route", "show", "table", "all").stdout,
        ]
        for name in sorted(self.links()):
            proc = self.exec("wg", "showconf", name, check=False)
            if proc.returncode == 0:
                # wireguard-go lists peers in no fixed order: compare them sorted.
                interface, *peers = proc.stdout.split("[Peer]")
                parts.append("\n".join([interface.strip(), *sorted(f"[Peer]{p.rstrip()}" for p in peers)]))
        # Duplicate address detection on the underlay finishes on its own time: not a change.
        return "\n".join(parts).replace(" tentative", "")


class Lab:
    """N hosts on one underlay (a bridge in a hub namespace), cleaned up on close."""

    def __init__(self, workdir: Path, n: int) -> None:
        self.token = secrets.token_hex(3)
        self.workdir = workdir
        self.hub = f"bw{self.token}hub"
        self.hosts: list[Host] = []
        self._namespaces: list[str] = []
        try:
            self._build(n)
        except BaseException:
            self.close()
            raise

    def _netns_add(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self._namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def _build(self, n: int) -> None:
        self._netns_add(self.hub)
        sh("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i in range(1, n + 1):
            ns = f"bw{self.token}h{i}"
            self._netns_add(ns)
            # Made in the hub namespace, one end moved into the host: names stay local.
            sh(
                "ip",
                "-n",
                self.hub,
                "link",
                "add",
                f"p{i}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            sh("ip", "-n", self.hub, "link", "set", f"p{i}", "master", "br0", "up")
            underlay = f"192.0.2.{i}"
            sh("ip", "-n", ns, "addr", "add", f"{underlay}/24", "dev", "eth0")
            # No IPv6 link-local on the (IPv4) underlay: its duplicate address detection
            # would finish at a random moment and show up as a change in snapshots.
            sh("ip", "-n", ns, "link", "set", "eth0", "addrgenmode", "none")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            host = Host(
                ns=ns,
                index=i,
                workdir=self.workdir,
                underlay=underlay,
                ifname=f"wg{self.token}{i}",
                tunnel_ip=f"10.77.0.{i}",
            )
            self.hosts.append(host)

    def config_for(
        self,
        host: Host,
        *,
        extra_peer_keys: dict[str, str] | None = None,
        port: int = 51820,
        peers: list[Host] | None = None,
        backend: str = BACKEND,
        interface_extra: str = "",
    ) -> str:
        """A static full-mesh configuration for `host` (peers default to all others)."""
        lines = [
            f"[interface.{host.ifname}]",
            f'private_key_file = "{host.key_path}"',
            f"listen_port = {port}",
            f'addresses = ["{host.tunnel_ip}/24"]',
            f'backend = "{backend}"',
            interface_extra,
        ]
        for other in peers if peers is not None else [h for h in self.hosts if h is not host]:
            lines += [
                f"[[interface.{host.ifname}.peer]]",
                f'name = "host{other.index}"',
                f'public_key = "{other.public_key}"',
                f'endpoint = "{other.underlay}:{port}"',
                f'allowed_ips = ["{other.tunnel_ip}/32"]',
            ]
        return "\n".join(lines) + "\n"

    def make_keys(self) -> None:
        for host in self.hosts:
            key = sh(*bmx7_wg_command(), "genkey").stdout.strip()
            fd = os.open(host.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.write(fd, (key + "\n").encode())
            os.close(fd)
            host.public_key = sh(*bmx7_wg_command(), "pubkey", input=key).stdout.strip()

    def close(self) -> None:
        # Delete the WireGuard links first: that stops their wireguard-go daemons (and
        # removes their sockets) before the namespaces go away.
        for ns in self._namespaces:
            proc = sh("ip", "-n", ns, "-j", "link", "show", check=False)
            if proc.returncode != 0 or not proc.stdout.strip():
                continue
            for link in json.loads(proc.stdout):
                if link["ifname"] not in ("lo",) and not link["ifname"].startswith(("eth0", "p", "br0")):
                    sh("ip", "-n", ns, "link", "del", link["ifname"], check=False)
        for ns in reversed(self._namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self._namespaces.clear()
