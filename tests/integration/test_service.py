"""`bmx7-wg run` on the host: notify protocol, journald fields, reloads, drift, restarts."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.service import events
from tests.integration.netns import Lab
from tests.integration.service import Service

pytestmark = pytest.mark.root


@pytest.fixture
def service_lab(lab2: Lab, tmp_path: Path) -> Iterator[tuple[Lab, list[Service]]]:
    for host in lab2.hosts:
        host.write_config(lab2.config_for(host))
    lab2.hosts[1].run("apply")
    services: list[Service] = []
    try:
        yield lab2, services
    finally:
        for s in services:
            s.stop()


def start(lab: Lab, services: list[Service], tmp: Path, *args: str) -> Service:
    host = lab.hosts[0]
    workdir = tmp / f"svc{len(services)}"
    workdir.mkdir()
    svc = Service(workdir, host.ns, host.config_path, *args)
    services.append(svc)
    return svc


def test_ready_status_and_journal_fields(service_lab: tuple[Lab, list[Service]], tmp_path: Path) -> None:
    lab, services = service_lab
    a, b = lab.hosts
    svc = start(lab, services, tmp_path)
    ready = svc.wait_notify("READY=1")
    assert "STATUS=1 interface(s), 1 peer(s)" in ready
    assert a.ping(b.tunnel_ip)
    # The first reconcile's changes are in the journal, with fields one can filter on.
    added = svc.wait_journal(f"BMX7WG_INTERFACE={a.ifname}", f"MESSAGE_ID={events.PEER_ADDED}")
    assert added[0]["BMX7WG_PEER"] == b.public_key
    assert added[0]["BMX7WG_ACTION"] == "add_peer"
    assert "service start" in added[0]["MESSAGE"]
    assert svc.wait_journal(f"MESSAGE_ID={events.SERVICE_STARTED}")
    private = a.key_path.read_text().strip()
    assert all(private not in str(e) for e in svc.journal())


def test_reload_bad_then_good(service_lab: tuple[Lab, list[Service]], tmp_path: Path) -> None:
    lab, services = service_lab
    a, b = lab.hosts
    svc = start(lab, services, tmp_path)
    svc.wait_notify("READY=1")
    good = a.config_path.read_text()
    a.write_config(good.replace("listen_port = 51820", "listen_port = 99999"))
    svc.signal(signal.SIGHUP)
    rejected = svc.wait_journal(f"MESSAGE_ID={events.CONFIG_REJECTED}", count=2)
    assert any(f"{a.config_path}:3:" in e["MESSAGE"] and "listen_port" in e["MESSAGE"] for e in rejected)
    assert svc.running()
    assert a.ping(b.tunnel_ip)  # the old configuration keeps running
    # A valid file is applied on reload (here: found by inotify when it is written).
    a.write_config(good.replace('name = "host2"', 'name = "host2"\npersistent_keepalive = 5'))
    changed = svc.wait_journal(f"BMX7WG_INTERFACE={a.ifname}", "BMX7WG_ACTION=update_peer")
    assert "configuration changed" in changed[0]["MESSAGE"]
    assert a.exec("wg", "show", a.ifname, "persistent-keepalive").stdout.split()[-1] == "5"


def test_drift_repaired_without_config_change(service_lab: tuple[Lab, list[Service]], tmp_path: Path) -> None:
    lab, services = service_lab
    a, b = lab.hosts
    svc = start(lab, services, tmp_path, "--interval", "1")
    svc.wait_notify("READY=1")
    # An address removed: rtnetlink tells the service at once.
    a.exec("ip", "addr", "del", f"{a.tunnel_ip}/24", "dev", a.ifname)
    svc.wait_journal("BMX7WG_ACTION=add_address")
    # A peer removed through the device: no event exists for that; the periodic check
    # (here every second) repairs it.
    a.exec("wg", "set", a.ifname, "peer", b.public_key, "remove")
    svc.wait_journal(f"MESSAGE_ID={events.PEER_ADDED}", count=2)
    assert a.ping(b.tunnel_ip)


def test_restart_keeps_the_tunnel(service_lab: tuple[Lab, list[Service]], tmp_path: Path) -> None:
    lab, services = service_lab
    a, b = lab.hosts
    svc = start(lab, services, tmp_path)
    svc.wait_notify("READY=1")
    assert svc.stop() == 0
    assert a.ifname in a.links()  # the interface (and its wireguard-go) outlive the service
    assert a.ping(b.tunnel_ip)
    again = start(lab, services, tmp_path)
    again.wait_notify("READY=1")
    # With a persistent key there is nothing to change after a restart.
    assert again.journal(f"MESSAGE_ID={events.PEER_ADDED}") == []
    assert a.ping(b.tunnel_ip)


def test_invalid_config_at_start_exits_2(lab2: Lab, tmp_path: Path) -> None:
    a = lab2.hosts[0]
    a.write_config("[interface.x]\nmtu = 1\n")
    svc = Service(tmp_path, a.ns, a.config_path)
    try:
        assert svc.proc.wait(timeout=30) == 2
        entries = svc.wait_journal(f"MESSAGE_ID={events.CONFIG_REJECTED}")
        assert f"{a.config_path}:2:" in entries[0]["MESSAGE"]
    finally:
        svc.stop()


def test_reacts_to_interface_deletion(service_lab: tuple[Lab, list[Service]], tmp_path: Path) -> None:
    lab, services = service_lab
    a, b = lab.hosts
    svc = start(lab, services, tmp_path)
    svc.wait_notify("READY=1")
    a.exec("ip", "link", "del", a.ifname)  # also ends its wireguard-go
    svc.wait_journal(f"BMX7WG_INTERFACE={a.ifname}", "BMX7WG_ACTION=create_link")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not a.ping(b.tunnel_ip, count=1):
        pass
    assert a.ping(b.tunnel_ip)


def test_watchdog_is_pinged(service_lab: tuple[Lab, list[Service]], tmp_path: Path) -> None:
    lab, services = service_lab
    host = lab.hosts[0]
    workdir = tmp_path / "wd"
    workdir.mkdir()
    # As systemd sets it for WatchdogSec=1s: the service pings at half that interval.
    svc = Service(workdir, host.ns, host.config_path, env={"WATCHDOG_USEC": "1000000"})
    services.append(svc)
    svc.wait_notify("READY=1")
    for _ in range(3):
        svc.wait_notify("WATCHDOG=1", timeout=5)
