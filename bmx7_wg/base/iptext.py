"""Canonical address and network texts, decided by `ipaddress` and remembered.

The configuration reader, the planner and the service state ask whether an allowed-ip or
an endpoint address is written exactly as `ipaddress` writes it, and want its value as
plain ints. `ipaddress` decides; the answers are cached, because one apply reads each
allowed-ip twice and the service reads the same ones on every reconcile.

A hand-written path through the C library (`inet_pton`/`inet_ntop`) stood here until it
was measured on the default (kernel) backend: it gained nothing measurable on apply,
no-op apply or show (HACKING.md, "Hand-written speed paths, measured"), so it went.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

Network = tuple[int, int, int]  # (IP version, prefix length, network address as an int)

# Bounded, so mesh churn cannot grow the caches without end.
_CACHE_SIZE = 1 << 16


def _embedded_or_zoned(text: str) -> bool:
    """IPv4-embedded IPv6 forms ("::ffff:1.2.3.4") and zones ("fe80::1%eth0") are never
    canonical here: WireGuard and the kernel have no use for a zone, and the embedded
    forms are left to the callers' full `ipaddress` reading."""
    return "%" in text or ("." in text and ":" in text)


@lru_cache(maxsize=_CACHE_SIZE)
def canonical_network(text: str) -> Network | None:
    """`text` as a network if it is written exactly as `str(ipaddress.ip_network(text))`
    writes it (so with no host bits set); None otherwise: then ask `ipaddress`."""
    if _embedded_or_zoned(text):
        return None
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        return None
    if str(network) != text:
        return None
    return network.version, network.prefixlen, int(network.network_address)


@lru_cache(maxsize=_CACHE_SIZE)
def canonical_address(text: str) -> int | None:
    """The IP version of `text` if it is an address written exactly as `ipaddress` writes
    it; None otherwise (then ask `ipaddress`)."""
    if _embedded_or_zoned(text):
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return address.version if str(address) == text else None


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
    """The RFC 5952 text of a 16-byte IPv6 address, as `ipaddress` writes it."""
    return str(ipaddress.IPv6Address(packed))
