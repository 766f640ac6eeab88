"""Canonical texts: an answer only for a text written exactly as ipaddress writes it."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from bmx7_wg.base.iptext import canonical_address, canonical_network, ipv6_text, ipv6_zone


@given(st.integers(0, 2**128 - 1), st.integers(0, 128))
def test_ipv6_networks_in_canonical_form_only(value: int, prefixlen: int) -> None:
    value &= ~((1 << (128 - prefixlen)) - 1)
    address = ipaddress.IPv6Address(value)
    canonical = f"{address.compressed}/{prefixlen}"
    if "." not in canonical:
        assert canonical_network(canonical) == (6, prefixlen, value)
    exploded = f"{address.exploded}/{prefixlen}"
    assert exploded == canonical or canonical_network(exploded) is None


@given(st.integers(0, 2**32 - 1), st.integers(0, 32))
def test_ipv4_networks_with_host_bits_are_not_networks(value: int, prefixlen: int) -> None:
    text = f"{ipaddress.IPv4Address(value)}/{prefixlen}"
    network = value & ~((1 << (32 - prefixlen)) - 1)
    assert canonical_network(text) == ((4, prefixlen, value) if network == value else None)


def test_non_canonical_networks() -> None:
    for text in (
        "10.0.0.1/24",  # host bits
        "fd00::1/64",  # host bits
        "10.0.0.0/024",
        "10.0.0.0/255.0.0.0",
        "10.0.0.0",
        "010.0.0.0/8",
        "FD00::/8",
        "fd00:0::/32",
        "::ffff:1.2.3.4/128",  # IPv4-mapped: left to the full reading
        "fd00::/129",
        "fd00::/ 8",
        "fe80::%eth0/64",  # a zone
        "",
        "/",
    ):
        assert canonical_network(text) is None, text
    assert canonical_network("fd00:b:0:1::1/128") == (6, 128, int(ipaddress.ip_address("fd00:b:0:1::1")))
    assert canonical_network("10.1.0.0/16") == (4, 16, 0x0A010000)
    assert canonical_network("::/0") == (6, 0, 0)


def test_canonical_addresses() -> None:
    assert canonical_address("10.0.0.1") == 4
    assert canonical_address("fd00::1") == 6
    assert canonical_address("::") == 6
    for text in (
        "010.0.0.1",
        "1.2.3",
        "FD00::1",
        "fd00:0::1",
        "fe80::1%eth0",  # a zone
        "::ffff:1.2.3.4",  # IPv4-mapped
        "10.0.0.0/8",
        "",
        "host",
    ):
        assert canonical_address(text) is None, text


def test_zones() -> None:
    assert ipv6_zone("fe80::1%eth0") == "%eth0"
    assert ipv6_zone("fe80::%eth0/64") == "%eth0"
    assert ipv6_zone("fe80::1") is None


def test_ipv6_text_is_rfc_5952() -> None:
    # Lower case, leading zeros dropped, the longest run of zero groups (the first of
    # equals) written "::", a single zero group not.
    for packed, written in (
        (bytes.fromhex("fd770000000000000000000000000001"), "fd77::1"),
        (bytes.fromhex("fd70000a00bc0000000000000000abcd"), "fd70:a:bc::abcd"),
        (bytes.fromhex("fd770000000100000000000000000000"), "fd77:0:1::"),
        (bytes.fromhex("fd7700000000000100000000000000ff"), "fd77:0:0:1::ff"),
        (bytes.fromhex("fd7700010000000200030004000500ff"), "fd77:1:0:2:3:4:5:ff"),
        (bytes(16), "::"),
    ):
        assert ipv6_text(packed) == written, written
