"""The UAPI parser/formatter on dumps captured from wireguard-go 0.0.20220316, the socket
client against fake daemons, and wireguard-go start-up against fake executables.

The fixtures were captured from two real wireguard-go devices in a network namespace
(handshake over loopback); the keys in them are throw-away test keys.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bmx7_wg.errors import ApplyError, BackendUnavailable
from bmx7_wg.keys import PresharedKey, PrivateKey, encode_key
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.state import Peer, PeerStats
from bmx7_wg.wireguard import wggo
from bmx7_wg.wireguard.uapi import (
    DeviceRefused,
    DeviceUnreachable,
    UapiClient,
    UapiError,
    format_set,
    parse_get,
)

FIXTURES = Path(__file__).parent / "fixtures" / "uapi"

# Public keys as `wg show` printed them for the captured devices (an independent check of
# the hex -> base64 conversion).
DEVICE_PUBLIC = "Ia3t1DBo6qjnjYZ9aX7yo7cMtdXoAYsL/HHB6WU3Nn0="
PEER_B = "MXIdYOJqlO6v/G0e8Kye8pu/Cu4fFZ8B8r5jIMoiSH4="
PEER_C = "WTPuMBc/6vDlQu8fHtkhaeJsACkrj1ZYnz+OR3kOZUE="
PEER_D = "n4fGCiDPJysBQdg8ZYRWkleshtcQkG9b0HWYlOBfuDA="
PEER_E = "0OvNFrNwJNNkJdobbzx64q9K0FMjf2jPqROJ6d0Q/wg="
PRIVATE_HEX = "90ad2abc71fbe241c39603a00c32441665b21890db602bdf5fd3fef5a4270374"
PSK_HEX = "e0d6edefd9b2f71f2b40b3a0fc8fbcf36bca1b3ab5b66f6a53276c4e7c946657"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def hexkey(b64: str) -> str:
    import base64

    return base64.b64decode(b64).hex()


def key(n: int) -> str:
    return encode_key(bytes([n]) * 32)


# --- parse_get -----------------------------------------------------------------------------


def test_parse_empty_device() -> None:
    device = parse_get(fixture("empty.txt"))
    assert device.private_key is None
    assert device.listen_port == 42455
    assert device.fwmark == 0
    assert dict(device.peers) == {}
    assert dict(device.stats) == {}


def test_parse_device_with_peers() -> None:
    device = parse_get(fixture("peers.txt"))
    assert device.private_key is not None
    assert device.private_key.raw.hex() == PRIVATE_HEX
    assert device.private_key.public_key() == DEVICE_PUBLIC
    assert device.listen_port == 51820
    assert device.fwmark == 0x1234
    assert set(device.peers) == {PEER_B, PEER_C, PEER_D, PEER_E}
    assert device.peers[PEER_B] == Peer(
        public_key=PEER_B,
        allowed_ips=frozenset({"10.99.0.2/32", "10.99.2.0/24", "fd77:1::2/128"}),
        endpoint="127.0.0.1:51821",
        persistent_keepalive=1,
    )
    assert device.peers[PEER_C] == Peer(
        public_key=PEER_C,
        allowed_ips=frozenset({"10.99.0.3/32", "fd77:1::/64"}),
        endpoint="[fd70::1234:5]:40456",
        preshared_key=PresharedKey(bytes.fromhex(PSK_HEX)),
    )
    # A peer with nothing but its key.
    assert device.peers[PEER_D] == Peer(public_key=PEER_D)
    assert device.peers[PEER_D].preshared_key is None


def test_parse_canonicalises_like_python() -> None:
    # wireguard-go was given 10.1.2.3/24 and fd77:0:0:0:1:0:0:1/128; it masks and
    # compresses. IPv4-mapped forms are spelt differently by Go and Python: the parser
    # must hand out Python's spelling, which the desired state is built with.
    peer = parse_get(fixture("peers.txt")).peers[PEER_E]
    assert peer.allowed_ips == frozenset(
        {
            "10.1.2.0/24",
            str(ipaddress.ip_network("::ffff:10.5.0.0/120")),
            "fd77::1:0:0:1/128",
            "0.0.0.0/0",
        }
    )
    assert peer.endpoint == f"[{ipaddress.ip_address('::ffff:10.1.2.3')}]:123"
    assert peer.persistent_keepalive == 25
    for cidr in peer.allowed_ips:
        assert cidr == str(ipaddress.ip_network(cidr))


def test_parse_stats() -> None:
    device = parse_get(fixture("peers.txt"))
    stats = device.stats[PEER_B]
    assert stats.last_handshake == pytest.approx(1795546980.730895759)
    assert (stats.rx_bytes, stats.tx_bytes) == (92, 648)
    assert device.stats[PEER_C] == PeerStats()
    # Stats never take part in comparing devices.
    other = parse_get(fixture("peers.txt").replace("tx_bytes=648", "tx_bytes=1"))
    assert other == device


def test_parse_roamed_endpoint_and_handshake() -> None:
    device = parse_get(fixture("handshake.txt"))
    (peer,) = device.peers.values()
    assert peer.public_key == DEVICE_PUBLIC
    assert peer.endpoint == "127.0.0.1:51820"  # configured [::1]:51820; roamed on handshake
    stats = device.stats[DEVICE_PUBLIC]
    assert stats.last_handshake == pytest.approx(1795546980.731350864)
    assert (stats.rx_bytes, stats.tx_bytes) == (500, 92)


def test_parse_errno_raises() -> None:
    with pytest.raises(DeviceRefused) as info:
        parse_get(fixture("set-refused.txt"), "wg0")
    assert info.value.errno == 22
    assert str(info.value).startswith("wg0: ")
    assert "errno 22: invalid argument" in str(info.value)
    assert isinstance(info.value, ApplyError)


@pytest.mark.parametrize(
    "text",
    [
        "listen_port=1\n\n",  # no errno line: cut short
        "listen_port=x\nerrno=0\n\n",
        "garbage\nerrno=0\n\n",
        "public_key=abcd\nerrno=0\n\n",
    ],
)
def test_parse_malformed(text: str) -> None:
    with pytest.raises(UapiError):
        parse_get(text, "wg0")


def test_parse_malformed_secret_is_not_echoed() -> None:
    secret = PRIVATE_HEX[:-1]  # one digit short
    for name in ("private_key", "preshared_key"):
        text = f"public_key={hexkey(PEER_B)}\n" if name == "preshared_key" else ""
        with pytest.raises(UapiError) as info:
            parse_get(f"{text}{name}={secret}\nerrno=0\n\n", "wg0")
        assert secret not in str(info.value)


def test_parsed_secrets_stay_out_of_repr() -> None:
    device = parse_get(fixture("peers.txt"))
    text = repr(device) + str(device)
    assert PRIVATE_HEX not in text and PSK_HEX not in text
    assert device.private_key is not None
    assert device.private_key.to_base64() not in text


def test_parse_ignores_unknown_keys() -> None:
    text = fixture("peers.txt").replace("protocol_version=1\n", "protocol_version=1\nfuture_thing=7\n")
    assert parse_get(text) == parse_get(fixture("peers.txt"))


# --- format_set ----------------------------------------------------------------------------


def test_format_empty_change() -> None:
    assert format_set(DeviceChange("wg0")) == "set=1\n\n"


def test_format_device_lines() -> None:
    private = PrivateKey(bytes.fromhex(PRIVATE_HEX))
    text = format_set(DeviceChange("wg0", private_key=private, listen_port=51820, fwmark=0))
    assert text == (f"set=1\nprivate_key={PRIVATE_HEX}\nlisten_port=51820\nfwmark=0\n\n")


def test_format_order_and_exact_text() -> None:
    psk = PresharedKey(bytes.fromhex(PSK_HEX))
    added = Peer(
        public_key=key(1),
        allowed_ips=frozenset({"fd77::1/128", "10.0.0.1/32"}),
        endpoint="[fd70::1]:40456",
        persistent_keepalive=25,
        preshared_key=psk,
    )
    updated = Peer(public_key=key(2), allowed_ips=frozenset({"10.0.0.2/32"}), endpoint="1.2.3.4:5")
    change = DeviceChange(
        "wg0",
        listen_port=40456,
        remove_peers=(key(3),),
        add_peers=(added,),
        update_peers=((updated, ("endpoint",)),),
    )
    h1, h2, h3 = (bytes([n]).hex() * 32 for n in (1, 2, 3))
    assert format_set(change) == (
        "set=1\n"
        "listen_port=40456\n"
        f"public_key={h3}\nremove=true\n"
        f"public_key={h2}\nupdate_only=true\nendpoint=1.2.3.4:5\n"
        f"public_key={h1}\nreplace_allowed_ips=true\n"
        "allowed_ip=10.0.0.1/32\nallowed_ip=fd77::1/128\n"
        "endpoint=[fd70::1]:40456\npersistent_keepalive_interval=25\n"
        f"preshared_key={PSK_HEX}\n"
        "\n"
    )


def test_format_added_peer_minimal() -> None:
    text = format_set(DeviceChange("wg0", add_peers=(Peer(public_key=key(1)),)))
    # No endpoint, no psk; keepalive always (0 = off), allowed-ips always replaced.
    assert text == (
        f"set=1\npublic_key={bytes([1]).hex() * 32}\nreplace_allowed_ips=true\n"
        "persistent_keepalive_interval=0\n\n"
    )


PEER = Peer(
    public_key=key(5),
    allowed_ips=frozenset({"10.5.0.0/24", "fd77::5/128"}),
    endpoint="[fd70::5]:40456",
    persistent_keepalive=15,
    preshared_key=PresharedKey(bytes.fromhex(PSK_HEX)),
)


@pytest.mark.parametrize(
    ("changed", "lines"),
    [
        (("endpoint",), ["endpoint=[fd70::5]:40456"]),
        (("persistent_keepalive",), ["persistent_keepalive_interval=15"]),
        (("preshared_key",), [f"preshared_key={PSK_HEX}"]),
        (
            ("allowed_ips",),
            ["replace_allowed_ips=true", "allowed_ip=10.5.0.0/24", "allowed_ip=fd77::5/128"],
        ),
        (
            ("persistent_keepalive", "endpoint"),
            ["persistent_keepalive_interval=15", "endpoint=[fd70::5]:40456"],
        ),
        # Informational fields have nothing to send.
        (("name",), []),
    ],
)
def test_format_update_sends_only_changed_fields(changed: tuple[str, ...], lines: list[str]) -> None:
    text = format_set(DeviceChange("wg0", update_peers=((PEER, changed),)))
    head = ["set=1", f"public_key={bytes([5]).hex() * 32}", "update_only=true"]
    assert text == "\n".join(head + lines) + "\n\n"


def test_format_update_clears_psk_and_leaves_endpoint_alone() -> None:
    peer = Peer(public_key=key(5), endpoint=None, preshared_key=None)
    text = format_set(DeviceChange("wg0", update_peers=((peer, ("preshared_key", "endpoint")),)))
    assert f"preshared_key={'0' * 64}\n" in text
    assert "endpoint" not in text


def test_format_update_unknown_field_is_an_error() -> None:
    with pytest.raises(UapiError, match="public_key"):
        format_set(DeviceChange("wg0", update_peers=((PEER, ("public_key",)),)))


def test_format_rejects_a_bad_public_key() -> None:
    with pytest.raises(UapiError, match="wg0: not a WireGuard public key"):
        format_set(DeviceChange("wg0", remove_peers=("abc",)))


def test_format_keeps_secrets_out_of_errors() -> None:
    private = PrivateKey(bytes.fromhex(PRIVATE_HEX))
    with pytest.raises(UapiError) as info:
        format_set(DeviceChange("wg0", private_key=private, remove_peers=("bad",)))
    assert PRIVATE_HEX not in str(info.value)


def test_format_of_parsed_peers_reproduces_the_dump() -> None:
    # What a device reports about a peer's configuration is what format_set writes for
    # the same peer: hex keys, endpoints and prefixes survive the round trip. (Peer E's
    # IPv4-mapped forms are spelt differently by Go and Python; see above.)
    dump = set(fixture("peers.txt").splitlines())
    device = parse_get(fixture("peers.txt"))
    peers = tuple(p for k, p in device.peers.items() if k != PEER_E)
    text = format_set(DeviceChange("wg0", add_peers=peers))
    lines = text.splitlines()[1:-1]
    assert lines.count("replace_allowed_ips=true") == 3
    assert [line for line in lines if line not in dump] == ["replace_allowed_ips=true"] * 3
    assert "replace_peers" not in text


# --- speed at scale ------------------------------------------------------------------------


def big_dump(n: int) -> str:
    lines = [f"private_key={PRIVATE_HEX}", "listen_port=40456"]
    for i in range(n):
        lines += [
            f"public_key={i.to_bytes(32, 'big').hex()}",
            "preshared_key=" + "0" * 64,
            "protocol_version=1",
            f"endpoint=[fd70::{i:x}]:40456",
            "last_handshake_time_sec=0",
            "last_handshake_time_nsec=0",
            "tx_bytes=0",
            "rx_bytes=0",
            "persistent_keepalive_interval=0",
            f"allowed_ip=fd77::{i:x}/128",
        ]
    return "\n".join(lines) + "\nerrno=0\n\n"


def test_parse_and_format_10000_peers_quickly() -> None:
    # Measured ~0.1 s for parse and ~0.03 s for format; the bound only catches a
    # change of complexity, not a slow machine.
    text = big_dump(10_000)
    t0 = time.perf_counter()
    device = parse_get(text)
    t1 = time.perf_counter()
    request = format_set(DeviceChange("wg0", add_peers=tuple(device.peers.values())))
    t2 = time.perf_counter()
    assert len(device.peers) == 10_000
    assert request.count("public_key=") == 10_000
    assert t1 - t0 < 2.0 and t2 - t1 < 2.0


# --- UapiClient against fake daemons -------------------------------------------------------


class FakeDaemon:
    """A one-connection UAPI server: records the request, answers with `respond(request)`."""

    def __init__(self, path: str, respond: Callable[[bytes], bytes], split: bool = False) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(1)
        self.respond = respond
        self.split = split
        self.request = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while not self.request.endswith(b"\n\n"):
                data = conn.recv(65536)
                if not data:
                    return
                self.request += data
            answer = self.respond(self.request)
            if self.split:
                # The final "\n" alone, later: the terminator arrives split across reads.
                conn.sendall(answer[:-1])
                time.sleep(0.05)
                answer = answer[-1:]
            conn.sendall(answer)
            # Like wireguard-go, keep the connection open for another request.
            conn.recv(1)

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.server.close()


def test_client_get_reads_until_terminator(tmp_path: Path) -> None:
    answer = fixture("peers.txt").encode()
    daemon = FakeDaemon(str(tmp_path / "wg0.sock"), lambda _: answer, split=True)
    try:
        device = UapiClient(str(tmp_path)).get("wg0")
    finally:
        daemon.close()
    assert daemon.request == b"get=1\n\n"
    assert device == parse_get(answer.decode())


def test_client_set_sends_request_and_accepts_errno_0(tmp_path: Path) -> None:
    daemon = FakeDaemon(str(tmp_path / "wg0.sock"), lambda _: b"errno=0\n\n")
    change = DeviceChange("wg0", listen_port=1234, remove_peers=(key(1),))
    try:
        UapiClient(str(tmp_path)).apply(change)
    finally:
        daemon.close()
    assert daemon.request == format_set(change).encode()


def test_client_set_refused(tmp_path: Path) -> None:
    daemon = FakeDaemon(str(tmp_path / "wg0.sock"), lambda _: fixture("set-refused.txt").encode())
    try:
        with pytest.raises(DeviceRefused) as info:
            UapiClient(str(tmp_path)).set("wg0", "set=1\nlisten_port=99999\n\n")
    finally:
        daemon.close()
    assert info.value.errno == 22
    assert str(info.value).startswith(
        "wg0: the WireGuard device refused the change (errno 22: invalid argument)"
    )


def test_client_missing_socket(tmp_path: Path) -> None:
    client = UapiClient(str(tmp_path))
    assert not client.exists("wg0")
    with pytest.raises(DeviceUnreachable) as info:
        client.get("wg0")
    assert str(info.value) == (
        f"wg0: no WireGuard device socket at {tmp_path}/wg0.sock; is wireguard-go running?"
    )


def test_client_stale_socket(tmp_path: Path) -> None:
    # What a SIGKILLed daemon leaves: a socket file nobody listens on.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "wg0.sock"))
    stale.close()
    client = UapiClient(str(tmp_path))
    assert client.exists("wg0")
    with pytest.raises(DeviceUnreachable, match=r"stale socket.*is wireguard-go running"):
        client.set("wg0", "set=1\n\n")


def test_client_hung_daemon_times_out(tmp_path: Path, no_hang: None) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(tmp_path / "wg0.sock"))
    server.listen(1)  # accepts (in the backlog) but never answers
    try:
        t0 = time.monotonic()
        with pytest.raises(DeviceUnreachable, match=r"did not answer within 0\.2 s"):
            UapiClient(str(tmp_path), timeout=0.2).get("wg0")
        # Bounded (an unbounded read waits forever); generous for a loaded machine.
        assert time.monotonic() - t0 < 10
    finally:
        server.close()


def test_client_connection_closed_mid_answer(tmp_path: Path) -> None:
    def respond(_: bytes) -> bytes:
        return b"listen_port=1\n"

    path = str(tmp_path / "wg0.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(respond(b""))
        conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with pytest.raises(DeviceUnreachable, match="closed the connection"):
            UapiClient(str(tmp_path)).get("wg0")
    finally:
        thread.join(5)
        server.close()


def test_served_here_lists_only_sockets_listened_on_in_this_namespace(tmp_path: Path) -> None:
    listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listening.bind(str(tmp_path / "wg0.sock"))
    listening.listen(1)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "wg1.sock"))
    stale.close()
    # A socket of the same name in another directory is another device's.
    (tmp_path / "elsewhere").mkdir()
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(str(tmp_path / "elsewhere" / "wg2.sock"))
    other.listen(1)
    (tmp_path / "wg2.sock").touch()
    try:
        assert UapiClient(str(tmp_path)).served_here() == frozenset({"wg0"})
    finally:
        listening.close()
        other.close()


def test_served_here_reads_the_kernels_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What /proc/self/net/unix shows in a namespace where another namespace's daemon
    # made the socket: nothing listening on it (the table is per namespace).
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(tmp_path / "wg0.sock"))
    sock.close()
    table = tmp_path / "unix"
    table.write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"0000000000000000: 00000003 00000000 00000000 0001 03 1234 {tmp_path}/wg0.sock\n"
    )
    monkeypatch.setattr("bmx7_wg.wireguard.uapi.UNIX_SOCKETS", str(table))
    assert UapiClient(str(tmp_path)).served_here() == frozenset()
    table.write_text(table.read_text().replace("00000000 0001 03", "00010000 0001 01"))
    assert UapiClient(str(tmp_path)).served_here() == frozenset({"wg0"})
    monkeypatch.setattr("bmx7_wg.wireguard.uapi.UNIX_SOCKETS", str(tmp_path / "missing"))
    assert UapiClient(str(tmp_path)).served_here() == frozenset()


@pytest.mark.parametrize("name", ["", "a/b", "..", "."])
def test_client_rejects_names_that_escape_the_directory(name: str) -> None:
    with pytest.raises(UapiError):
        UapiClient("/nonexistent").socket_path(name)


def test_client_socket_path() -> None:
    assert UapiClient().socket_path("wg0") == "/var/run/wireguard/wg0.sock"
    assert UapiClient("/x").socket_path("wg0") == "/x/wg0.sock"


# --- wggo against fake executables ---------------------------------------------------------


def fake_program(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-wireguard-go"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def test_find_wireguard_go_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    program = fake_program(tmp_path, "exit 0\n")
    monkeypatch.setenv(wggo.ENV_OVERRIDE, program)
    assert wggo.find_wireguard_go() == program
    monkeypatch.setenv(wggo.ENV_OVERRIDE, str(tmp_path / "missing"))
    assert wggo.find_wireguard_go() is None
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv(wggo.ENV_OVERRIDE, "fake-wireguard-go")
    assert wggo.find_wireguard_go() == program
    monkeypatch.delenv(wggo.ENV_OVERRIDE)
    assert wggo.find_wireguard_go() is None  # not in this PATH


def test_start_without_wireguard_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wggo.ENV_OVERRIDE, str(tmp_path / "missing"))
    with pytest.raises(BackendUnavailable, match="wg0: the userspace backend needs wireguard-go"):
        wggo.start("wg0", str(tmp_path))


BANNER = "┌───┐\n│   Running wireguard-go is not required │\n└───┘\n"


def test_start_reports_wireguard_go_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = (
        f"printf '{BANNER}' >&2\n"
        "echo 'ERROR: (wg0) 2026/11/24 19:01:19 Failed to create TUN device: "
        "device or resource busy'\nexit 1\n"
    )
    monkeypatch.setenv(wggo.ENV_OVERRIDE, fake_program(tmp_path, body))
    with pytest.raises(wggo.WireGuardGoError) as info:
        wggo.start("wg0", str(tmp_path))
    assert str(info.value) == (
        "wg0: wireguard-go could not create the device: "
        "Failed to create TUN device: device or resource busy"
    )


def test_start_explains_a_socket_in_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = "echo 'ERROR: (wg0) 2026/11/24 19:01:19 UAPI listen error: unix socket in use'\nexit 1\n"
    monkeypatch.setenv(wggo.ENV_OVERRIDE, fake_program(tmp_path, body))
    with pytest.raises(wggo.WireGuardGoError, match="another wireguard-go already serves wg0"):
        wggo.start("wg0", str(tmp_path))


def test_start_tries_again_once_a_socket_in_use_is_released(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The socket's daemon (one whose interface was just deleted) has gone by the time
    # start() looks again: wireguard-go is run a second time, and only once more.
    runs = tmp_path / "runs"
    body = (
        f"echo run >> {runs}\n"
        f"if [ $(wc -l < {runs}) = 1 ]; then\n"
        "  echo 'ERROR: (wg0) 2026/11/24 19:01:19 UAPI listen error: unix socket in use'\n"
        "else\n"
        "  echo 'ERROR: (wg0) 2026/11/24 19:01:19 Failed to create TUN device: second try'\n"
        "fi\nexit 1\n"
    )
    monkeypatch.setenv(wggo.ENV_OVERRIDE, fake_program(tmp_path, body))
    with pytest.raises(wggo.WireGuardGoError, match=r"Failed to create TUN device: second try$"):
        wggo.start("wg0", str(tmp_path))
    assert runs.read_text() == "run\nrun\n"


def test_start_gives_up_on_a_hung_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_hang: None
) -> None:
    monkeypatch.setenv(wggo.ENV_OVERRIDE, fake_program(tmp_path, "exec sleep 30\n"))
    t0 = time.monotonic()
    with pytest.raises(wggo.WireGuardGoError, match=r"did not finish starting within 0\.3 s"):
        wggo.start("wg0", str(tmp_path), timeout=0.3)
    assert time.monotonic() - t0 < 10  # the fake start sleeps 30 s; generous for a loaded machine


def test_start_runs_wireguard_go_like_wg_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake records its arguments, environment and stdio, then fails so start() stops.
    report = tmp_path / "report"
    body = (
        "i=$(readlink /proc/$$/fd/0)\n"
        f'{{ echo "args=$*"; env; echo "stdin=$i"; }} > {report}\nexit 1\n'
    )
    monkeypatch.setenv(wggo.ENV_OVERRIDE, fake_program(tmp_path, body))
    for name in wggo._CONTROL_ENV:
        monkeypatch.setenv(name, "1")
    with pytest.raises(wggo.WireGuardGoError, match="exit status 1"):
        wggo.start("wg0", str(tmp_path))
    lines = report.read_text().splitlines()
    assert "args=wg0" in lines
    assert "stdin=/dev/null" in lines
    for name in wggo._CONTROL_ENV:
        assert not any(line.startswith(f"{name}=") for line in lines), name


@pytest.mark.parametrize("name", ["", "-h", "-f", "a/b", "x" * 16, "a b"])
def test_start_refuses_names_wireguard_go_misreads(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(wggo.ENV_OVERRIDE, "/nonexistent")
    with pytest.raises(wggo.WireGuardGoError, match="not a valid interface name"):
        wggo.start(name, "/nonexistent")


def test_uapi_module_stays_light() -> None:
    # uapi and wggo are imported by `show`; neither may pull in pyroute2.
    import subprocess
    import sys

    code = "import sys, bmx7_wg.wireguard.uapi, bmx7_wg.wireguard.wggo; print('pyroute2' in sys.modules)"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False", out.stderr
