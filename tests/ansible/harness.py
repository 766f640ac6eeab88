"""Run the example playbook (contrib/ansible/playbook.yml) against a test host.

The test host is a network namespace on this machine, reached with `connection: local`:
ansible-playbook runs under `ip netns exec NS`, so the role's `bmx7-wg apply` acts inside
that namespace. The role's paths point into a test directory instead of /etc and /var/lib,
its bmx7_wg_command at tests/ansible/bmx7-wg (this checkout), and systemctl at a stand-in
(tests/ansible/bin/systemctl) that says which units run and records what it is asked; a unit
with a start script in `systemd_dir` (`AnsibleHost.unit_start_script`) is run for real.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLAYBOOK = REPO / "contrib" / "ansible" / "playbook.yml"
WRAPPER = HERE / "bmx7-wg"
FAKE_BIN = HERE / "bin"


def install_ansible() -> Path:
    """The pinned ansible-core in .venvs/ansible (installed from PyPI on first use)."""
    proc = subprocess.run(
        [str(HERE / "install-ansible")], capture_output=True, text=True, check=False, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"installing ansible-core failed:\n{proc.stdout}\n{proc.stderr}")
    return Path(proc.stdout.strip().splitlines()[-1])


@dataclass(frozen=True)
class PlayResult:
    returncode: int
    output: str  # stdout and stderr of ansible-playbook
    recap: dict[str, int]  # this host's PLAY RECAP counters: ok, changed, failed, ...

    @property
    def changed(self) -> int:
        return self.recap.get("changed", 0)

    @property
    def failed(self) -> int:
        return self.recap.get("failed", 0)


class AnsibleHost:
    """One test host: namespace `ns`, its role paths under `workdir`."""

    def __init__(self, ansible_playbook: Path, ns: str, workdir: Path, token: str) -> None:
        self.ansible_playbook = ansible_playbook
        self.ns = ns
        self.workdir = workdir
        self.config_path = workdir / "etc" / "bmx7-wg.toml"
        self.state_dir = workdir / "var-lib-bmx7-wg"
        self.service_name = f"bmx7-wg-test-{token}"
        self.systemctl_log = workdir / "systemctl.log"
        self.systemd_dir = workdir / "systemd"
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.systemd_dir.mkdir(parents=True, exist_ok=True)

    def key_path(self, ifname: str) -> Path:
        return self.state_dir / f"{ifname}.key"

    def unit_start_script(self, unit: str, script: str) -> None:
        """What the stand-in systemctl runs to start `unit` (a shell script that starts the
        daemon in the background and writes its PID to `systemd_dir/UNIT.pid`)."""
        path = self.systemd_dir / f"{unit}.start"
        path.write_text(script)
        path.chmod(0o755)

    def unit_pid(self, unit: str) -> int | None:
        """The PID the start script of `unit` wrote, if any."""
        path = self.systemd_dir / f"{unit}.pid"
        text = path.read_text().strip() if path.exists() else ""
        return int(text) if text else None

    def inventory(self, config: dict[str, Any], role_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        host_vars = {
            "ansible_connection": "local",
            # Modules run with ansible's own interpreter; there is no sudo to become root
            # with, and no need: the tests run as root.
            "ansible_python_interpreter": str(self.ansible_playbook.parent / "python"),
            "ansible_become": False,
            "bmx7_wg_install": False,
            "bmx7_wg_command": str(WRAPPER),
            "bmx7_wg_config_path": str(self.config_path),
            "bmx7_wg_state_dir": str(self.state_dir),
            "bmx7_wg_service_name": self.service_name,
            "bmx7_wg_config": config,
            **(role_vars or {}),
        }
        return {"bmx7_wg": {"hosts": {"testhost": host_vars}}}

    def play(
        self,
        config: dict[str, Any],
        *,
        check: bool = False,
        diff: bool = False,
        verbosity: int = 0,
        service_runs: bool = False,
        role_vars: dict[str, Any] | None = None,
    ) -> PlayResult:
        run_dir = self.workdir / "ansible"
        run_dir.mkdir(exist_ok=True)
        inventory = run_dir / "inventory.yml"
        # JSON is YAML: the inventory needs no YAML writer here.
        inventory.write_text(json.dumps(self.inventory(config, role_vars), indent=2))
        cmd = ["ip", "netns", "exec", self.ns, str(self.ansible_playbook), "-i", str(inventory)]
        cmd += ["--check"] if check else []
        cmd += ["--diff"] if diff else []
        cmd += ["-" + "v" * verbosity] if verbosity else []
        cmd.append(str(PLAYBOOK))
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=self._env(run_dir, service_runs), timeout=300
        )
        output = proc.stdout + proc.stderr
        return PlayResult(proc.returncode, output, _recap(output, "testhost"))

    def _env(self, run_dir: Path, service_runs: bool) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "PYTHON"))}
        env.update(
            {
                "PATH": f"{FAKE_BIN}{os.pathsep}{env.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
                # ansible-core refuses to start without a UTF-8 locale.
                "LC_ALL": "C.UTF-8",
                "ANSIBLE_HOME": str(run_dir / "home"),
                "ANSIBLE_LOCAL_TEMP": str(run_dir / "tmp"),
                "ANSIBLE_REMOTE_TMP": str(run_dir / "tmp"),
                "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_RETRY_FILES_ENABLED": "0",
                "ANSIBLE_STDOUT_CALLBACK": "default",
                # bmx7-wg runs with the same libraries as the test that drives it.
                "BMX7_WG_PYTHON": sys.executable,
                "FAKE_SYSTEMCTL_LOG": str(self.systemctl_log),
                "FAKE_SYSTEMCTL_DIR": str(self.systemd_dir),
                "FAKE_SYSTEMCTL_ACTIVE": self.service_name if service_runs else "",
            }
        )
        return env

    def systemctl_calls(self) -> list[str]:
        if not self.systemctl_log.exists():
            return []
        return self.systemctl_log.read_text().splitlines()


def _recap(output: str, host: str) -> dict[str, int]:
    for line in output.splitlines():
        if re.match(rf"^{re.escape(host)}\s+:\s+ok=", line):
            return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    return {}
