"""Run `bmx7-wg run` as a service would run, next to a private journald, with a notify socket.

The service runs in a private mount and PID namespace (so a private journald can own
/run/systemd/journal), inside a test host's network namespace. The journal files are
written to a directory of the test, read afterwards with `journalctl -D`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import REPO, bmx7_wg_command, child_env

# Under software emulation (make test-vm) every process start is ~20 times slower.
SLOW = 8.0 if os.environ.get("BMX7_WG_IN_VM") else 1.0

# Runs in a private mount namespace: mount the private journal directories, start
# journald (its PID in $JOURNAL_DIR/../journald.pid, ended by the test), wait for its
# socket, then become the service. No PID namespace: the wireguard-go daemons the
# service starts must outlive it, as they do under systemd with KillMode=process.
_WRAPPER = r"""
set -e
# A machine without systemd as PID 1 (the test VM) has no /run/systemd to mount over.
mkdir -p /run/systemd /run/log
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mkdir -p /run/log/journal
# The metrics textfile's default directory (prometheus-node-exporter's): the machine's own
# is never written by a test's service.
if [ -d /var/lib/prometheus ]; then mount -t tmpfs tmpfs /var/lib/prometheus; fi
# Volatile storage (journald writes /run/log/journal until asked to flush): the test's directory.
mount --bind "$JOURNAL_DIR" /run/log/journal
env -u NOTIFY_SOCKET -u WATCHDOG_USEC /lib/systemd/systemd-journald &
echo $! > "$JOURNAL_DIR/../journald.pid"
i=0
while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 200 ]; do sleep 0.01; i=$((i+1)); done
exec ip netns exec "$NETNS" "$@"
"""


class Service:
    def __init__(
        self,
        workdir: Path,
        netns: str,
        config_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
        command: list[str] | None = None,
        run_dir: Path | None = None,
    ) -> None:
        self.workdir = workdir
        self.journal_dir = workdir / "journal"
        self.journal_dir.mkdir(exist_ok=True)
        self.notify_path = str(workdir / "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if os.path.exists(self.notify_path):
            os.unlink(self.notify_path)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.2)
        self.messages: list[str] = []
        extra = env or {}
        env = child_env()
        # The service's state files (mesh memory): per test, not the machine's /run/bmx7-wg.
        self.run_dir = run_dir or workdir / "run"
        env["BMX7_WG_RUN_DIR"] = str(self.run_dir)
        env.update(extra)
        env.update(
            JOURNAL_DIR=str(self.journal_dir),
            NETNS=netns,
            NOTIFY_SOCKET=self.notify_path,
            BMX7_WG_LOG="journal",
        )
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            _WRAPPER,
            "wrapper",
            *(command or bmx7_wg_command()),
            "-c",
            str(config_path),
            "run",
            *args,
        ]
        self.stderr_path = workdir / "service.stderr"
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=self._stderr, stderr=self._stderr)

    @property
    def pid(self) -> int:
        """The service's PID: unshare and the wrapper exec into it."""
        return self.proc.pid

    def wait_notify(self, prefix: str, timeout: float = 20.0) -> str:
        """The next notify message with a line starting with `prefix` (e.g. READY=1)."""
        deadline = time.monotonic() + timeout * SLOW
        while time.monotonic() < deadline:
            for message in self.messages:
                if any(line.startswith(prefix) for line in message.splitlines()):
                    self.messages.remove(message)
                    return message
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except TimeoutError:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        f"service exited {self.proc.returncode}: {self.stderr_path.read_text()}"
                    ) from None
        raise AssertionError(f"no {prefix} from the service within {timeout} s; got {self.messages}")

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def running(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            try:
                self.signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=15 * SLOW)  # a stop under emulation took longer than 15 s
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        pid_file = self.workdir / "journald.pid"
        if pid_file.exists():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except ProcessLookupError:
                pass
        self._stderr.close()
        self.notify.close()
        return self.proc.returncode

    def journal(self, *match: str) -> list[dict[str, Any]]:
        """Journal entries (journalctl -o json), optionally filtered by FIELD=value matches."""
        # journald flushes to the file on its own schedule; entries may take a moment.
        out = subprocess.run(
            ["journalctl", "-D", str(self.journal_dir), "-o", "json", "--no-pager", *match],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_journal(self, *match: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout * SLOW
        entries: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            entries = self.journal(*match)
            if len(entries) >= count:
                return entries
            time.sleep(0.1)
        ours = [e.get("MESSAGE") for e in self.journal("SYSLOG_IDENTIFIER=bmx7-wg")]
        raise AssertionError(f"journal has {len(entries)} entries for {match}; bmx7-wg logged: {ours[-30:]}")


def cli(netns: str, config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, *bmx7_wg_command(), "-c", str(config_path), *args],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
