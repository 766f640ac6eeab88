"""The Ansible role (contrib/ansible) as a user runs it: the example playbook, pinned
ansible-core from PyPI, against a test host (a network namespace, `connection: local`).

Host 1 is configured by the role; host 2, its peer, by bmx7-wg directly, so that a ping
shows the role made a working tunnel. With bmx7_wg_bmx7 the role also configures bmx7 on two
hosts, whose real daemons (scripts/build-bmx7, started through the package's start script
from the file the role wrote) make them each other's mesh peers.
"""

from __future__ import annotations

import base64
import re
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ansible.harness import AnsibleHost, PlayResult, install_ansible
from tests.conftest import REPO, bmx7_wg_command, child_env
from tests.integration.netns import BACKEND, Host, Lab, sh

pytestmark = pytest.mark.root


@pytest.fixture(scope="session")
def ansible_playbook() -> Path:
    return install_ansible()


@dataclass
class Fleet:
    lab: Lab
    role_host: AnsibleHost
    a: Host  # configured by the role
    b: Host  # its peer, configured by bmx7-wg directly

    def config(self, **interface_settings: Any) -> dict[str, Any]:
        """bmx7_wg_config for host a, the way a user writes it in YAML."""
        a, b = self.a, self.b
        settings: dict[str, Any] = {
            "listen_port": 51820,
            "addresses": [f"{a.tunnel_ip}/24"],
            "backend": BACKEND,
            "peer": [
                {
                    "name": "host2",
                    "public_key": b.public_key,
                    "endpoint": f"{b.underlay}:51820",
                    "allowed_ips": [f"{b.tunnel_ip}/32"],
                    "persistent_keepalive": 25,
                }
            ],
        }
        settings.update(interface_settings)
        return {"interface": {a.ifname: settings}}

    def play(self, config: dict[str, Any], **kwargs: Any) -> PlayResult:
        result = self.role_host.play(config, **kwargs)
        assert result.recap, f"no PLAY RECAP for the test host:\n{result.output}"
        return result

    def converge(self) -> None:
        """First run of the role, then host b learns a's new public key."""
        result = self.play(self.config())
        assert result.returncode == 0, result.output
        assert result.changed > 0
        a_public = self.a.exec("wg", "show", self.a.ifname, "public-key").stdout.strip()
        self.b.write_config(
            self.lab.config_for(self.b, peers=[]).rstrip("\n")
            + "\n"
            + "\n".join(
                [
                    f"[[interface.{self.b.ifname}.peer]]",
                    f'public_key = "{a_public}"',
                    f'endpoint = "{self.a.underlay}:51820"',
                    f'allowed_ips = ["{self.a.tunnel_ip}/32"]',
                ]
            )
            + "\n"
        )
        self.b.run("apply")


@pytest.fixture
def fleet(tmp_path: Path, ansible_playbook: Path) -> Iterator[Fleet]:
    lab = Lab(tmp_path, 2)
    try:
        lab.make_keys()
        a, b = lab.hosts
        role_host = AnsibleHost(ansible_playbook, a.ns, tmp_path / "role", lab.token)
        yield Fleet(lab, role_host, a, b)
    finally:
        lab.close()


def read(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def test_check_mode_on_a_fresh_host_shows_the_diff_and_changes_nothing(fleet: Fleet) -> None:
    host, a = fleet.role_host, fleet.a
    before = a.snapshot()
    result = fleet.play(fleet.config(), check=True, diff=True)
    assert result.returncode == 0, result.output
    assert result.changed > 0
    # --diff shows the file the role would write.
    assert f"+[interface.{a.ifname}]" in result.output
    assert "+listen_port = 51820" in result.output
    assert not host.config_path.exists()
    assert not host.state_dir.exists()
    assert a.ifname not in a.links()
    assert a.snapshot() == before


def test_first_run_changes_then_none(fleet: Fleet) -> None:
    host, a, b = fleet.role_host, fleet.a, fleet.b
    fleet.converge()
    assert a.ping(b.tunnel_ip)
    assert a.links()[a.ifname]["ifalias"] == "managed-by=bmx7-wg"
    # The key was made on the host, where the role's variables put it, and is private.
    key = host.key_path(a.ifname)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(host.state_dir.stat().st_mode) == 0o700
    text = host.config_path.read_text()
    assert f"[interface.{a.ifname}]" in text and f'public_key = "{b.public_key}"' in text

    before, config_before = a.snapshot(), read(host.config_path)
    again = fleet.play(fleet.config())
    assert again.returncode == 0, again.output
    assert again.changed == 0, again.output
    checked = fleet.play(fleet.config(), check=True, diff=True)
    assert checked.returncode == 0, checked.output
    assert checked.changed == 0, checked.output
    assert a.snapshot() == before
    assert read(host.config_path) == config_before
    assert a.ping(b.tunnel_ip)


def test_check_mode_reports_a_pending_change_and_makes_none(fleet: Fleet) -> None:
    host, a = fleet.role_host, fleet.a
    fleet.converge()
    new = fleet.config(addresses=[f"{a.tunnel_ip}/24", "10.78.0.1/24"])
    before, config_before = a.snapshot(), read(host.config_path)

    checked = fleet.play(new, check=True, diff=True)
    assert checked.returncode == 0, checked.output
    assert checked.changed >= 2, checked.output  # the file and the plan
    assert '+addresses = ["10.77.0.1/24", "10.78.0.1/24"]' in checked.output
    assert '"action": "add_address"' in checked.output  # the plan, as the role shows it
    assert a.snapshot() == before
    assert read(host.config_path) == config_before

    applied = fleet.play(new)
    assert applied.returncode == 0 and applied.changed > 0, applied.output
    assert "10.78.0.1/24" in a.exec("ip", "addr", "show", "dev", a.ifname).stdout
    assert fleet.play(new).changed == 0


BAD_VALUES: dict[str, tuple[dict[str, Any], str]] = {
    "port out of range": (
        {"listen_port": 99999},
        r":\d+:\d+: interface\.\w+\.listen_port: 99999 is out of range",
    ),
    "misspelt key": ({"listen_prot": 51821}, r":\d+:\d+: .*listen_prot.*did you mean"),
    "bad address": ({"addresses": ["10.77.0.300/24"]}, r":\d+:\d+: .*addresses"),
}


def test_a_bad_value_fails_the_play_and_keeps_the_old_file_and_tunnels(fleet: Fleet) -> None:
    host, a, b = fleet.role_host, fleet.a, fleet.b
    fleet.converge()
    before, config_before = a.snapshot(), read(host.config_path)
    for case, (settings, message) in BAD_VALUES.items():
        for check in (False, True):
            result = fleet.play(fleet.config(**settings), check=check)
            what = f"{case}, check mode {check}:\n{result.output}"
            assert result.returncode != 0 and result.failed == 1, what
            # bmx7-wg's own PATH:LINE:COL message reaches the user.
            assert re.search(message, result.output), what
            assert "nothing was changed" in result.output, what
            assert read(host.config_path) == config_before, what
            assert a.snapshot() == before, what
    assert a.ping(b.tunnel_ip)


def test_the_service_is_reloaded_after_a_change_only_when_it_runs(fleet: Fleet) -> None:
    host, a = fleet.role_host, fleet.a
    fleet.converge()  # the service does not run: asked about, never reloaded nor started
    calls = host.systemctl_calls()
    assert calls and all("reload" not in c and "start" not in c for c in calls), calls

    changed = fleet.config(mtu=1400)
    result = fleet.play(changed, service_runs=True)
    assert result.returncode == 0, result.output
    assert f"reload {host.service_name}" in host.systemctl_calls()
    assert a.links()[a.ifname]["mtu"] == 1400

    n = len(host.systemctl_calls())
    assert fleet.play(changed, service_runs=True).changed == 0
    assert len(host.systemctl_calls()) == n  # nothing changed: no reload


def test_no_private_key_in_the_play_output(fleet: Fleet) -> None:
    host, a = fleet.role_host, fleet.a
    first = fleet.play(fleet.config(), diff=True, verbosity=3)
    assert first.returncode == 0, first.output
    checked = fleet.play(fleet.config(mtu=1400), check=True, diff=True, verbosity=3)
    assert checked.returncode == 0, checked.output
    private = host.key_path(a.ifname).read_text().strip()
    assert private
    for output in (first.output, checked.output):
        assert private not in output
        assert base64.b64decode(private).hex() not in output
    # The public key is what the role publishes.
    public = a.exec("wg", "show", a.ifname, "public-key").stdout.strip()
    assert public in first.output


@pytest.fixture(scope="session")
def built_bmx7() -> Path:
    """The real bmx7, built from its pinned source with the package's patches."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-bmx7")], capture_output=True, text=True, check=False, timeout=1200
    )
    assert proc.returncode == 0, f"scripts/build-bmx7 failed:\n{proc.stdout}\n{proc.stderr}"
    return Path(proc.stdout.strip().splitlines()[-1])


# bmx7.service's start script, as the package installs it (/usr/libexec/bmx7/bmx7-service).
BMX7_SERVICE = REPO / "packaging" / "bmx7" / "debian" / "bmx7-service"


def wait_until(what: str, condition: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.2)


def test_the_role_runs_bmx7_and_its_nodes_become_each_others_peers(
    tmp_path: Path, ansible_playbook: Path, built_bmx7: Path
) -> None:
    lab = Lab(tmp_path, 2)
    role_hosts: dict[str, AnsibleHost] = {}
    services: list[subprocess.Popen[str]] = []
    try:
        a, b = lab.hosts
        # The mesh link (IPv6 link-local, which bmx7 needs; the lab's eth0 has none).
        sh(
            "ip",
            "link",
            "add",
            "mesh0",
            "netns",
            a.ns,
            "type",
            "veth",
            "peer",
            "name",
            "mesh0",
            "netns",
            b.ns,
        )
        for h in (a, b):
            h.exec("sh", "-c", "echo 0 > /proc/sys/net/ipv6/conf/mesh0/accept_dad")
            h.exec("ip", "link", "set", "mesh0", "up")
        for h in (a, b):
            work = tmp_path / f"node{h.index}"
            host = role_hosts[h.ns] = AnsibleHost(ansible_playbook, h.ns, work, f"{lab.token}{h.index}")
            unit = f"bmx7-test-{lab.token}{h.index}"
            default = work / "etc" / "default-bmx7"
            host.unit_start_script(
                unit,
                f"""#!/bin/sh
# bmx7.service of this test host: the package's start script, configured by the file the
# role wrote, with the built daemon and its plugins.
set -a
. {default}
BMX7_RUNTIME_DIR={work}/run BMX7_DAEMON={built_bmx7} BMX7_LIB_PATH={built_bmx7.parent / "lib"}
set +a
{BMX7_SERVICE} --check || exit 0
mkdir -p {work}/run
setsid {BMX7_SERVICE} >> {work}/bmx7.log 2>&1 < /dev/null &
echo $! > {host.systemd_dir}/{unit}.pid
""",
            )
            role_vars = {
                "bmx7_wg_bmx7": True,
                "bmx7_wg_bmx7_interfaces": ["mesh0"],
                "bmx7_wg_bmx7_options": [
                    "nodeRsaKey=6",
                    f"/keyPath={work}/rsa.der",
                    f"descSqnPath={work}/descSqn",
                ],
                "bmx7_wg_bmx7_default_path": str(default),
                "bmx7_wg_bmx7_service_name": unit,
            }
            config = {
                "bmx7": {"runtime_dir": f"{work}/run"},
                "interface": {h.ifname: {"mesh": True, "backend": BACKEND}},
            }
            result = host.play(config, role_vars=role_vars)
            assert result.returncode == 0, result.output
            assert 'BMX7_INTERFACES="mesh0"' in default.read_text()
            calls = host.systemctl_calls()
            # Enabled, and started (systemd's "restart" of a unit that does not run is a start).
            started = [c for c in calls if c.split()[0] in ("start", "restart")]
            assert started and f"enable {unit}" in calls, calls
            pid = host.unit_pid(unit)
            assert pid is not None, (work / "bmx7.log").read_text() if (work / "bmx7.log").exists() else ""

            # Unchanged: bmx7 is neither restarted nor started again.
            again = host.play(config, role_vars=role_vars)
            assert again.returncode == 0 and again.changed == 0, again.output
            assert host.unit_pid(unit) == pid
            assert [c for c in host.systemctl_calls() if c.split()[0] in ("start", "restart")] == started

            # bmx7-wg as its service runs it, on each host.
            services.append(
                subprocess.Popen(
                    ["ip", "netns", "exec", h.ns, *bmx7_wg_command(), "-c", str(host.config_path), "run"],
                    stdout=subprocess.DEVNULL,
                    stderr=(work / "bmx7-wg.log").open("w"),
                    env={**child_env(), "BMX7_WG_RUN_DIR": str(work / "state")},
                    text=True,
                )
            )

        def peers(h: Host) -> int:
            out = h.exec("wg", "show", h.ifname, "peers", check=False).stdout
            return len(out.split())

        wait_until("the two nodes are each other's WireGuard peers", lambda: peers(a) == 1 and peers(b) == 1)
    finally:
        for proc in services:
            proc.terminate()
            proc.wait(timeout=30)
        for host in role_hosts.values():
            for pid_file in host.systemd_dir.glob("*.pid"):
                text = pid_file.read_text().strip()
                if text:
                    subprocess.run(["kill", text], check=False)
        lab.close()


def test_the_names_settings_reach_the_file(fleet: Fleet) -> None:
    host = fleet.role_host
    hosts_file = str(host.workdir / "hosts")
    names = {"bmx7_wg_hosts_file": hosts_file, "bmx7_wg_names_domain": "mesh.example"}
    result = fleet.play(fleet.config(), role_vars=names)
    assert result.returncode == 0, result.output
    text = host.config_path.read_text()
    assert f'[names]\nhosts_file = "{hosts_file}"\ndomain = "mesh.example"\n' in text
    # A names mapping in bmx7_wg_config wins; "" (no names) is a value, not an absence.
    result = fleet.play({**fleet.config(), "names": {"hosts_file": ""}}, role_vars=names)
    assert result.returncode == 0, result.output
    assert '[names]\nhosts_file = ""\ndomain = "mesh.example"\n' in host.config_path.read_text()
    result = fleet.play(fleet.config(), role_vars={"bmx7_wg_names_domain": "Mesh"})
    assert result.returncode != 0
    assert "names.domain" in result.output and "lower case" in result.output


def test_a_change_with_a_confirmation_timeout_is_confirmed_by_the_play(fleet: Fleet) -> None:
    host, a, b = fleet.role_host, fleet.a, fleet.b
    fleet.converge()
    confirm = {"bmx7_wg_confirm_timeout": 60}
    result = fleet.play(fleet.config(mtu=1380), role_vars=confirm)
    assert result.returncode == 0, result.output
    assert result.changed > 0, result.output
    # Applied with apply --confirm, confirmed by the play: the change and the new file stay.
    assert a.links()[a.ifname]["mtu"] == 1380
    assert "mtu = 1380" in host.config_path.read_text()
    assert not Path(f"{host.config_path}.new").exists()
    assert a.ping(b.tunnel_ip)
    again = fleet.play(fleet.config(mtu=1380), role_vars=confirm)
    assert again.returncode == 0, again.output
    assert again.changed == 0, again.output
