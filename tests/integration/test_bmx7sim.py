"""The bmx7 stand-in against real bmx7 output, and its SMS, socket and namespace behaviour."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bmx7_wg.mesh.bmx7 import Bmx7Runtime
from tests.bmx7sim import Mesh, SimMesh, SimNode, jsonc, make_node_id, primary_ip

HERE = Path(__file__).resolve().parents[1] / "bmx7sim"
FIXTURES = HERE / "fixtures"
CLIENT = HERE / "bmx7"
N1 = "CAD0870E071C0642EBCA29759284D05B7B17A9887A8F6B2BC2D42CA5"


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
    return time.monotonic() - start


# ------------------------------------------------------------------ formats


@pytest.mark.parametrize(
    "path",
    sorted(p for p in FIXTURES.rglob("*") if p.is_file() and "json" in p.parent.name + p.parent.parent.name),
)
def test_json_files_round_trip_byte_for_byte(path: Path) -> None:
    raw = path.read_text()
    assert jsonc.dumps(json.loads(raw)) + "\n" == raw


def test_jshow_lines_byte_for_byte() -> None:
    for line in (FIXTURES / "n1-jshow.txt").read_text().splitlines(keepends=True):
        if line.startswith("{"):
            assert jsonc.dumps(json.loads(line)) + "\n" == line


def test_status_has_the_fixture_keys_in_order(tmp_path: Path) -> None:
    node = SimNode(str(tmp_path / "run"), "node1")
    real = json.loads((FIXTURES / "n1-json" / "status").read_text())
    assert list(node.status()["status"]) == list(real["status"])  # type: ignore[call-overload]
    real_orig = json.loads((FIXTURES / "n1-json" / "originators" / N1).read_text())
    assert list(node.originator(node)) == list(real_orig)


def test_node_id_and_primary_address() -> None:
    node_id = make_node_id()
    assert len(node_id) == 56 and node_id == node_id.upper()
    assert primary_ip(N1) == "fd70:cad0:870e:71c:642:ebca:2975:9284"
    import hashlib

    assert make_node_id(b"\x01" * 256) == hashlib.sha224(b"\x00\x06" + b"\x01" * 256).hexdigest().upper()


def test_parameters_text_matches_fixture_layout(tmp_path: Path) -> None:
    node = SimNode("/run/bmx7-lab/n1/run", "node1", dev="bx1", sync_sms=("wgkey",))
    node.live_sms = ["wgkey"]
    text = node.parameters_text()
    real = (FIXTURES / "sms-tests.txt").read_text().split("### n1 parameters (-c parameters)\n")[1]
    real_lines = real.splitlines()
    for line in text.splitlines():
        if line.startswith((" runtimeDir", " hostname", " dev", " syncSms", "PARAMETERS:")):
            assert line in real_lines


# ------------------------------------------------------------------ socket and client


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[SimMesh]:
    sim = SimMesh(delay=0.3)
    for i in (1, 2, 3):
        sim.add(SimNode(str(tmp_path / f"n{i}"), f"node{i}"))
    sim.start()
    try:
        yield sim
    finally:
        sim.stop()


def client(node: SimNode, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CLIENT), f"--runtimeDir={node.runtime_dir}", "-c", *cmd],
        capture_output=True,
        text=True,
        timeout=10,
    )


def test_client_jshow_and_sync_sms(mesh: SimMesh) -> None:
    n1 = mesh.nodes[0]
    out = client(n1, "jshow=status")
    assert out.returncode == 0
    assert json.loads(out.stdout)["status"]["nodeId"] == n1.node_id
    assert out.stdout.endswith(" } }\n") and out.stdout.count("\n") == 1
    out = client(n1, "syncSms=wgendpoint")
    assert (out.returncode, out.stdout) == (
        0,
        "INFO  : --syncSms                 wgendpoint                    \n",
    )
    assert client(n1, "syncSms=wgendpoint").stdout == ""  # already configured: silent
    assert " syncSms                wgendpoint           (0) " in client(n1, "parameters").stdout
    assert client(n1, "syncSms=-wgendpoint").stdout == "INFO  : --syncSms                -\n"
    bad = client(n1, "syncSms=abcdefghijklmnopq")
    assert bad.returncode == 1
    assert "ERROR apply_stream_opts: invalid argument: abcdefghijklmnopq" in bad.stdout


def test_client_without_daemon(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(CLIENT), f"--runtimeDir={tmp_path}", "-c", "jshow=status"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 1 and "Is bmx7 running" in out.stdout


# ------------------------------------------------------------------ SMS


def rcvd(node: SimNode) -> dict[str, bytes]:
    d = Path(node.runtime_dir) / "sms" / "rcvdSms"
    return {p.name: p.read_bytes() for p in d.iterdir()}


def test_sms_only_for_registered_names_with_delay(mesh: SimMesh) -> None:
    n1, n2, n3 = mesh.nodes
    r1 = Bmx7Runtime(n1.runtime_dir)
    r1.publish("wgkey", b"v1")
    time.sleep(0.6)
    assert rcvd(n2) == {}  # not registered: not published
    r1.register_sms("wgkey")
    start = time.monotonic()
    wait_for(lambda: f"{n1.node_id}:wgkey" in rcvd(n2))
    assert time.monotonic() - start >= 0.25
    wait_for(lambda: rcvd(n3).get(f"{n1.node_id}:wgkey") == b"v1")
    assert f"{n1.node_id}:wgkey" not in rcvd(n1)  # never to itself
    files = Bmx7Runtime(n2.runtime_dir).received("wgkey")
    assert [(f.node_id, f.data) for f in files] == [(n1.node_id, b"v1")]

    r1.publish("wgkey", b"v2")  # a change arrives
    wait_for(lambda: rcvd(n2).get(f"{n1.node_id}:wgkey") == b"v2")
    r1.withdraw("wgkey")  # a deleted file disappears
    wait_for(lambda: rcvd(n2) == {} and rcvd(n3) == {})
    r1.publish("wgkey", b"v3")
    wait_for(lambda: f"{n1.node_id}:wgkey" in rcvd(n2))
    r1.unregister_sms("wgkey")  # syncSms=-NAME removes it too
    wait_for(lambda: rcvd(n2) == {})


def test_node_leaving_and_restart(mesh: SimMesh) -> None:
    n1, n2, _ = mesh.nodes
    for node in (n1, n2):
        rt = Bmx7Runtime(node.runtime_dir)
        rt.publish("wg", node.name.encode())
        rt.register_sms("wg")
    wait_for(lambda: f"{n2.node_id}:wg" in rcvd(n1) and f"{n1.node_id}:wg" in rcvd(n2))
    n2.stop()  # leaves: its files vanish elsewhere, its socket stays stale
    wait_for(lambda: f"{n2.node_id}:wg" not in rcvd(n1))
    assert not Bmx7Runtime(n2.runtime_dir, timeout=0.5).running()
    n2.start()  # restart wipes rcvdSms and forgets live syncSms registrations
    assert set(rcvd(n2)) <= {f"{n1.node_id}:wg"}  # wiped; only fresh deliveries
    assert n2.live_sms == []
    wait_for(lambda: f"{n1.node_id}:wg" in rcvd(n2))
    time.sleep(0.5)
    assert f"{n2.node_id}:wg" not in rcvd(n1)  # n2 must register again
    Bmx7Runtime(n2.runtime_dir).register_sms("wg")
    wait_for(lambda: f"{n2.node_id}:wg" in rcvd(n1))


def test_trusted_nodes_dir_set_live(mesh: SimMesh, tmp_path: Path) -> None:
    rt = Bmx7Runtime(mesh.nodes[0].runtime_dir)
    assert rt.trust_levels() is None
    rt.command(f"trustedNodesDir={tmp_path}/trust")
    assert rt.trust_levels() == {}
    (tmp_path / "trust" / f"{mesh.nodes[1].node_id}.trust=2.support=2").touch()
    assert rt.trust_levels() == {mesh.nodes[1].node_id: 2}
    # json/parameters follows the live configuration, as bmx7_json does.
    params = json.loads((Path(rt.runtime_dir) / "json" / "parameters").read_text())
    assert any(o["name"] == "trustedNodesDir" for o in params["OPTIONS"])


# ------------------------------------------------------------------ namespaces


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_mesh_in_namespaces_routes_fd70() -> None:
    with Mesh(n=3, delay=0.1) as mesh:
        names = {n.netns for n in mesh.nodes}
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert all(name in listed for name in names)
        a, b, c = mesh.nodes
        out = a.exec("ping", "-6", "-c", "1", "-W", "2", c.primary_ip, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        assert b.exec("ping", "-6", "-c", "1", "-W", "2", a.primary_ip, check=False).returncode == 0
        assert Bmx7Runtime(b.runtime_dir).own_node().node_id == b.node_id
        base = mesh.base_dir
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(name in listed for name in names)
    assert not os.path.exists(base)
