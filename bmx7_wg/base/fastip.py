"""Networks read without `ipaddress` objects, for the lists that grow with the peers.

A configuration of 10,000 peers has 10,000 allowed-ips, and building an `ipaddress`
network for each costs ~10 µs, more than the rest of their handling. Almost all of them
are already written canonically, which the C library can confirm in a fraction of that:
those take the fast path, anything else still goes through `ipaddress`.
"""

from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache

Network = tuple[int, int, int]  # (IP version, prefix length, network address as an int)

# One apply reads each allowed-ip and endpoint twice (validating the file, then building
# the desired state) and the service reads the same ones on every reconcile: remembered
# answers cost a dict lookup. Bounded, so mesh churn cannot grow it without end.
_CACHE_SIZE = 1 << 16


@lru_cache(maxsize=_CACHE_SIZE)
def canonical_network(text: str) -> Network | None:
    """`text` as a network if it is written exactly as `str(ipaddress.ip_network(text))`
    would write it (and has no host bits set); None otherwise: then ask `ipaddress`."""
    address, slash, length = text.partition("/")
    if not slash or not (length.isascii() and length.isdigit()) or (length[0] == "0" and length != "0"):
        return None
    if ":" in address:
        # IPv4-embedded forms are spelt differently by the C library and by ipaddress.
        if "." in address:
            return None
        family, version, bits = socket.AF_INET6, 6, 128
    else:
        family, version, bits = socket.AF_INET, 4, 32
    try:
        packed = socket.inet_pton(family, address)
    except (OSError, ValueError):
        return None
    prefixlen = int(length)
    if prefixlen > bits or socket.inet_ntop(family, packed) != address:
        return None
    value = int.from_bytes(packed, "big")
    if value & ((1 << (bits - prefixlen)) - 1):
        return None
    return version, prefixlen, value


@lru_cache(maxsize=_CACHE_SIZE)
def canonical_address(text: str) -> int | None:
    """The IP version of `text` if it is an address written exactly as `ipaddress` writes
    it; None otherwise (then ask `ipaddress`)."""
    if ":" in text:
        if "." in text:
            return None
        family, version = socket.AF_INET6, 6
    else:
        family, version = socket.AF_INET, 4
    try:
        return version if socket.inet_ntop(family, socket.inet_pton(family, text)) == text else None
    except (OSError, ValueError):
        return None


def ipv6_zone(text: str) -> str | None:
    """The IPv6 zone an address, network or endpoint host names ("%eth0"), or None.

    `ipaddress` accepts "fe80::1%eth0" (and "fe80::%eth0/64") since Python 3.9, but a
    zone means nothing to WireGuard's allowed-ips, to routes or to an address on our own
    interface, and wireguard-go drops it from an endpoint: such a value could never match
    what the device reports. Shared by the configuration reader and the announcement
    parser, so that neither the file nor the mesh can bring one in.
    """
    _, percent, zone = text.partition("%")
    if not percent:
        return None
    return "%" + zone.split("/", 1)[0]


def ipv6_text(packed: bytes) -> str:
    """`str(ipaddress.IPv6Address(packed))`, by the C library: the same text (RFC 5952)
    except for IPv4-mapped and -compatible addresses, which the C library writes with a
    dotted quad; those are left to `ipaddress`. (A mesh of 10,000 nodes has 20,000 such
    addresses to write at each full reconcile: ~5 µs each by `ipaddress`.)"""
    text = socket.inet_ntop(socket.AF_INET6, packed)
    return str(ipaddress.IPv6Address(packed)) if "." in text else text
