"""Metrics as a fleet's Prometheus sees them: the service's textfile scraped by the real
prometheus-node-exporter (Debian's package) matches `wg show` for every peer, and
`promtool check metrics` (Debian's prometheus package) accepts what bmx7-wg writes,
hostile mesh host names included. (`make integration` installs both packages.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg import metrics
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState, Peer, PeerStats
from tests.integration.netns import Host, Lab
from tests.integration.service import SLOW, Service

pytestmark = pytest.mark.root

EXPORTER = "prometheus-node-exporter"
SERIES = re.compile(r"^(bmx7_wg_\w+)\{([^}]*)\} (\S+)$")


def labels_of(text: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', text))


def scrape(host: Host, port: int) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    return host.exec(sys.executable, "-c", script).stdout


@pytest.fixture
def exporter(lab3: Lab, tmp_path: Path) -> Iterator[tuple[Host, Path, int]]:
    """node_exporter in host a's namespace, on a loopback port, reading a test directory."""
    assert shutil.which(EXPORTER), "prometheus-node-exporter is installed by make integration"
    a = lab3.hosts[0]
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    port = 9100
    proc = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
         "--collector.disable-defaults", "--collector.textfile",
         f"--collector.textfile.directory={textfiles}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30 * SLOW
        while a.exec("bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}", check=False).returncode != 0:
            assert proc.poll() is None and time.monotonic() < deadline, "node_exporter did not start"
            time.sleep(0.1)
        yield a, textfiles, port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wg_dump(host: Host) -> dict[str, tuple[int, int, int]]:
    """public key -> (latest handshake, rx, tx), as `wg show IF dump` prints them."""
    lines = host.exec("wg", "show", host.ifname, "dump").stdout.splitlines()[1:]
    return {f[0]: (int(f[4]), int(f[5]), int(f[6])) for f in (line.split("\t") for line in lines)}


def test_node_exporter_scrape_matches_wg_show(
    lab3: Lab, exporter: tuple[Host, Path, int], tmp_path: Path
) -> None:
    a, textfiles, port = exporter
    b, c = lab3.hosts[1], lab3.hosts[2]
    for host in lab3.hosts:
        host.write_config(lab3.config_for(host))
        host.run("apply")
    assert a.ping(b.tunnel_ip)  # b has a handshake and traffic; c has neither
    a.write_config(lab3.config_for(a) + f'[metrics]\ntextfile = "{textfiles}/bmx7-wg.prom"\n')
    workdir = tmp_path / "svc"
    workdir.mkdir()
    svc = Service(workdir, a.ns, a.config_path)
    try:
        svc.wait_notify("READY=1")
        deadline = time.monotonic() + 30 * SLOW
        while not (textfiles / "bmx7-wg.prom").exists():
            assert time.monotonic() < deadline, "no metrics textfile"
            time.sleep(0.1)
        # No traffic flows now (no keepalive): the device's numbers hold still.
        dump = wg_dump(a)
        text = scrape(a, port)
        assert dump == wg_dump(a)
    finally:
        svc.stop()
    assert "node_textfile_scrape_error 0" in text
    seen: dict[str, dict[str, int]] = {}
    for line in text.splitlines():
        m = SERIES.match(line)
        if m and m.group(1).startswith("bmx7_wg_peer_"):
            labels = labels_of(m.group(2))
            assert labels["interface"] == a.ifname
            seen.setdefault(labels["public_key"], {})[m.group(1)] = int(float(m.group(3)))
            assert labels["name"] in ("host2", "host3")
    assert set(seen) == set(dump) == {b.public_key, c.public_key}
    for key, (handshake, rx, tx) in dump.items():
        assert seen[key] == {
            "bmx7_wg_peer_last_handshake_timestamp_seconds": handshake,
            "bmx7_wg_peer_receive_bytes_total": rx,
            "bmx7_wg_peer_transmit_bytes_total": tx,
        }
    assert dump[b.public_key][0] > 0 and dump[c.public_key][0] == 0
    assert f'bmx7_wg_interface_peers{{interface="{a.ifname}"}} 2' in text
    assert 'bmx7_wg_reconcile_duration_seconds_count{kind="full"} 1' in text
    assert "bmx7_wg_failed_changes_total 0" in text
    last = re.search(r"^bmx7_wg_last_successful_reconcile_timestamp_seconds (\S+)$", text, re.M)
    assert last is not None and abs(float(last.group(1)) - time.time()) < 3600
    promtool(text)
    # `bmx7-wg metrics` prints the same peers, and passes the same check.
    printed = a.run("metrics").stdout
    promtool(printed)
    assert all(f'public_key="{k}"' in printed for k in dump)


def promtool(text: str) -> None:
    # The tool's lint counts a histogram or counter without HELP, bad names, bad escapes.
    proc = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hostile_names_and_10000_peers_pass_promtool() -> None:
    # A mesh host name is chosen by another node: quotes, backslashes, newlines, escapes.
    hostile = 'x"} 1\nbmx7_wg_bmx7_up 0\n\\\x1b[31m\u202e'
    peers: dict[str, Peer] = {}
    stats: dict[str, PeerStats] = {}
    labels: dict[str, metrics.PeerLabel] = {}
    for n in range(10_000):
        key = f"{n:043d}="
        peers[key] = Peer(public_key=key)
        stats[key] = PeerStats(1_700_000_000 + n, n * 1000, n * 2000)
        labels[key] = metrics.PeerLabel(hostile if n % 2 else f"node{n}", f"{n:056X}")
    iface = ObservedInterface("wgmesh", 3, "userspace", True, 1420, True, frozenset(), frozenset(),
                              Device(peers=peers, stats=stats))  # fmt: skip
    nodes = {"wgmesh": {"peer": 10_000, "refused": 3, "held": 0, "untrusted": 7}}
    text = metrics.render(ObservedState({"wgmesh": iface}), metrics.Context({"wgmesh": labels}, nodes, True),
                          metrics.ServiceMetrics())  # fmt: skip
    promtool(text)
    assert text.count("\nbmx7_wg_bmx7_up ") == 1  # the forged line stayed inside its label
    # Bounded: three series per peer, the rest does not grow with the mesh (the file is
    # about 6.3 MB at 10,000 peers with plain host names; README).
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert len(samples) == 3 * 10_000 + 1 + 4 + 1 + 2 * (len(metrics.BUCKETS) + 3) + 2
