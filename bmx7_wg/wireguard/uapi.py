"""The UAPI of userspace WireGuard (wireguard-go): a pure parser and formatter, and a thin client.

`parse_get` and `format_set` are pure and tested on dumps captured from a real wireguard-go;
`UapiClient` only moves bytes over the device's control socket. Both halves are used with
tens of thousands of peers, so they work on strings and touch `ipaddress` only for the rare
forms where wireguard-go's spelling and Python's canonical one can differ.
"""

from __future__ import annotations

import binascii
import dataclasses
import ipaddress
import os
import socket
import stat
import time

from bmx7_wg.errors import ApplyError, Unreachable
from bmx7_wg.keys import KEY_LEN, PresharedKey, PrivateKey
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.state import Device, Peer, PeerStats

# wireguard-go hard-codes this directory; it is a filesystem path, so every network
# namespace shares it (see UapiClient).
DEFAULT_SOCKET_DIR = "/var/run/wireguard"
# This network namespace's Unix sockets (the kernel lists only the reader's namespace).
UNIX_SOCKETS = "/proc/self/net/unix"
_SO_ACCEPTCON = 0x10000
# Seconds of silence after which a daemon counts as hung. It bounds each wait, not the
# whole exchange. wireguard-go answers nothing until a request is done, and it can be busy
# for seconds: sending 10,000 new peers takes ~1 s, and removing 150 peers whose handshakes
# are under way took 2-4.6 s (measured in tests/integration's lab; a `get` waits behind it).
# 5 s failed now and then there; 15 s keeps well inside the service's 30 s watchdog.
DEFAULT_TIMEOUT = 15.0

_ZERO_KEY_HEX = "0" * (2 * KEY_LEN)
_RECV_SIZE = 1 << 18
_SEND_SIZE = 1 << 16

# Peer fields that only describe a peer (compare=False): a planner may list them, but
# there is nothing to send for them.
_INFORMATIONAL = frozenset(f.name for f in dataclasses.fields(Peer) if not f.compare)
_SENDABLE = frozenset({"allowed_ips", "endpoint", "persistent_keepalive", "preshared_key"})


class UapiError(ApplyError):
    """Talking to a userspace WireGuard device failed; names the interface."""

    def __init__(
        self,
        interface: str,
        message: str,
        errno: int | None = None,
        done: list[str] | None = None,
    ) -> None:
        self.interface = interface
        self.errno = errno
        super().__init__(f"{interface}: {message}" if interface else message, done)


class DeviceUnreachable(UapiError, Unreachable):
    """No daemon answers on the device's socket (missing, stale, or hung)."""


class DeviceRefused(UapiError):
    """The daemon answered with a non-zero errno."""


def _errno_text(code: int) -> str:
    reason = os.strerror(code)
    return f"errno {code}: {reason[:1].lower()}{reason[1:]}"


# --- the pure half -------------------------------------------------------------------------


def _key_from_hex(interface: str, name: str, value: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raw = b""
    if len(raw) != KEY_LEN:
        # Never echo the value: it may be a private or preshared key.
        raise UapiError(interface, f"the WireGuard device reported a malformed {name}")
    return raw


def _canonical_cidr(text: str) -> str:
    # wireguard-go prints prefixes masked and IPv6 in RFC 5952 form, which is what
    # Python's ipaddress prints too, except for IPv4-mapped/embedded IPv6 ("::ffff:1.2.3.4"),
    # whose spelling differs between Go and Python versions: only those go through ipaddress.
    if "." in text and ":" in text:
        return str(ipaddress.ip_network(text, strict=False))
    return text


def _canonical_endpoint(text: str) -> str:
    if text.startswith("[") and "." in text:
        host, _, port = text[1:].rpartition("]:")
        return f"[{ipaddress.ip_address(host)}]:{port}"
    return text


def _peer_stats(hs_sec: int, hs_nsec: int, rx: int, tx: int) -> PeerStats:
    """What `get` says of a peer's traffic; a handshake time of 0.0 means never."""
    return PeerStats(
        last_handshake=hs_sec + hs_nsec / 1e9 if hs_sec or hs_nsec else 0.0, rx_bytes=rx, tx_bytes=tx
    )


def parse_get(text: str, interface: str = "") -> Device:
    """Parse the answer to `get=1`: the device, its peers and their runtime stats.

    `interface` only names the device in error messages.
    """
    private_key: PrivateKey | None = None
    listen_port = 0
    fwmark = 0
    errno: int | None = None
    peers: dict[str, Peer] = {}
    stats: dict[str, PeerStats] = {}

    # The current peer's fields live in plain locals: a dict or object per peer costs
    # noticeably at 10,000 peers.
    public_key: str | None = None
    allowed: list[str] = []
    endpoint: str | None = None
    keepalive = 0
    psk: PresharedKey | None = None
    hs_sec = hs_nsec = rx = tx = 0

    def flush() -> None:
        assert public_key is not None
        peers[public_key] = Peer(
            public_key=public_key,
            allowed_ips=frozenset(allowed),
            endpoint=endpoint,
            persistent_keepalive=keepalive,
            preshared_key=psk,
        )
        stats[public_key] = _peer_stats(hs_sec, hs_nsec, rx, tx)

    key = value = ""
    try:
        for line in text.split("\n"):
            if not line:
                continue
            key, sep, value = line.partition("=")
            if not sep:
                raise UapiError(interface, f"unexpected line from the WireGuard device: {key[:40]!r}")
            if key == "allowed_ip":
                allowed.append(_canonical_cidr(value) if "." in value else value)
            elif key == "public_key":
                if public_key is not None:
                    flush()
                raw = _key_from_hex(interface, key, value)
                public_key = binascii.b2a_base64(raw, newline=False).decode("ascii")
                allowed = []
                endpoint = None
                keepalive = 0
                psk = None
                hs_sec = hs_nsec = rx = tx = 0
            elif key == "errno":
                errno = int(value)
            elif public_key is not None:
                if key == "endpoint":
                    endpoint = _canonical_endpoint(value)
                elif key == "preshared_key":
                    if value != _ZERO_KEY_HEX:
                        psk = PresharedKey(_key_from_hex(interface, key, value))
                elif key == "last_handshake_time_sec":
                    hs_sec = int(value)
                elif key == "last_handshake_time_nsec":
                    hs_nsec = int(value)
                elif key == "tx_bytes":
                    tx = int(value)
                elif key == "rx_bytes":
                    rx = int(value)
                elif key == "persistent_keepalive_interval":
                    keepalive = int(value)
                # Anything else (protocol_version, keys of newer daemons) says nothing we
                # plan on.
            elif key == "private_key":
                private_key = PrivateKey(_key_from_hex(interface, key, value))
            elif key == "listen_port":
                listen_port = int(value)
            elif key == "fwmark":
                fwmark = int(value)
    except ValueError:
        # Only numbers, prefixes and endpoints raise ValueError here (keys are checked by
        # _key_from_hex), so the value may be shown.
        raise UapiError(
            interface, f"the WireGuard device reported a malformed {key}: {value[:60]!r}"
        ) from None
    if public_key is not None:
        flush()

    if errno is None:
        raise UapiError(interface, "incomplete answer from the WireGuard device (no errno line)")
    if errno != 0:
        raise DeviceRefused(
            interface,
            f"the WireGuard device failed to report its state ({_errno_text(abs(errno))})",
            errno=abs(errno),
        )
    return Device(
        private_key=private_key, listen_port=listen_port, fwmark=fwmark, peers=peers, stats=stats
    )


def _public_key_hex(interface: str, public_key: str) -> str:
    try:
        raw = binascii.a2b_base64(public_key, strict_mode=True)
    except binascii.Error:
        raw = b""
    if len(raw) != KEY_LEN:
        raise UapiError(interface, f"not a WireGuard public key: {public_key[:60]!r}")
    return raw.hex()


def _allowed_ip_lines(out: list[str], peer: Peer) -> None:
    out.append("replace_allowed_ips=true\n")
    for cidr in sorted(peer.allowed_ips):
        out.append(f"allowed_ip={cidr}\n")


def format_set(change: DeviceChange) -> str:
    """The `set=1` request for one interface's device changes, ending with the blank line.

    Order: device lines, removals, updates, additions, so that an allowed IP freed by a
    removal or an update is free before an added peer claims it. Never `replace_peers`:
    only the named differences are sent.
    """
    iface = change.interface
    out = ["set=1\n"]
    if change.private_key is not None:
        out.append(f"private_key={change.private_key.raw.hex()}\n")
    if change.listen_port is not None:
        out.append(f"listen_port={change.listen_port}\n")
    if change.fwmark is not None:
        out.append(f"fwmark={change.fwmark}\n")

    for public_key in change.remove_peers:
        out.append(f"public_key={_public_key_hex(iface, public_key)}\nremove=true\n")

    for peer, changed in change.update_peers:
        # update_only: if the peer vanished meanwhile, do not recreate a half-specified one.
        out.append(f"public_key={_public_key_hex(iface, peer.public_key)}\nupdate_only=true\n")
        for name in changed:
            if name == "allowed_ips":
                _allowed_ip_lines(out, peer)
            elif name == "endpoint":
                # Desired None means "leave alone"; the UAPI cannot unset an endpoint anyway.
                if peer.endpoint is not None:
                    out.append(f"endpoint={peer.endpoint}\n")
            elif name == "persistent_keepalive":
                out.append(f"persistent_keepalive_interval={peer.persistent_keepalive}\n")
            elif name == "preshared_key":
                psk = peer.preshared_key
                out.append(f"preshared_key={psk.raw.hex() if psk else _ZERO_KEY_HEX}\n")
            elif name not in _INFORMATIONAL:
                # A silently dropped field would make every later plan repeat the change.
                raise UapiError(
                    iface,
                    f"cannot send a change of peer field {name!r} "
                    f"(only {', '.join(sorted(_SENDABLE))})",
                )

    for peer in change.add_peers:
        out.append(f"public_key={_public_key_hex(iface, peer.public_key)}\n")
        _allowed_ip_lines(out, peer)
        if peer.endpoint is not None:
            out.append(f"endpoint={peer.endpoint}\n")
        out.append(f"persistent_keepalive_interval={peer.persistent_keepalive}\n")
        if peer.preshared_key is not None:
            out.append(f"preshared_key={peer.preshared_key.raw.hex()}\n")

    out.append("\n")
    return "".join(out)


# --- the I/O half --------------------------------------------------------------------------


class UapiClient:
    """Speaks the UAPI over `<socket_dir>/<name>.sock`.

    The socket directory is a filesystem path shared by every network namespace: a
    socket named like an interface may belong to a daemon in another namespace. Callers
    must check that the link exists in their namespace before trusting it.
    """

    def __init__(
        self, socket_dir: str = DEFAULT_SOCKET_DIR, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self.socket_dir = socket_dir
        self.timeout = timeout

    def socket_path(self, name: str) -> str:
        if not name or "/" in name or "\0" in name or name in (".", ".."):
            raise UapiError(name, "not a valid interface name for a WireGuard device socket")
        return os.path.join(self.socket_dir, f"{name}.sock")

    def exists(self, name: str) -> bool:
        try:
            return stat.S_ISSOCK(os.stat(self.socket_path(name)).st_mode)
        except OSError:
            return False

    def answers(self, name: str) -> bool:
        """Whether a daemon listens on the socket (a stale one refuses the connection)."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.socket_path(name))
        except OSError:
            return False
        return True

    def served_here(self) -> frozenset[str]:
        """Names whose socket a process of this network namespace listens on.

        `/run/wireguard` is one directory for every network namespace, so a socket named
        like a link here may be a daemon's in another namespace, whose device is not
        ours. A Unix socket belongs to the namespace it was made in, and
        `/proc/self/net/unix` lists only this namespace's: a listening socket bound to
        the same file is this namespace's daemon. (SO_PEERCRED is no help: it names the
        process that called listen(), and wireguard-go's launcher does that, passes the
        socket to the daemon and exits.) The daemon's TUN is in the same namespace as
        its socket: it makes both before it forks.
        """
        try:
            with open(UNIX_SOCKETS, encoding="utf-8", errors="replace") as table:
                lines = table.read().splitlines()[1:]
        except OSError:
            return frozenset()
        found: set[str] = set()
        for line in lines:
            fields = line.split(maxsplit=7)
            # Num RefCount Protocol Flags Type St Inode Path; __SO_ACCEPTCON: listening.
            if len(fields) < 8 or not int(fields[3], 16) & _SO_ACCEPTCON:
                continue
            bound = fields[7]
            base = os.path.basename(bound)
            if not base.endswith(".sock") or len(base) <= 5:
                continue
            name = base[: -len(".sock")]
            try:
                listed, ours = os.stat(bound), os.stat(self.socket_path(name))
            except (OSError, UapiError):
                continue
            if (listed.st_dev, listed.st_ino) == (ours.st_dev, ours.st_ino):
                found.add(name)
        return frozenset(found)

    def get(self, name: str) -> Device:
        return parse_get(self._exchange(name, b"get=1\n\n"), name)

    def set(self, name: str, request: str) -> None:
        """Send a `set=1` request (see `format_set`); raise DeviceRefused on a non-zero errno."""
        try:
            data = request.encode("ascii")
        except UnicodeEncodeError:
            raise UapiError(name, "a UAPI request must be ASCII") from None
        answer = self._exchange(name, data)
        code_text = answer.strip()
        if not code_text.startswith("errno="):
            raise UapiError(name, "unexpected answer from the WireGuard device to a change")
        try:
            code = abs(int(code_text[len("errno=") :]))
        except ValueError:
            raise UapiError(name, "unexpected answer from the WireGuard device to a change") from None
        if code:
            # wireguard-go applies a request line by line and stops at the first bad one.
            raise DeviceRefused(
                name,
                f"the WireGuard device refused the change ({_errno_text(code)}); "
                "lines before the refused one may already be in effect",
                errno=code,
            )

    def apply(self, change: DeviceChange) -> None:
        self.set(change.interface, format_set(change))

    def _exchange(self, name: str, request: bytes) -> str:
        path = self.socket_path(name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.settimeout(self.timeout)
            self._connect(sock, name, path)
            self._send(sock, name, path, request)
            data = self._receive(sock, name, path)
        finally:
            sock.close()
        try:
            return data.decode("ascii")
        except UnicodeDecodeError:
            raise UapiError(name, "the WireGuard device sent a non-ASCII answer") from None

    def _connect(self, sock: socket.socket, name: str, path: str) -> None:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            # A refused connection means a stale socket left by a daemon that was killed.
            stale = ""
            if isinstance(exc, ConnectionRefusedError):
                stale = " (stale socket: nothing listens)"
            raise DeviceUnreachable(
                name, f"no WireGuard device socket at {path}{stale}; is wireguard-go running?"
            ) from None
        except TimeoutError:
            raise self._hung(name, path) from None
        except OSError as exc:
            raise DeviceUnreachable(
                name, f"cannot connect to the WireGuard device socket at {path}: {exc.strerror}"
            ) from None

    def _send(self, sock: socket.socket, name: str, path: str, request: bytes) -> None:
        view = memoryview(request)
        try:
            # send() in slices rather than sendall(): the timeout then bounds each wait for
            # the daemon to read on, not the whole (possibly megabytes long) request.
            while view:
                sent = sock.send(view[:_SEND_SIZE])
                view = view[sent:]
        except (BrokenPipeError, ConnectionResetError):
            # wireguard-go stops reading at the first line it refuses, answers, and then
            # closes the connection on the rest: its answer may already be waiting.
            pass
        except TimeoutError:
            raise self._hung(name, path) from None
        except OSError as exc:
            raise DeviceUnreachable(
                name, f"lost the WireGuard device socket at {path}: {exc.strerror}"
            ) from None

    def _receive(self, sock: socket.socket, name: str, path: str) -> bytes:
        chunks: list[bytes] = []
        tail = b""
        try:
            # The only blank line of an answer is its end ("errno=N\n\n"); the daemon keeps
            # the connection open for another request, so EOF never comes.
            while True:
                chunk = sock.recv(_RECV_SIZE)
                if not chunk:
                    raise DeviceUnreachable(
                        name, f"the WireGuard device at {path} closed the connection mid-answer"
                    )
                chunks.append(chunk)
                tail = (tail + chunk[-2:])[-2:]
                if tail == b"\n\n":
                    return b"".join(chunks)
        except TimeoutError:
            raise self._hung(name, path) from None
        except OSError as exc:
            raise DeviceUnreachable(
                name, f"lost the WireGuard device socket at {path}: {exc.strerror}"
            ) from None

    def _hung(self, name: str, path: str) -> DeviceUnreachable:
        return DeviceUnreachable(
            name, f"the WireGuard device at {path} did not answer within {self.timeout:g} s"
        )


def wait_until_ready(client: UapiClient, name: str, timeout: float) -> Device:
    """Poll until the device answers `get`; raise the last DeviceUnreachable after `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            return client.get(name)
        except DeviceUnreachable:
            if time.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)
