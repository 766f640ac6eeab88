"""The boundary to a running bmx7: its control socket, JSON files, SMS and trust files.

Thin I/O only; parsing is done by small pure functions below that tests feed with
real bmx7 output.

Control socket protocol (bmx7's control.c, what `bmx7 -c ARGS...` does): connect a
SOCK_STREAM unix socket to `<runtime_dir>/sock`, write the arguments joined by
spaces, followed by " #" (`#` is bmx7's "quit" option, which makes the daemon close
the connection), all in one write of less than 2000 bytes. The daemon writes the
command's output and, after a successful command, a single "$"; after a failed one it
closes the connection without "$".

No symlink is followed out of bmx7's directories: the runtime directory itself is
configured by root and taken as it is, but its subdirectories (json/, sms/, sms/rcvdSms,
sms/sendSms, json/originators) are opened one level at a time with O_NOFOLLOW, relative
to their parent's descriptor, and every file in them relative to its directory's.
"""

from __future__ import annotations

import errno
import json
import os
import re
import socket
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bmx7_wg.base.nodeid import NODE_ID_RE, normalize_node_id
from bmx7_wg.base.smsname import sms_name_problem
from bmx7_wg.errors import Bmx7WgError
from bmx7_wg.mesh.announce import MAX_SIZE as ANNOUNCEMENT_MAX_SIZE
from bmx7_wg.mesh.escape import escape
from bmx7_wg.mesh.liveness import Liveness, parse_uptime

SOCKET_NAME = "sock"
END_OF_ANSWER = b"$"
QUIT = "#"
MAX_COMMAND_SIZE = 2000  # MAX_UNIX_MSG_SIZE: bmx7 reads a command with one read() of this size
MAX_ANSWER_SIZE = 4 * 1024 * 1024
MAX_JSON_FILE_SIZE = 1024 * 1024
DEFAULT_TIMEOUT = 3.0
_SUBDIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class Bmx7Unavailable(Bmx7WgError):
    """bmx7 (or the plugin needed) is not running: mesh peers are held, static ones stay."""

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.reason = reason or message


class Bmx7CommandError(Bmx7WgError):
    """bmx7 answered a control command with an error."""


@dataclass(frozen=True)
class NodeInfo:
    node_id: str  # 56 upper-case hex
    name: str
    uptime: int | None = field(default=None, compare=False)  # seconds since bmx7 started


@dataclass(frozen=True, slots=True)
class ReceivedFile:
    """One `rcvdSms/<NODEID>:<name>` entry: its bytes, or why it was not read."""

    file_name: str
    node_id: str | None  # None if the file name holds no node id
    data: bytes | None = None
    refusal: str | None = None
    # Written less than SETTLE seconds before it was read: a writer may not be done
    # (bmx7 rewrites a file in place), so content that does not parse is not yet a verdict.
    fresh: bool = field(default=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.data is not None and self.node_id is not None


@dataclass(frozen=True)
class Parameter:
    """One configured bmx7 option instance, as `bmx7 -c parameters` lists it."""

    name: str
    value: str
    children: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------- pure parsers


def parse_status(text: str) -> NodeInfo:
    """Parse `jshow=status` output (or the json/status file)."""
    try:
        obj = json.loads(text)
        status = obj["status"]
        return NodeInfo(
            node_id=normalize_node_id(str(status["nodeId"])),
            name=escape(str(status.get("name", ""))),
            uptime=parse_uptime(str(status.get("uptime", ""))),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise Bmx7CommandError(f"bmx7 status is not readable: {exc}") from None


def parse_parameters_text(text: str) -> tuple[Parameter, ...]:
    """Parse `bmx7 -c parameters` (" NAME VALUE (DEFAULT) ..." lines, children "    /NAME ...")."""
    params: list[Parameter] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("PARAMETERS:"):
            continue
        words = line.split()
        if line.startswith("    /") and params and len(words) >= 2:
            last = params[-1]
            params[-1] = Parameter(last.name, last.value, (*last.children, (words[0][1:], words[1])))
        elif line.startswith(" ") and not line.startswith("  ") and len(words) >= 2:
            params.append(Parameter(words[0], words[1]))
    return tuple(params)


def parse_parameters_json(text: str) -> tuple[Parameter, ...]:
    """Parse the json/parameters file ({"OPTIONS": [{"name", "INSTANCES": [...]}]})."""
    try:
        options = json.loads(text)["OPTIONS"]
        params = []
        for opt in options:
            for inst in opt.get("INSTANCES", []):
                children = tuple(
                    (str(c["name"]), str(c["value"])) for c in inst.get("CHILD_INSTANCES", [])
                )
                params.append(Parameter(str(opt["name"]), str(inst["value"]), children))
        return tuple(params)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise Bmx7CommandError(f"bmx7 parameters are not readable: {exc}") from None


def parse_originators(objs: list[Any]) -> dict[str, str]:
    names: dict[str, str] = {}
    for obj in objs:
        if isinstance(obj, dict) and NODE_ID_RE.match(str(obj.get("nodeId", ""))):
            names[str(obj["nodeId"]).upper()] = escape(str(obj.get("name", "")))
    return names


_LEVEL_RE = {key: re.compile(rf"\.{key}=([^.]*)") for key in ("trust", "support")}


def parse_trust_file_name(file_name: str) -> tuple[str, int] | None:
    """(node id, trust level) for a trustedNodesDir entry, or None if bmx7 would ignore it.

    As bmx7's getTrustStringParameter: 56 hex characters, then optional `.trust=N`
    and `.support=N` with N one digit of 0, 2, 3 (1 is bmx7's internal "recommended"
    level, refused in file names); anything else after the id is kept and ignored.
    A bare id means trust level 2.
    """
    if len(file_name) < 56 or not NODE_ID_RE.match(file_name[:56]):
        return None
    tail = file_name[56:]
    level = 2
    for key, pattern in _LEVEL_RE.items():
        match = pattern.search(tail)
        if match is None:
            continue
        value = match.group(1)
        if len(value) != 1 or value not in "023":
            return None
        if key == "trust":
            level = int(value)
    return file_name[:56].upper(), level


def read_trusted_nodes(directory: str) -> dict[str, int]:
    """Trust level per node id from bmx7's trustedNodesDir.

    A node with several files gets the lowest of their levels: bmx7 itself takes the
    first in directory order, which is arbitrary, so the cautious choice is taken.
    A directory that does not exist trusts nobody, as bmx7 does.
    """
    levels: dict[str, int] = {}
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return levels
    except OSError as exc:
        raise Bmx7Unavailable(f"cannot read trustedNodesDir {directory}: {exc.strerror}") from None
    for entry in entries:
        parsed = parse_trust_file_name(entry)
        if parsed is not None:
            node_id, level = parsed
            levels[node_id] = min(level, levels.get(node_id, level))
    return levels


def check_sms_name(name: str) -> str:
    problem = sms_name_problem(name)
    if problem is not None:
        raise ValueError(f"{name!r} {problem}")
    return name


# seconds: a received file written this recently may still be being written
SETTLE = 1.0
# times a received file that changed while it was read is read again before it counts
# as vanished (bmx7 rewrites a file in place in several writes)
READ_TRIES = 3


class Vanished(ValueError):
    """The file is gone (unlinked between the listing and the open), or kept changing
    while it was read: no verdict on its content."""


def read_capped(path: str, limit: int, *, dir_fd: int | None = None) -> bytes:
    """Read a regular file without following a symlink; raise ValueError with a reason."""
    return read_capped_stat(path, limit, dir_fd=dir_fd)[0]


def read_capped_stat(path: str, limit: int, *, dir_fd: int | None = None) -> tuple[bytes, os.stat_result]:
    """`read_capped`, and the file's status as it was opened."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError("is a symbolic link") from None
        if exc.errno == errno.ENOENT:
            raise Vanished("vanished") from None
        raise ValueError(f"cannot be opened ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("is not a regular file")
        if st.st_size > limit:
            raise ValueError(f"is too large ({st.st_size} > {limit} bytes)")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise ValueError(f"is too large (> {limit} bytes)")
        return b"".join(chunks), st
    finally:
        os.close(fd)


FileIdentity = tuple[int, int, int, int]  # inode, size, modification and change time (ns)


@dataclass
class ReceivedCache:
    """What `Bmx7Runtime.received` read, by file name and file identity: a file with the
    same inode, size and times is not read again. (The service re-reads every file an
    inotify event names, whatever its identity, and drops this cache for its periodic
    full read.)"""

    files: dict[str, tuple[FileIdentity, ReceivedFile]] = field(default_factory=dict)


def sender_of(entry: str, sms: str) -> str | None:
    """The node id a `rcvdSms/` entry of SMS `sms` comes from, upper-case: bmx7 names each
    received file `NODEID:SMS` after the node that sent it (authenticated by bmx7, so the
    one thing about a peer no payload can lie about). None: an entry of another SMS, or
    a name that holds no node id. The hex may come in either case, so two entries can
    name one node: mesh.view.first_announcements says which one counts."""
    suffix = ":" + sms
    if not entry.endswith(suffix):
        return None
    prefix = entry[: -len(suffix)]
    return prefix.upper() if NODE_ID_RE.match(prefix) else None


def _received_entry(
    entry: str, sms: str, max_size: int, dir_fd: int, cache: ReceivedCache | None, *, reuse: bool = True
) -> ReceivedFile | None:
    """One entry of SMS `sms`, read (or, with `reuse`, taken from `cache` if its identity is
    unchanged); None when it vanished (bmx7 wipes `rcvdSms/` when it restarts): gone, not
    refused."""
    node_id = sender_of(entry, sms)
    if node_id is None:
        return ReceivedFile(escape(entry), None, refusal="file name holds no node id")
    known = cache.files.get(entry) if cache is not None and reuse else None
    if known is not None:
        # Only a file read before is looked at first: a new one is read at once.
        try:
            st = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            pass  # read_capped says why
        else:
            if stat.S_ISREG(st.st_mode) and known[0] == _identity(st):
                return known[1]
    try:
        data, st = _read_settled(entry, max_size, dir_fd)
    except Vanished:
        if cache is not None:
            cache.files.pop(entry, None)
        return None
    except ValueError as exc:
        if cache is not None:
            cache.files.pop(entry, None)
        return ReceivedFile(entry, node_id, refusal=str(exc))
    fresh = time.time() - st.st_mtime < SETTLE
    got = ReceivedFile(entry, node_id, data=data, fresh=fresh)
    if cache is not None:
        # The identity at opening: a file replaced while it was read has a new one.
        cache.files[entry] = (_identity(st), got)
    return got


def _kind(name: str, dir_fd: int) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "not a directory"
    return "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a directory"


def _read_settled(entry: str, max_size: int, dir_fd: int) -> tuple[bytes, os.stat_result]:
    """A received file's bytes as one version of it: read again when it changed while it
    was read (its identity after the read is not the one at the open); Vanished when it
    is gone or never holds still."""
    for _ in range(READ_TRIES):
        data, st = read_capped_stat(entry, max_size, dir_fd=dir_fd)
        try:
            after = os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            raise Vanished("vanished while it was read") from None
        if _identity(after) == _identity(st) and len(data) == st.st_size:
            return data, st
    raise Vanished("kept changing while it was read")


def _identity(st: os.stat_result) -> FileIdentity:
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


# ---------------------------------------------------------------- the runtime


class Bmx7Runtime:
    """One bmx7 daemon, reached through its runtime directory (`--runtimeDir`)."""

    def __init__(self, runtime_dir: str = "/var/run/bmx7", timeout: float = DEFAULT_TIMEOUT):
        self.runtime_dir = runtime_dir
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Bmx7Runtime({self.runtime_dir!r})"

    @property
    def socket_path(self) -> str:
        return os.path.join(self.runtime_dir, SOCKET_NAME)

    @property
    def send_dir(self) -> str:
        return os.path.join(self.runtime_dir, "sms", "sendSms")

    @property
    def received_dir(self) -> str:
        return os.path.join(self.runtime_dir, "sms", "rcvdSms")

    def _unavailable(self, detail: str) -> Bmx7Unavailable:
        return Bmx7Unavailable(f"bmx7 is not running (no answer on {self.socket_path}: {detail})", detail)

    # -- control socket

    def command(self, *args: str) -> str:
        """Send one control command, as `bmx7 -c ARGS...`, and return its output.

        One deadline for the whole answer (`timeout`), not one per read: a socket that
        answers a byte at a time would otherwise hold the caller for as long as it likes."""
        message = (" ".join(args) + " " + " " + QUIT).encode()
        if len(message) >= MAX_COMMAND_SIZE:
            raise ValueError("bmx7 command too long")
        deadline = time.monotonic() + self.timeout
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.socket_path)
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.sendall(message)
            except TimeoutError:
                raise self._unavailable(f"no answer within {self.timeout:g} s") from None
            except OSError as exc:
                raise self._unavailable(exc.strerror or str(exc)) from None
            answer = bytearray()
            while True:
                left = deadline - time.monotonic()
                try:
                    if left <= 0:
                        raise TimeoutError
                    sock.settimeout(left)
                    chunk = sock.recv(65536)
                except TimeoutError:
                    what = "complete answer" if answer else "answer"
                    raise self._unavailable(f"no {what} within {self.timeout:g} s") from None
                except OSError as exc:
                    raise self._unavailable(exc.strerror or str(exc)) from None
                if not chunk:
                    text = answer.decode(errors="replace").strip()
                    raise Bmx7CommandError(
                        f"bmx7 refused '{' '.join(args)}': {text or 'connection closed'}"
                    )
                end = chunk.find(END_OF_ANSWER)
                if end >= 0:
                    answer += chunk[:end]
                    return answer.decode(errors="replace")
                answer += chunk
                if len(answer) > MAX_ANSWER_SIZE:
                    raise Bmx7CommandError("bmx7 answer too large")
        finally:
            sock.close()

    # -- directories

    def open_directory(self, *parts: str) -> int:
        """A descriptor of bmx7's subdirectory `parts` (e.g. "sms", "rcvdSms"), no symlink
        followed on the way; FileNotFoundError if it is missing, Bmx7Unavailable if it
        cannot be used (a symlink, not a directory)."""
        path = self.runtime_dir
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise Bmx7Unavailable(f"cannot read {path}: {exc.strerror}") from None
        try:
            for part in parts:
                path = os.path.join(path, part)
                try:
                    sub = os.open(part, _SUBDIRECTORY, dir_fd=fd)
                except FileNotFoundError:
                    raise
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        kind = _kind(part, fd)
                        raise Bmx7Unavailable(
                            f"cannot read {path}: it is {kind}, not bmx7's directory"
                        ) from None
                    raise Bmx7Unavailable(f"cannot read {path}: {exc.strerror}") from None
                os.close(fd)
                fd = sub
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- JSON plugin files

    def _json_file(self, *parts: str) -> str:
        path = os.path.join(self.runtime_dir, "json", *parts)
        try:
            dir_fd = self.open_directory("json", *parts[:-1])
        except FileNotFoundError:
            raise Bmx7Unavailable(f"{os.path.dirname(path)} does not exist") from None
        try:
            return read_capped(parts[-1], MAX_JSON_FILE_SIZE, dir_fd=dir_fd).decode("utf-8", errors="replace")
        except ValueError as exc:
            raise Bmx7Unavailable(f"{path} {exc}") from None
        finally:
            os.close(dir_fd)

    def own_node(self) -> NodeInfo:
        """This node's id, name, primary address and uptime, asked over the control socket.

        Never from json/status: that file stays behind when bmx7 is killed and may be a
        minute old while it runs; only an answer says bmx7 runs now."""
        return parse_status(self.command("jshow=status"))

    def liveness(self) -> Liveness:
        """Whether bmx7 answers now, and since when it runs (see mesh/liveness.py)."""
        try:
            node = self.own_node()
        except Bmx7Unavailable as exc:
            return Liveness(self.socket_path, False, reason=exc.reason)
        except Bmx7CommandError as exc:
            return Liveness(self.socket_path, False, reason=str(exc))
        return self.liveness_of(node)

    def liveness_of(self, node: NodeInfo) -> Liveness:
        started = None if node.uptime is None else time.time() - node.uptime
        return Liveness(self.socket_path, True, started, node.node_id)

    def parameters(self) -> tuple[Parameter, ...]:
        """Configured options: from the socket, else json/parameters."""
        try:
            return parse_parameters_text(self.command("parameters"))
        except Bmx7Unavailable as live_error:
            try:
                return parse_parameters_json(self._json_file("parameters"))
            except (Bmx7Unavailable, Bmx7CommandError):
                raise live_error from None

    def node_names(self) -> dict[str, str]:
        """Node id -> host name of every known node (for display only)."""
        try:
            obj = json.loads(self.command("jshow=originators"))
            return parse_originators(obj["originators"])
        except (Bmx7Unavailable, Bmx7CommandError, ValueError, KeyError, TypeError):
            pass
        objs: list[Any] = []
        try:
            dir_fd = self.open_directory("json", "originators")
        except (OSError, Bmx7Unavailable):
            return {}
        try:
            for entry in sorted(os.listdir(dir_fd)):
                try:
                    objs.append(json.loads(read_capped(entry, 65536, dir_fd=dir_fd)))
                except ValueError:
                    continue
        finally:
            os.close(dir_fd)
        return parse_originators(objs)

    # -- trust

    @staticmethod
    def trusted_nodes_dir_of(parameters: tuple[Parameter, ...]) -> str | None:
        """bmx7's trustedNodesDir, or None when it is not configured (every node trusted)."""
        return next((p.value for p in parameters if p.name == "trustedNodesDir"), None)

    # -- SMS

    def registered_sms(self, parameters: tuple[Parameter, ...] | None = None) -> frozenset[str]:
        params = self.parameters() if parameters is None else parameters
        return frozenset(p.value for p in params if p.name == "syncSms")

    def register_sms(self, name: str) -> bool:
        """Make bmx7 publish sendSms/NAME (`syncSms=NAME`); False if it already does."""
        check_sms_name(name)
        if name in self.registered_sms():
            return False
        self.command(f"syncSms={name}")
        return True

    def unregister_sms(self, name: str) -> bool:
        check_sms_name(name)
        if name not in self.registered_sms():
            return False
        self.command(f"syncSms=-{name}")
        return True

    def _open_send_dir(self) -> int:
        try:
            return self.open_directory("sms", "sendSms")
        except FileNotFoundError:
            raise Bmx7Unavailable(
                f"{self.send_dir} does not exist: is bmx7 running with its SMS plugin?"
            ) from None

    def sent(self, name: str, limit: int) -> bytes:
        """What sendSms/NAME holds (ValueError if it cannot be read: missing, a symlink, ...)."""
        check_sms_name(name)
        try:
            dir_fd = self._open_send_dir()
        except Bmx7Unavailable as exc:
            raise ValueError(str(exc)) from None
        try:
            return read_capped(name, limit, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)

    def publish(self, name: str, data: bytes) -> bool:
        """Write sendSms/NAME atomically; False (and no write) if it already holds `data`."""
        check_sms_name(name)
        dir_fd = self._open_send_dir()
        try:
            try:
                if read_capped(name, len(data), dir_fd=dir_fd) == data:
                    return False
            except ValueError:
                pass
            # The temporary name is not a registered SMS name, so bmx7 never publishes it.
            tmp = f".{name}.tmp.{os.getpid()}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o644, dir_fd=dir_fd)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            return True
        finally:
            os.close(dir_fd)

    def withdraw(self, name: str) -> bool:
        """Remove sendSms/NAME; False if it was not there."""
        check_sms_name(name)
        try:
            dir_fd = self.open_directory("sms", "sendSms")
        except FileNotFoundError:
            return False
        try:
            os.unlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return False
        finally:
            os.close(dir_fd)
        return True

    def received(
        self, name: str, max_size: int = ANNOUNCEMENT_MAX_SIZE, *, cache: ReceivedCache | None = None
    ) -> list[ReceivedFile]:
        """Every `rcvdSms/<NODEID>:NAME`, sorted by file name; bad entries carry a refusal.

        With a `cache` (the service), a file whose identity is the one read last time is
        not read again."""
        check_sms_name(name)
        suffix = ":" + name
        dir_fd = self._open_received_dir()
        if dir_fd is None:
            if cache is not None:
                cache.files.clear()
            return []
        try:
            entries = sorted(e for e in os.listdir(dir_fd) if e.endswith(suffix))
            if cache is not None:
                for gone in cache.files.keys() - set(entries):
                    del cache.files[gone]
            read = (_received_entry(entry, name, max_size, dir_fd, cache) for entry in entries)
            return [f for f in read if f is not None]
        finally:
            os.close(dir_fd)

    def _open_received_dir(self) -> int | None:
        """`rcvdSms/` opened as a directory, never through a symlink; None when there is
        none (nothing received)."""
        try:
            return self.open_directory("sms", "rcvdSms")
        except FileNotFoundError:
            return None

    def received_entries(
        self,
        entries: Iterable[str],
        name: str,
        max_size: int = ANNOUNCEMENT_MAX_SIZE,
        *,
        cache: ReceivedCache | None = None,
    ) -> dict[str, ReceivedFile | None]:
        """The named `rcvdSms/` entries of SMS `name` (others are left out), read now:
        each one's file, or None when it is gone (what the service does on inotify events).
        `cache` learns what was read."""
        check_sms_name(name)
        suffix = ":" + name
        dir_fd = self._open_received_dir()
        if dir_fd is None:
            return {e: None for e in entries if e.endswith(suffix)}
        out: dict[str, ReceivedFile | None] = {}
        try:
            for entry in entries:
                if not entry.endswith(suffix):
                    continue
                try:
                    os.stat(entry, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    out[entry] = None
                    if cache is not None:
                        cache.files.pop(entry, None)
                    continue
                except OSError:
                    pass  # read_capped says why
                out[entry] = _received_entry(entry, name, max_size, dir_fd, cache, reuse=False)
            return out
        finally:
            os.close(dir_fd)
