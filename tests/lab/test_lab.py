"""bmx7-wg-lab as an operator runs it, with the real bmx7 (`make test-lab`, BMX7= the build of
scripts/build-bmx7): a ring of six nodes, a fault of each kind and the mesh healing after each,
`down` leaving nothing behind (also after the lab command was killed), a name clash, and
`measure` on a small line. Needs root."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bmx7_wg_lab.lab import interface_name

REPO = Path(__file__).resolve().parents[2]
WAIT = 240.0  # seconds for the mesh to heal: generous, the machine may be shared

pytestmark = pytest.mark.root


def bmx7() -> str:
    path = os.environ.get("BMX7", "")
    assert path and os.access(path, os.X_OK), (
        "BMX7= must name the bmx7 of scripts/build-bmx7 (make test-lab sets it)"
    )
    return path


class LabCli:
    def __init__(self, tmp_path: Path) -> None:
        self.name = "t" + secrets.token_hex(3)
        self.base = tmp_path / "labs"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(REPO),
            "BMX7_WG_LAB_DIR": str(self.base),
            "BMX7": bmx7(),
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "bmx7_wg_lab", *args]

    def run(self, *args: str, name: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        extra = ["--name", self.name] if name else []
        verb, rest = args[0], list(args[1:])
        return subprocess.run(
            self.argv(verb, *extra, *rest), capture_output=True, text=True, env=self.env, timeout=timeout
        )

    def ok(self, *args: str) -> str:
        out = self.run(*args)
        assert out.returncode == 0, f"{args}: {out.stdout}{out.stderr}"
        assert "Traceback" not in out.stderr
        return out.stdout

    def status(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.ok("status", "--json"))
        return data

    def until(self, what: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        while True:
            data = self.status()
            if check(data):
                return data
            if time.monotonic() > deadline:
                pytest.fail(f"{what}: not after {WAIT:.0f} s; status: {json.dumps(data)[:3000]}")
            time.sleep(1.0)

    def namespaces(self) -> list[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
        return [line.split()[0] for line in out.splitlines() if line.startswith(f"{self.name}-")]

    def processes(self) -> list[int]:
        """Every process whose command line names this lab's directory (bmx7 and bmx7-wg do)."""
        mine = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if str(self.base).encode() in cmdline:
                mine.append(int(pid))
        return mine

    def assert_nothing_left(self) -> None:
        assert self.namespaces() == []
        assert not (self.base / self.name).exists() and not (self.base / f".{self.name}.lock").exists()
        assert self.processes() == []
        prefix = interface_name(self.name, 1)[:-1]  # wl<hash>n, the lab's WireGuard interfaces
        assert not list(Path("/run/wireguard").glob(f"{prefix}*.sock"))

    def cleanup(self) -> None:
        if (self.base / self.name / "lab.json").exists():
            self.run("down")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabCli]:
    cli = LabCli(tmp_path)
    try:
        yield cli
    finally:
        cli.cleanup()


def node(data: dict[str, Any], n: int) -> dict[str, Any]:
    return next(x for x in data["nodes"] if x["node"] == n)


def complete(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda d: bool(d["complete"]) and len(d["nodes"]) == count


def test_a_ring_of_six_heals_after_a_fault_of_each_kind(lab: LabCli) -> None:
    lab.ok("up", "--nodes", "6", "--topology", "ring", "--wait", str(WAIT))
    data = lab.status()
    assert data["complete"] and not data["reachability"]["sampled"]
    assert len(data["reachability"]["pairs"]) == 30 and all(
        p["reached"] for p in data["reachability"]["pairs"]
    )
    for n in range(1, 7):
        assert node(data, n)["peers"] == [m for m in range(1, 7) if m != n]
        assert node(data, n)["bmx7"] == "up" and node(data, n)["nodes_seen"] == 6
    text = lab.ok("status")
    assert "complete: every running node" in text and "all 30 pairs: 30 answered" in text

    # trust: n1 and n4 stop trusting each other; their peers go, the rest stays
    lab.ok("fault", "revoke", "n1", "n4")
    data = lab.until("revoked", lambda d: 4 not in node(d, 1)["peers"] and 1 not in node(d, 4)["peers"])
    assert node(data, 1)["peers"] == [2, 3, 5, 6] and node(data, 2)["peers"] == [1, 3, 4, 5, 6]
    lab.ok("fault", "trust", "n1", "n4")
    lab.until("trust restored", complete(6))

    # a new key for n3: every other node follows it
    before = lab.ok("status", "--json")
    out = lab.ok("fault", "rekey", "n3")
    new_key = out.rsplit("public ", 1)[1].strip()
    assert new_key not in before
    lab.until("rekeyed", complete(6))
    wg = subprocess.run(
        ["ip", "netns", "exec", f"{lab.name}-n1", "wg", "show", "all", "peers"],
        capture_output=True,
        text=True,
    )
    assert new_key in wg.stdout

    # a link cut: the ring routes around it
    lab.ok("fault", "cut", "n1", "n2")
    data = lab.until(
        "cut and healed",
        lambda d: complete(6)(d) and not next(x for x in d["links"] if x["a"] == 1 and x["b"] == 2)["up"],
    )
    lab.ok("fault", "restore", "n1", "n2")

    # daemons killed and restarted
    lab.ok("fault", "kill", "n5", "bmx7")
    assert node(lab.status(), 5)["bmx7"] == "down"
    lab.ok("fault", "restart", "n5", "bmx7")
    lab.until("bmx7 restarted", complete(6))
    lab.ok("fault", "kill", "n6", "bmx7-wg")
    assert node(lab.status(), 6)["bmx7_wg"] == "down"
    lab.ok("fault", "restart", "n6", "bmx7-wg")
    lab.until("bmx7-wg restarted", complete(6))

    # a node added, then removed
    assert "n7 added" in lab.ok("fault", "add", "--to", "n1,n4")
    data = lab.until("n7 joined", complete(7))
    assert node(data, 7)["peers"] == [1, 2, 3, 4, 5, 6]
    lab.ok("fault", "remove", "n7")
    data = lab.until("n7 gone", lambda d: complete(6)(d) and all(7 not in x["peers"] for x in d["nodes"]))

    # a wrong fault is a message, not a change
    out = lab.run("fault", "cut", "n1", "n3")
    assert out.returncode == 2 and "no link between n1 and n3" in out.stderr

    lab.ok("down")
    lab.assert_nothing_left()


def test_down_removes_a_lab_whose_up_was_killed(lab: LabCli) -> None:
    proc = subprocess.Popen(
        lab.argv("up", "--name", lab.name, "--nodes", "4", "--topology", "line"),
        env=lab.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    record = lab.base / lab.name / "lab.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if record.exists() and '"role": "bmx7"' in record.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lab.namespaces(), "up was killed before it made anything"
    lab.ok("down")
    lab.assert_nothing_left()


def test_a_name_clash_changes_nothing(lab: LabCli) -> None:
    taken = f"{lab.name}-n2"
    subprocess.run(["ip", "netns", "add", taken], check=True)
    try:
        out = lab.run("up", "--nodes", "3", "--topology", "line")
        assert out.returncode == 4 and f"network namespace {taken} exists already" in out.stderr
        assert "Traceback" not in out.stderr
        assert lab.namespaces() == [taken]
        assert not (lab.base / lab.name).exists()
    finally:
        subprocess.run(["ip", "netns", "del", taken], check=True)


def test_measure_writes_its_result_and_picture(lab: LabCli, tmp_path: Path) -> None:
    out = lab.ok("measure", "--nodes", "4", "--topology", "line", "--out", str(tmp_path / "out"))
    assert "death n4" in out
    result = json.loads((tmp_path / "out" / "lab-4-line.json").read_text())
    sc = result["scenarios"]
    # bmx7-wg adds a peer after bmx7 wrote its announcement, never before
    assert 0 < sc["converge"]["floor_s"] <= sc["converge"]["peers_s"] <= sc["converge"]["full_s"]
    assert sc["converge"]["share_ms"]["n"] == 12 and sc["converge"]["share_ms"]["p50"] >= 0
    assert sc["rekey"]["node"] == 4 and sc["rekey"]["peers_s"] > 0
    assert sc["revoke"]["removed_s"]["n"] == 3 and sc["death"]["removed_s"]["n"] == 3
    assert (tmp_path / "out" / "lab-4-line.svg").read_text().startswith("<svg")
    lab.assert_nothing_left()


def test_link_emulation_is_there_or_said_to_be_missing(lab: LabCli) -> None:
    """netem (sch_netem) is a kernel module some kernels lack: then up says so and makes nothing."""
    out = lab.run("up", "--nodes", "2", "--topology", "line", "--delay", "20", "--loss", "1")
    assert "Traceback" not in out.stderr
    if out.returncode == 3:
        assert "netem" in out.stderr and "sch_netem" in out.stderr
        lab.assert_nothing_left()
        return
    assert out.returncode == 0, out.stderr
    qdisc = subprocess.run(
        ["tc", "-n", f"{lab.name}-n1", "qdisc", "show", "dev", "bx2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "netem" in qdisc and "delay 20ms" in qdisc and "loss 1%" in qdisc
    lab.ok("down")
    lab.assert_nothing_left()
