"""Starting wireguard-go, the userspace WireGuard daemon, for a new interface.

What wireguard-go 0.0.20220316 does when started as `wireguard-go NAME` without
WG_PROCESS_FOREGROUND (checked by hand):
- the first process creates the TUN interface in its network namespace and binds the
  control socket `/var/run/wireguard/NAME.sock` (path hard-coded), then re-executes itself
  as the daemon with both passed as file descriptors, and exits 0. So when it has exited
  0, the interface and a listening socket exist; a failure exits 1 with an `ERROR:` line
  on stdout (its logger writes to stdout).
- it always prints a banner to stderr ("kernel has first class support...").
- the daemon gets /dev/null as stdin, stdout and stderr, unless LOG_LEVEL is set (to
  anything but "silent"): then it inherits the caller's stdout and stderr. A pipe we read
  to EOF would then never close (measured: the caller hangs), and a pipe we closed would
  kill the daemon with SIGPIPE at its first log line (Go's rule for descriptors 1 and 2).
  wireguard-go logs at the "error" level by default anyway, so start-up failures are
  still printed: we run it without LOG_LEVEL, exactly as wg-quick does.
- the whole start takes ~5-10 ms; the daemon runs until its interface is deleted
  (`ip link del NAME`), which also removes the socket. It stays in the caller's cgroup.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time

from bmx7_wg.errors import ApplyError, BackendUnavailable, ConflictError
from bmx7_wg.wireguard.uapi import DEFAULT_SOCKET_DIR, DeviceUnreachable, UapiClient, wait_until_ready

PROGRAM = "wireguard-go"
ENV_OVERRIDE = "BMX7_WG_WIREGUARD_GO"
START_TIMEOUT = 5.0

# Variables that change how wireguard-go starts: inherited ones would make it run in the
# foreground (blocking us), reuse file descriptors we do not own, or keep our stdio.
_CONTROL_ENV = ("WG_PROCESS_FOREGROUND", "WG_TUN_FD", "WG_UAPI_FD", "WG_TUN_NAME_FILE", "LOG_LEVEL")
# "ERROR: (wg0) 2022/03/16 12:00:00 Failed to create TUN device: ..." -> the message only.
_LOG_PREFIX = re.compile(r"^[A-Z]+: \([^)]*\) \S+ \S+ ")
_BANNER_CHARS = "┌│└"


class WireGuardGoError(ApplyError):
    """wireguard-go could not create or start a device."""

    def __init__(self, interface: str, message: str) -> None:
        self.interface = interface
        super().__init__(f"{interface}: {message}")


def find_wireguard_go() -> str | None:
    """The wireguard-go executable: $BMX7_WG_WIREGUARD_GO (a path or a name), else PATH."""
    override = os.environ.get(ENV_OVERRIDE)
    if override:
        if os.sep in override:
            return override if os.path.isfile(override) and os.access(override, os.X_OK) else None
        return shutil.which(override)
    return shutil.which(PROGRAM)


def _check_name(name: str) -> None:
    # wireguard-go reads "-f"/"--foreground"/"--version" as options and creates an
    # interface from anything else, even "-h": only plain interface names get through.
    if not 1 <= len(name) <= 15 or name.startswith("-") or any(
        c in name for c in "/ \t\n\0:"
    ):
        raise WireGuardGoError(name, "not a valid interface name for wireguard-go")


def _messages(printed: bytes) -> str:
    lines = []
    for line in printed.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line[0] in _BANNER_CHARS:
            continue
        lines.append(_LOG_PREFIX.sub("", line))
    return "; ".join(lines)


SOCKET_RELEASE_WAIT = 2.0  # seconds


def _link_exists(name: str) -> bool:
    try:
        socket.if_nametoindex(name)
    except OSError:
        return False
    return True


def _launch(program: str, name: str, timeout: float) -> tuple[int, str]:
    """Run wireguard-go's launcher for `name`: its exit status and its messages."""
    env = {k: v for k, v in os.environ.items() if k not in _CONTROL_ENV}
    # Its output goes to a file, not a pipe: nothing then depends on when every copy of
    # the descriptor is closed. start_new_session keeps the daemon out of our process group,
    # so a Ctrl-C aimed at bmx7-wg does not take the tunnel down with it.
    with tempfile.TemporaryFile() as output:
        try:
            proc = subprocess.Popen(
                [program, name],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=output,
                env=env,
                close_fds=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise BackendUnavailable(f"{name}: cannot run {program}: {exc.strerror}") from None
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise WireGuardGoError(
                name, f"{program} did not finish starting within {timeout:g} s"
            ) from None
        output.seek(0)
        printed = output.read()
    return code, _messages(printed) or f"exit status {code}"


def _socket_released(name: str, socket_path: str, timeout: float) -> bool:
    """Wait until the socket is gone or refuses connections, while no interface of that
    name is in this namespace; whether it was released within `timeout`."""
    deadline = time.monotonic() + timeout
    client = UapiClient(os.path.dirname(socket_path))
    while not _link_exists(name):
        if not os.path.exists(socket_path) or not client.answers(name):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return False


def _started_by_another(name: str, socket_dir: str, timeout: float) -> bool:
    """Whether the interface exists in this namespace and its daemon answers within
    `timeout`: another wireguard-go started it while ours was starting."""
    if not _link_exists(name):
        return False
    try:
        wait_until_ready(UapiClient(socket_dir), name, timeout)
    except DeviceUnreachable:
        return False
    return True


def start(name: str, socket_dir: str = DEFAULT_SOCKET_DIR, timeout: float = START_TIMEOUT) -> None:
    """Create interface `name` in the current network namespace, run by a wireguard-go daemon.

    The daemon outlives this process; deleting the interface stops it. Returns once the
    device answers on its socket. Raises BackendUnavailable without wireguard-go and
    WireGuardGoError when it fails (with its own message) or does not answer in `timeout`.
    `socket_dir` must be where this process sees wireguard-go's socket directory.
    """
    _check_name(name)
    program = find_wireguard_go()
    if program is None:
        where = os.environ.get(ENV_OVERRIDE)
        hint = f"{ENV_OVERRIDE}={where} is not an executable" if where else "not found in PATH"
        raise BackendUnavailable(
            f"{name}: the userspace backend needs wireguard-go ({hint}); "
            "install the wireguard-go package"
        )
    # A daemon whose interface was just deleted (by `down`, by a person, or an earlier
    # apply killed half-way) exits on its own a moment later and takes its socket with it.
    # Starting over it would fail with "unix socket in use": give it that moment.
    # (A stale socket, whose daemon was killed, counts as released: wireguard-go replaces it.)
    socket_path = os.path.join(socket_dir, f"{name}.sock")
    client = UapiClient(socket_dir)
    if not _link_exists(name) and client.answers(name) and name not in client.served_here():
        # The socket directory is shared by every network namespace: this socket is a
        # daemon's in another one. wireguard-go would refuse it anyway; say so at once.
        raise ConflictError(
            f"{name}: a wireguard-go of that name runs in another network namespace (its "
            f"socket {socket_path} is shared by all namespaces); bmx7-wg does not touch it"
        )
    _socket_released(name, socket_path, SOCKET_RELEASE_WAIT)
    code, detail = _launch(program, name, timeout)
    if code != 0 and _started_by_another(name, socket_dir, timeout):
        # An apply killed a moment ago can leave its wireguard-go starting this same
        # interface; ours then finds the TUN or the socket taken. Theirs is the device.
        return
    if code != 0 and "unix socket in use" in detail and _socket_released(name, socket_path, timeout):
        # The socket's daemon had no interface here: one whose interface was deleted,
        # still shutting down. It has gone now; start again, once.
        code, detail = _launch(program, name, timeout)
    if code != 0:
        if "unix socket in use" in detail:
            detail += (
                f" (another wireguard-go already serves {name}, maybe in another network "
                "namespace: the socket directory is shared)"
            )
        raise WireGuardGoError(name, f"wireguard-go could not create the device: {detail}")
    if not _link_exists(name):
        raise WireGuardGoError(
            name, "wireguard-go exited successfully but the interface is not in this namespace"
        )
    client = UapiClient(socket_dir)
    try:
        wait_until_ready(client, name, timeout)
    except DeviceUnreachable:
        raise WireGuardGoError(
            name,
            f"wireguard-go started but its socket {client.socket_path(name)} did not answer "
            f"within {timeout:g} s",
        ) from None
