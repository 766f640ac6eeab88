"""`make demo` as a new user runs it: the real bmx7 (built from the pinned source), then again over
the running demo with `BMX7=stand-in`; its end state both times, then `make demo-clean`.

The demo's namespaces have fixed names (bmx7wg-demo-*): this test removes a demo left running.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.root

PREFIX = "bmx7wg-demo-"
WORK = REPO / ".cache" / "demo"
NODES = 3


def demo_env(bmx7: str | None) -> dict[str, str]:
    """A user's environment: BMX7 unset (the demo builds the real bmx7), or as given."""
    env = {k: v for k, v in os.environ.items() if k not in ("BMX7", "BMX7_LIB_PATH")}
    if bmx7 is not None:
        env["BMX7"] = bmx7
    return env


def make(target: str, bmx7: str | None = None) -> subprocess.CompletedProcess[str]:
    # Room for the first build of bmx7 (scripts/build-bmx7) on a fresh machine.
    return subprocess.run(["make", "-s", "-C", str(REPO), target], capture_output=True, text=True,
                          env=demo_env(bmx7), timeout=1200)


def netns(node: int, *cmd: str) -> str:
    return subprocess.run(["ip", "netns", "exec", f"{PREFIX}n{node}", *cmd], check=True,
                          capture_output=True, text=True, timeout=30).stdout


def demo_namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines() if line.startswith(PREFIX)]


def recorded_pids() -> list[int]:
    return [int(line.split()[0]) for line in (WORK / "pids").read_text().splitlines()]


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def processes_mentioning(text: str) -> list[str]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path("/proc", entry, "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmd:
                found.append(cmd)
    return found


@pytest.fixture
def demo_cleaned():  # type: ignore[no-untyped-def]
    yield
    make("demo-clean")


def check_mesh(out: str) -> None:
    """Every node has every other as a peer on its device, at its fd70 endpoint; the ping went through."""
    keys = {i: netns(i, "wg", "show", f"wgmesh-n{i}", "public-key").strip() for i in range(1, NODES + 1)}
    for i in range(1, NODES + 1):
        endpoints = dict(line.split("\t") for line in
                         netns(i, "wg", "show", f"wgmesh-n{i}", "endpoints").strip().splitlines())
        assert set(endpoints) == {keys[j] for j in keys if j != i}, (i, endpoints)
        assert all(e.startswith("[fd70:") and e.endswith("]:40456") for e in endpoints.values())
    # ping -c 3 -w 20 stops at 3 replies, but echoes sent while the first handshake is retried
    # (an IPv6 underlay drops the first one: 5 s) are answered together once it completes: 3 or more.
    received = re.search(r"\d+ packets transmitted, (\d+) received", out)
    assert received and int(received.group(1)) >= 3, out
    far = re.search(r"ping from node1 to node3's tunnel address (fd77:\S+)", out)
    assert far, out
    # Still up after the demo: node1 reaches node3 through the tunnel, whose endpoint is two hops away.
    assert netns(1, "ping", "-6", "-c", "1", "-W", "5", far.group(1))
    # By name too: the service keeps node3.mesh in the namespace's hosts file.
    assert far.group(1) in netns(1, "ping", "-6", "-c", "1", "-W", "5", "node3.mesh")
    endpoint = netns(1, "wg", "show", "wgmesh-n1", "endpoints").split(keys[3] + "\t[")[1].split("]")[0]
    assert "ttl=63" in netns(1, "ping", "-6", "-n", "-c", "1", "-W", "5", endpoint)


def test_make_demo_forms_the_mesh_twice_and_cleans_up(demo_cleaned: None) -> None:
    first = make("demo")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert "bmx7: the real one, " in out and "stand-in" not in out, out[:2000]
    assert sorted(demo_namespaces()) == [f"{PREFIX}n{i}" for i in range(1, NODES + 1)]
    check_mesh(out)
    # The trust change: node3's peer goes from node1 with the reason, then comes back.
    revoked = out.split("stops trusting node3")[1].split("trust restored")[0]
    assert "remove peer" in revoked and "not trusted by bmx7" in revoked, revoked
    assert "add peer" in out.split("trust restored")[1]
    # `bmx7-wg show` with node names and ids.
    shown = out.split("bmx7-wg show (node1)")[1]
    assert "(node2)" in shown and "(node3)" in shown and shown.count("mesh node: ") == NODES - 1
    assert "make demo-clean" in out and "ip netns exec bmx7wg-demo-n1" in out
    old = recorded_pids()
    assert len(old) == 2 * NODES and all(alive(p) for p in old)  # bmx7 x3, bmx7-wg run x3
    daemons = [os.readlink(f"/proc/{p}/exe") for p in old[:NODES]]
    assert all(os.path.basename(d) == "bmx7" for d in daemons), daemons  # the real daemon runs

    second = make("demo", bmx7="stand-in")  # again, over the running one: it cleans first
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "bmx7: the stand-in of tests/bmx7sim, as BMX7=stand-in asks" in second.stdout
    assert not any(alive(p) for p in old)
    check_mesh(second.stdout)
    assert len(recorded_pids()) == NODES + 1  # the stand-in, bmx7-wg run x3
    pids = recorded_pids()

    cleaned = make("demo-clean")
    assert cleaned.returncode == 0, cleaned.stderr
    assert demo_namespaces() == []
    assert not any(alive(p) for p in pids)
    assert processes_mentioning("wgmesh-n") == [] and processes_mentioning(str(WORK)) == []
    assert not WORK.exists()
    assert list(Path("/etc/netns").glob(f"{PREFIX}*")) == []  # the namespaces' hosts files
    # Nor anything of the demo's services in the machine's run directory.
    assert list(Path("/run/bmx7-wg").glob("mesh-wgmesh-n*")) == []
