"""`apply --confirm` as an administrator uses it, with the service running beside it:
unconfirmed (by the deadline, by a lost terminal) everything is as before, the
configuration file included; confirmed (by `confirm`, by a handshake) it stays; a second
change meanwhile is refused."""

from __future__ import annotations

import difflib
import os
import pty
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.service import events
from tests.conftest import bmx7_wg_command, child_env
from tests.integration.netns import BACKEND, Host, Lab
from tests.integration.service import SLOW, Service
from tests.integration.test_attacks import FakeBmx7, one_mesh_node

pytestmark = pytest.mark.root


class Admin:
    """bmx7-wg commands on host a, with the run directory its service uses."""

    def __init__(self, host: Host, run_dir: Path) -> None:
        self.host = host
        self.env = {**child_env(), "BMX7_WG_RUN_DIR": str(run_dir)}

    mount_of: int | None = None  # run in this process's mount namespace (the service's journal)

    def command(self, *args: str) -> list[str]:
        config = str(self.host.config_path)
        cmd = ["ip", "netns", "exec", self.host.ns, *bmx7_wg_command(), "-c", config, *args]
        if self.mount_of is None:
            return cmd
        # --root and --wd: the test may run in a root directory of its own (the VM harness).
        return ["nsenter", "--target", str(self.mount_of), "--mount", "--root", "--wd", *cmd]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args), capture_output=True, text=True, env=self.env, timeout=120)

    def start(self, *args: str, **kw: object) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), text=True, env=self.env, **kw)  # type: ignore[call-overload]


@pytest.fixture
def served(lab2: Lab, tmp_path: Path) -> Iterator[tuple[Lab, Service, Admin]]:
    """a and b with a tunnel (configuration v1), `bmx7-wg run` on a."""
    a = lab2.hosts[0]
    for host in lab2.hosts:
        host.write_config(lab2.config_for(host))
        host.run("apply")
    workdir = tmp_path / "svc"
    workdir.mkdir()
    svc = Service(workdir, a.ns, a.config_path)
    try:
        svc.wait_notify("READY=1")
        yield lab2, svc, Admin(a, svc.run_dir)
    finally:
        svc.stop()


def new_config(lab: Lab, tmp_path: Path) -> Path:
    """Configuration v2 of a: another port and address, b's peer gone, a second interface."""
    a = lab.hosts[0]
    second = f"wg{lab.token}x"
    text = lab.config_for(a, port=51999, peers=[]).replace(f"{a.tunnel_ip}/24", "10.78.0.1/24")
    text += (
        f'[interface.{second}]\nprivate_key_file = "{tmp_path / "second.key"}"\n'
        f'listen_port = 51998\naddresses = ["10.79.0.1/24"]\nbackend = "{BACKEND}"\n'
    )
    path = tmp_path / "v2.toml"
    path.write_text(text)
    return path


def read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 60.0) -> str:
    """proc's standard output up to the line with `needle` (its errors if it ends first)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout * SLOW
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if needle in line:
            return seen
    errors = proc.stderr.read() if proc.stderr is not None and proc.poll() is not None else ""
    raise AssertionError(f"no {needle!r} in the output: {seen}{errors}")


def state(host: Host) -> tuple[list[str], bytes]:
    """What an administrator could see change (lines: a difference reads well)."""
    return host.snapshot().splitlines(), host.config_path.read_bytes()


def assert_same(now: tuple[list[str], bytes], then: tuple[list[str], bytes]) -> None:
    diff = "\n".join(difflib.unified_diff(then[0], now[0], "then", "now", lineterm=""))
    assert not diff, diff
    assert now[1] == then[1], "the configuration file differs"


def wait_service_resumed(svc: Service) -> None:
    """The service has seen the end of the wait and reconciled again."""
    deadline = time.monotonic() + 30 * SLOW
    while time.monotonic() < deadline:
        if any("ended; the service goes on" in str(e.get("MESSAGE")) for e in svc.journal()):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the service never went on after apply --confirm")
    svc.wait_notify("STATUS=", timeout=30)


def test_unconfirmed_apply_rolls_back_system_and_file(
    served: tuple[Lab, Service, Admin], tmp_path: Path
) -> None:
    lab, svc, admin = served
    a, b = lab.hosts
    before = state(a)
    v2 = new_config(lab, tmp_path)
    admin.mount_of = svc.pid  # the apply logs to the service's journal
    proc = admin.start("apply", "--confirm", "3", "--new-config", str(v2), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    shown = read_until(proc, "bmx7-wg confirm")
    assert f"{a.ifname}: set listen port 51999" in shown
    assert f"wg{lab.token}x: create link" in shown
    # Applied, and the service defers to it (it would re-apply the file otherwise).
    assert a.exec("wg", "show", a.ifname, "listen-port").stdout.strip() == "51999"
    assert a.config_path.read_bytes() == v2.read_bytes()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 9, (out, err)
    assert "not confirmed in time" in err and "rolled back" in err
    assert f"undone: wg{lab.token}x: delete link" in out
    assert_same(state(a), before)
    assert a.ping(b.tunnel_ip)
    # The rollback's changes are events in the journal, each with its action.
    undone = svc.wait_journal(f"BMX7WG_INTERFACE=wg{lab.token}x", "BMX7WG_ACTION=delete_link")
    assert "rollback of apply --confirm: not confirmed in time" in undone[0]["MESSAGE"]
    assert undone[0]["MESSAGE_ID"] == events.CHANGE_APPLIED
    restored = svc.wait_journal("BMX7WG_ACTION=restore_config")
    assert str(a.config_path) in restored[0]["MESSAGE"]
    private = a.key_path.read_text().strip()
    assert all(private not in str(e) for e in svc.journal())
    # The service goes on and changes nothing.
    wait_service_resumed(svc)
    assert_same(state(a), before)
    assert not any("apply --confirm" in str(e.get("MESSAGE")) and e.get("MESSAGE_ID") == events.APPLY_FAILED
                   for e in svc.journal())  # fmt: skip
    # Nothing of the claim is left; `confirm` now says it was rolled back.
    assert not list(svc.run_dir.glob("confirm-netns-*[0-9]"))
    late = admin.run("confirm")
    assert late.returncode == 9 and "rolled back" in late.stderr


def test_lost_terminal_rolls_back(served: tuple[Lab, Service, Admin], tmp_path: Path) -> None:
    lab, svc, admin = served
    a, b = lab.hosts
    before = state(a)
    v2 = new_config(lab, tmp_path)
    master, slave = pty.openpty()
    # setsid --ctty: the apply leads a session whose controlling terminal is the pty, as
    # in an SSH login; closing the pty's master hangs the terminal up.
    proc = subprocess.Popen(
        ["setsid", "--ctty", *admin.command("apply", "--confirm", "600", "--new-config", str(v2))],
        stdin=slave, stdout=slave, stderr=slave, env=admin.env, text=True,
    )  # fmt: skip
    os.close(slave)
    output = b""
    deadline = time.monotonic() + 60 * SLOW
    while b"bmx7-wg confirm" not in output and time.monotonic() < deadline:
        output += os.read(master, 4096)
    assert b"bmx7-wg confirm" in output, output
    assert a.exec("wg", "show", a.ifname, "listen-port").stdout.strip() == "51999"
    os.close(master)  # the terminal goes away
    assert proc.wait(timeout=120) == 9
    assert_same(state(a), before)
    assert a.ping(b.tunnel_ip)
    wait_service_resumed(svc)
    assert_same(state(a), before)


def test_closed_input_rolls_back(served: tuple[Lab, Service, Admin], tmp_path: Path) -> None:
    lab, _, admin = served
    a = lab.hosts[0]
    before = state(a)
    v2 = new_config(lab, tmp_path)
    proc = admin.start("apply", "--confirm", "600", "--new-config", str(v2), stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None
    read_until(proc, "bmx7-wg confirm")
    proc.stdin.close()  # the controlling process's end of the pipe: gone
    proc.wait(timeout=120)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert proc.returncode == 9, err
    assert "its input was closed" in err
    assert_same(state(a), before)


def test_confirmed_apply_stays_and_a_second_change_is_refused_meanwhile(
    served: tuple[Lab, Service, Admin], tmp_path: Path
) -> None:
    lab, svc, admin = served
    a = lab.hosts[0]
    v2 = new_config(lab, tmp_path)
    proc = admin.start("apply", "--confirm", "600", "--new-config", str(v2), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    read_until(proc, "bmx7-wg confirm")
    applied = state(a)
    # What it keeps to roll back to (private keys among it) is root's alone.
    (claim,) = [p for p in svc.run_dir.glob("confirm-netns-*") if p.is_dir()]
    assert stat.S_IMODE(claim.stat().st_mode) == 0o700
    assert sorted(f.name for f in claim.iterdir()) == ["before.json", "config", "pending"]
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in claim.iterdir())
    assert a.key_path.read_text().strip() in (claim / "before.json").read_text()
    for verb in (["apply"], ["apply", "--confirm", "5"], ["down"]):
        refused = admin.run(*verb)
        assert refused.returncode == 8, (verb, refused.stderr)
        assert f"apply --confirm (pid {proc.pid}) waits" in refused.stderr
        assert "nothing was changed" in refused.stderr
    assert admin.run("apply", "--check").returncode == 0  # check mode changes nothing: allowed
    confirmed = admin.run("confirm")
    assert confirmed.returncode == 0, confirmed.stderr
    assert "confirmed" in confirmed.stdout
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "the changes stay" in out
    wait_service_resumed(svc)
    assert_same(state(a), applied)
    assert a.config_path.read_bytes() == v2.read_bytes()
    assert admin.run("confirm").stdout.strip() == "nothing to confirm: no apply --confirm is waiting"


def test_a_fresh_handshake_confirms(lab2: Lab, tmp_path: Path) -> None:
    a, b = lab2.hosts
    b.write_config(lab2.config_for(b))
    b.run("apply")
    a.write_config(lab2.config_for(a, peers=[]))
    a.run("apply")
    admin = Admin(a, tmp_path / "run")
    v2 = tmp_path / "v2.toml"
    v2.write_text(lab2.config_for(a))  # b's peer added
    proc = admin.start("apply", "--confirm", "600", "--new-config", str(v2), "--confirm-handshake", "host2",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    read_until(proc, "bmx7-wg confirm")
    assert a.ping(b.tunnel_ip)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "confirmed by a fresh handshake" in out
    assert b.public_key in a.exec("wg", "show", a.ifname, "peers").stdout


def test_an_apply_without_changes_does_not_wait(lab1: Lab, tmp_path: Path) -> None:
    a = lab1.hosts[0]
    a.write_config(lab1.config_for(a))
    a.run("apply")
    admin = Admin(a, tmp_path / "run")
    proc = admin.run("apply", "--confirm", "600")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "no changes"


@pytest.fixture
def mesh_node(tmp_path: Path) -> Iterator[tuple[Host, FakeBmx7, Admin]]:
    with one_mesh_node(tmp_path) as (host, bmx7):
        yield host, bmx7, Admin(host, tmp_path / "run")


def test_the_mesh_announcement_goes_back_as_it_was(
    mesh_node: tuple[Host, FakeBmx7, Admin], tmp_path: Path
) -> None:
    host, bmx7, admin = mesh_node
    sms = bmx7.root / "sms" / "sendSms" / "wg-bmx7"
    before, announced = state(host), sms.read_bytes()
    v2 = tmp_path / "v2.toml"
    v2.write_text(host.config_path.read_text().replace("mesh = true", "mesh = true\nlisten_port = 40999"))
    proc = admin.start("apply", "--confirm", "2", "--new-config", str(v2), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    shown = read_until(proc, "bmx7-wg confirm")
    assert "publish announcement" in shown and b"40999" in sms.read_bytes()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 9, err
    assert "undone: " in out and "publish announcement" in out
    assert sms.read_bytes() == announced
    assert_same(state(host), before)


def test_a_rollback_that_cannot_finish_names_what_is_left(
    mesh_node: tuple[Host, FakeBmx7, Admin], tmp_path: Path
) -> None:
    host, bmx7, admin = mesh_node
    send_dir = bmx7.root / "sms" / "sendSms"
    v2 = tmp_path / "v2.toml"
    v2.write_text(host.config_path.read_text().replace("mesh = true", "mesh = true\nlisten_port = 40999"))
    proc = admin.start("apply", "--confirm", "600", "--new-config", str(v2), stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None and proc.stdin is not None and proc.stderr is not None
    read_until(proc, "bmx7-wg confirm")
    # sendSms/ becomes read-only for the waiting apply alone (its own mount namespace).
    remount = f'mount --bind "{send_dir}" "{send_dir}" && mount -o remount,bind,ro "{send_dir}"'
    subprocess.run(
        ["nsenter", "--target", str(proc.pid), "--mount", "--root", "--wd", "sh", "-c", remount],
        check=True,
        timeout=30,
    )
    proc.stdin.close()
    proc.wait(timeout=120)
    err = proc.stderr.read()
    assert proc.returncode == 5, err
    assert "rollback incomplete" in err and "left as applied" in err
    assert "publish announcement" in err and "Read-only file system" in err
    # What could go back did: the port and the configuration file.
    assert host.exec("wg", "show", host.ifname, "listen-port").stdout.strip() == "40456"
    assert "40999" not in host.config_path.read_text()
    assert b"40999" in (send_dir / "wg-bmx7").read_bytes()
    assert admin.run("confirm").returncode == 9
