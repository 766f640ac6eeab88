"""The announcement a mesh node publishes through BMX7's SMS plugin.

The payload travels inside the sender's signed BMX7 description, so the receiver
knows the sender's node id from the file name (`rcvdSms/<NODEID>:<name>`), not from
the payload. The payload therefore never carries an address: a receiver derives the
peer's tunnel address and endpoint host from that node id.

Format, version 1 (ASCII, one field per line, every line ends with "\\n"):

    bmx7-wg 1
    key <WireGuard public key, 44 base64 characters>
    port <listen port, 1-65535, decimal without leading zeros>
    net <canonical CIDR>          (zero to MAX_NETWORKS lines, distinct)

The first line names the format and its version. `key` and `port` appear exactly once;
`net` lines follow them. Nothing else is accepted: no blank lines, no comments, no
carriage returns, no unknown fields (a new field means a new version). The whole
payload is at most MAX_SIZE bytes; MAX_NETWORKS of the longest IPv6 networks fit in it.
`format_announcement` writes networks sorted, so the same inputs give the same bytes
and an unchanged announcement is never rewritten.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from bmx7_wg.base.iptext import ipv6_zone
from bmx7_wg.errors import Bmx7WgError
from bmx7_wg.keys import decode_key
from bmx7_wg.mesh.escape import escape

MAGIC = "bmx7-wg"
VERSION = 1
MAX_SIZE = 1024
MAX_NETWORKS = 16
_HEADER = f"{MAGIC} {VERSION}"


class AnnouncementError(Bmx7WgError):
    """A received announcement is not one this version accepts; `reason` says why."""

    def __init__(self, reason: str) -> None:
        # A reason may quote the payload, which the sending node chose.
        reason = escape(reason)
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Announcement:
    public_key: str  # base64, as `wg pubkey` prints it
    port: int
    networks: tuple[str, ...] = ()  # canonical CIDR strings, sorted


def _network_sort_key(text: str) -> tuple[int, int, int]:
    net = ipaddress.ip_network(text)
    return (net.version, int(net.network_address), net.prefixlen)


def _canonical_network(text: str) -> str:
    """Return the canonical form of a CIDR, or raise AnnouncementError."""
    if ipv6_zone(text) is not None:
        # ipaddress keeps a zone ("fe80::%eth0/64") in the canonical spelling; no device
        # or route takes one.
        raise AnnouncementError(f"network {text[:50]!r} has an IPv6 zone")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError:
        raise AnnouncementError(f"bad network {text[:50]!r}") from None
    if str(net) != text:
        # Only the canonical spelling is accepted, so that one network has one encoding.
        raise AnnouncementError(f"network {text[:50]!r} is not canonical (expected {net})")
    return text


def _check_key(text: str) -> str:
    try:
        decode_key(text)
    except ValueError as exc:
        raise AnnouncementError(f"bad key: {exc}") from None
    return text


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or text != str(int(text)):
        raise AnnouncementError(f"bad port {text[:20]!r}")
    port = int(text)
    if not 1 <= port <= 65535:
        raise AnnouncementError(f"port {port} out of range 1-65535")
    return port


def format_announcement(public_key: str, port: int, networks: Iterable[str] = ()) -> bytes:
    """Encode an announcement; raise AnnouncementError if the values cannot be announced."""
    _check_key(public_key)
    if not 1 <= port <= 65535:
        raise AnnouncementError(f"port {port} out of range 1-65535")
    try:
        canonical = {str(ipaddress.ip_network(n, strict=True)) for n in networks}
    except ValueError as exc:
        raise AnnouncementError(f"bad network: {exc}") from None
    nets = sorted(canonical, key=_network_sort_key)
    if len(nets) > MAX_NETWORKS:
        raise AnnouncementError(f"too many networks ({len(nets)} > {MAX_NETWORKS})")
    lines = [_HEADER, f"key {public_key}", f"port {port}", *(f"net {n}" for n in nets)]
    data = ("\n".join(lines) + "\n").encode("ascii")
    if len(data) > MAX_SIZE:
        raise AnnouncementError(f"announcement too large ({len(data)} > {MAX_SIZE} bytes)")
    return data


def parse_announcement(data: bytes) -> Announcement:
    """Parse a received announcement strictly; raise AnnouncementError on anything else."""
    if len(data) > MAX_SIZE:
        raise AnnouncementError(f"too large ({len(data)} > {MAX_SIZE} bytes)")
    if not data:
        raise AnnouncementError("empty")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise AnnouncementError("not ASCII text") from None
    if not text.endswith("\n"):
        raise AnnouncementError("truncated (no final newline)")
    lines = text[:-1].split("\n")
    header = lines[0]
    if not header.startswith(MAGIC + " "):
        raise AnnouncementError("not a bmx7-wg announcement")
    if header != _HEADER:
        raise AnnouncementError(f"unknown version {header[len(MAGIC) + 1:][:20]!r}")

    key: str | None = None
    port: int | None = None
    networks: list[str] = []
    for number, line in enumerate(lines[1:], start=2):
        field, sep, value = line.partition(" ")
        if not sep or not value or not field:
            raise AnnouncementError(f"line {number}: not 'field value'")
        if not line.isprintable():
            raise AnnouncementError(f"line {number}: control characters")
        if field == "key":
            if key is not None:
                raise AnnouncementError("duplicate field 'key'")
            if networks:
                raise AnnouncementError("field 'key' after 'net'")
            key = _check_key(value)
        elif field == "port":
            if port is not None:
                raise AnnouncementError("duplicate field 'port'")
            if networks:
                raise AnnouncementError("field 'port' after 'net'")
            port = _parse_port(value)
        elif field == "net":
            net = _canonical_network(value)
            if net in networks:
                raise AnnouncementError(f"duplicate network {net}")
            networks.append(net)
            if len(networks) > MAX_NETWORKS:
                raise AnnouncementError(f"too many networks (> {MAX_NETWORKS})")
        else:
            raise AnnouncementError(f"unknown field {field[:20]!r}")
    if key is None:
        raise AnnouncementError("missing field 'key'")
    if port is None:
        raise AnnouncementError("missing field 'port'")
    return Announcement(key, port, tuple(sorted(networks, key=_network_sort_key)))
