"""The service's memory across its own restarts: the last mesh view, in a state file.

One file per mesh interface, `<run dir>/mesh-<interface>.json` (run dir `/run/bmx7-wg`,
root only, mode 0700; a tmpfs, so it is gone after a reboot; `BMX7_WG_RUN_DIR` moves it
for tests). It holds each mesh peer as last seen: node id, public key, endpoint (the
node's fd70 address and announced port), allowed IPs (its /128 and accepted networks),
name, and when it was last seen.

It is used for one thing only: a restarted service holds a peer whose announcement is
missing at that moment (bmx7 may be rewriting or refilling its files) for what is left of
its grace period, instead of removing it and adding it back. It never decides trust: the
service restores only peers the device still has, and the trust policy in force drops a
held peer at once (see mesh/grace.py). A file that cannot be read or does not parse is
ignored with a warning.

Reading it never waits and never leaves the directory: the directory is made 0700 and
ours (lock.private_directory, as for the lock files beside it), and the file is opened
relative to it without following a symlink and without blocking (a FIFO there would
otherwise block the service's start for ever), then judged on the open descriptor: a
private regular file (lock.is_private) of at most MAX_SIZE, or it is ignored.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from bmx7_wg.base.iptext import canonical_network
from bmx7_wg.base.nodeid import NODE_ID_RE
from bmx7_wg.keys import decode_key
from bmx7_wg.lock import is_private, private_directory
from bmx7_wg.mesh.grace import Remembered
from bmx7_wg.plan.state import Peer

log = logging.getLogger(__name__)

RUN_DIR = "/run/bmx7-wg"
FORMAT = 1
MAX_SIZE = 16 * 1024 * 1024  # far above 10,000 peers; a larger file is not ours
# seconds: a full reconcile rewrites the state file if its peers changed or it is this old.
# Steps never write it (a write is in proportion to the mesh): what they changed is
# written by the next full reconcile, at the latest the periodic one, and when the
# service stops.
SAVE_EVERY = 30.0


def run_dir() -> str:
    return os.environ.get("BMX7_WG_RUN_DIR") or RUN_DIR


class MeshMemory:
    def __init__(self, directory: str | None = None) -> None:
        self.directory = directory or run_dir()

    def path(self, interface: str) -> str:
        return os.path.join(self.directory, f"mesh-{interface}.json")

    def load(self, interface: str) -> dict[str, Remembered]:
        path = self.path(interface)
        try:
            data = _read_private(self.directory, os.path.basename(path))
        except FileNotFoundError:
            return {}
        except OSError as exc:
            log.warning("cannot read the mesh state file %s (%s); starting without it", path, exc.strerror)
            return {}
        except ValueError as exc:
            log.warning("ignoring the mesh state file %s: it %s", path, exc)
            return {}
        try:
            return parse(json.loads(data), interface)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("ignoring the mesh state file %s: %s", path, exc)
            return {}

    def save(self, interface: str, remembered: Mapping[str, Remembered]) -> None:
        path = self.path(interface)
        name = os.path.basename(path)
        tmp = f"{name}.{os.getpid()}.tmp"
        try:
            dir_fd = private_directory(self.directory)
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp, dir_fd=dir_fd)  # left by a killed process of this pid
                fd = os.open(
                    tmp,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dir_fd,
                )
                try:
                    with os.fdopen(fd, "w") as fh:
                        _write_state(fh, interface, remembered)
                    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp, dir_fd=dir_fd)
                    raise
            finally:
                os.close(dir_fd)
        except OSError as exc:
            # Only the memory across a restart is lost: nothing else depends on it.
            log.warning("cannot write the mesh state file %s (%s)", path, exc.strerror or exc)


class MemoryWriter:
    """Writes the state file when it is worth it (SAVE_EVERY); `clock` is injectable."""

    def __init__(self, memory: MeshMemory, clock: Callable[[], float] = time.monotonic) -> None:
        self.memory = memory
        self.clock = clock
        self._saved: tuple[dict[str, Peer], float] | None = None  # what the file holds, and when

    def save(self, interface: str, remembered: Mapping[str, Remembered], *, force: bool = False) -> None:
        """Write `remembered` if `force`, if its peers are not what the file holds (the
        times they were last seen aside), or if the file is SAVE_EVERY old."""
        peers = {n: r.peer for n, r in remembered.items()}
        now = self.clock()
        if force or self._saved is None or self._saved[0] != peers or now - self._saved[1] >= SAVE_EVERY:
            self.memory.save(interface, remembered)
            self._saved = (peers, now)


def _read_private(directory: str, name: str) -> bytes:
    """The bytes of `directory/name` if it is a private regular file of at most MAX_SIZE;
    FileNotFoundError if there is none, ValueError (why) if it is not such a file."""
    dir_fd = private_directory(directory)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise ValueError("is a symbolic link") from None
            raise
    finally:
        os.close(dir_fd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if not is_private(st):
            raise ValueError("is not a private file of this user (owner, mode or links)")
        if st.st_size > MAX_SIZE:
            raise ValueError(f"is too large ({st.st_size} > {MAX_SIZE} bytes)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            data = fh.read(MAX_SIZE + 1)
        if len(data) > MAX_SIZE:
            raise ValueError(f"is too large (> {MAX_SIZE} bytes)")
        return data
    finally:
        os.close(fd)


def _write_state(fh: TextIO, interface: str, remembered: Mapping[str, Remembered]) -> None:
    """format_state's JSON, written peer by peer: json.dumps has the C encoder (json.dump
    does not), and no text of the whole file is ever held (10,000 peers: ~2.5 MB)."""
    head = format_state(interface, {})
    del head["peers"]
    fh.write(json.dumps(head, separators=(",", ":"))[:-1] + ',"peers":[')
    for i, (node_id, r) in enumerate(sorted(remembered.items())):
        fh.write(("," if i else "") + json.dumps(_entry(node_id, r), separators=(",", ":")))
    fh.write("]}")


def format_state(interface: str, remembered: Mapping[str, Remembered]) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "interface": interface,
        "peers": [_entry(node_id, r) for node_id, r in sorted(remembered.items())],
    }


def _entry(node_id: str, r: Remembered) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "public_key": r.peer.public_key,
        "endpoint": r.peer.endpoint,
        "allowed_ips": sorted(r.peer.allowed_ips),
        "persistent_keepalive": r.peer.persistent_keepalive,
        "name": r.peer.name,
        "last_seen": round(r.last_seen, 3),
    }


def parse(obj: Any, interface: str) -> dict[str, Remembered]:
    """The peers of a state file; ValueError (or TypeError, KeyError) if it is not one."""
    if obj.get("format") != FORMAT or obj.get("interface") != interface:
        raise ValueError(f"not a format-{FORMAT} state file of {interface}")
    out: dict[str, Remembered] = {}
    for entry in obj["peers"]:
        node_id = entry["node_id"]
        if not isinstance(node_id, str) or not NODE_ID_RE.match(node_id) or node_id != node_id.upper():
            raise ValueError(f"bad node id {node_id!r}")
        decode_key(entry["public_key"])
        endpoint = entry["endpoint"]
        if endpoint is not None and not isinstance(endpoint, str):
            raise ValueError(f"bad endpoint {endpoint!r}")
        ips = entry["allowed_ips"]
        if not all(isinstance(ip, str) and canonical_network(ip) is not None for ip in ips):
            raise ValueError(f"bad allowed IPs {ips!r}")
        keepalive = entry["persistent_keepalive"]
        last_seen = entry["last_seen"]
        name = entry["name"]
        if (
            not isinstance(keepalive, int)
            or not isinstance(last_seen, int | float)
            or not (name is None or isinstance(name, str))
        ):
            raise ValueError(f"bad entry for {node_id}")
        peer = Peer(
            public_key=entry["public_key"],
            allowed_ips=frozenset(ips),
            endpoint=endpoint,
            persistent_keepalive=keepalive,
            name=name,
            source="mesh",
            node_id=node_id,
        )
        out[node_id] = Remembered(peer, float(last_seen))
    return out
