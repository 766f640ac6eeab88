"""Network namespaces and links, through `ip` and `tc` as an operator would type them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
from collections.abc import Iterator, Sequence

from bmx7_wg_lab.errors import LabError

NETNS_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 60) -> str:
    """Run a command; a failure is a LabError naming the command and its message."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"{' '.join(argv)}: {exc}") from exc
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {out.stderr.strip() or f'exit status {out.returncode}'}")
    return out.stdout


def exists(namespace: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, namespace))


def add(namespace: str) -> None:
    run(["ip", "netns", "add", namespace])
    # No duplicate address detection, so link-local addresses (bmx7 needs one per link) are
    # usable at once; forwarding on, as every node carries its neighbours' traffic.
    for path, value in (
        ("net/ipv6/conf/all/accept_dad", "0"),
        ("net/ipv6/conf/default/accept_dad", "0"),
        ("net/ipv6/conf/all/forwarding", "1"),
    ):
        run(["ip", "netns", "exec", namespace, "sysctl", "-q", "-w", f"{path.replace('/', '.')}={value}"])
    run(["ip", "-n", namespace, "link", "set", "lo", "up"])


def delete(namespace: str) -> None:
    if exists(namespace):
        run(["ip", "netns", "del", namespace], check=False)


def pids(namespace: str) -> list[int]:
    if not exists(namespace):
        return []
    return [int(p) for p in run(["ip", "netns", "pids", namespace], check=False).split()]


def links(namespace: str) -> list[str]:
    out = run(["ip", "-n", namespace, "-o", "link", "show"], check=False)
    names = []
    for line in out.splitlines():
        parts = line.split(": ", 2)
        if len(parts) > 1:
            names.append(parts[1].split("@", 1)[0])
    return names


def veth_name(to: int) -> str:
    """The veth in a node's namespace that leads to node `to`."""
    return f"bx{to}"


def add_veth(ns_a: str, a: int, ns_b: str, b: int) -> None:
    run(
        [
            "ip",
            "link",
            "add",
            veth_name(b),
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            veth_name(a),
            "netns",
            ns_b,
        ]
    )
    run(["ip", "-n", ns_a, "link", "set", veth_name(b), "up"])
    run(["ip", "-n", ns_b, "link", "set", veth_name(a), "up"])


def set_link(namespace: str, ifname: str, up: bool) -> None:
    run(["ip", "-n", namespace, "link", "set", ifname, "up" if up else "down"])


def netem(namespace: str, ifname: str, delay_ms: float, jitter_ms: float, loss_pct: float) -> None:
    """Delay, jitter and loss on what leaves `ifname` (so a link gets them once each way)."""
    argv = ["tc", "-n", namespace, "qdisc", "replace", "dev", ifname, "root", "netem"]
    if delay_ms or jitter_ms:
        argv += ["delay", f"{delay_ms}ms"] + ([f"{jitter_ms}ms"] if jitter_ms else [])
    if loss_pct:
        argv += ["loss", f"{loss_pct}%"]
    run(argv)


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def inside(namespace: str) -> Iterator[None]:
    """This thread in `namespace` for the block: sockets made there stay in it afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)
