"""The fast path for networks must agree with ipaddress whenever it answers."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from bmx7_wg.base.fastip import canonical_address, canonical_network, ipv6_text


def _expected(text: str) -> tuple[int, int, int] | None:
    try:
        net = ipaddress.ip_network(text)
    except ValueError:
        return None
    if str(net) != text:
        return None
    return net.version, net.prefixlen, int(net.network_address)


@given(st.integers(0, 2**128 - 1), st.integers(0, 128), st.booleans())
def test_ipv6_agrees_with_ipaddress(value: int, prefixlen: int, masked: bool) -> None:
    if masked:
        value &= ~((1 << (128 - prefixlen)) - 1)
    for text in (
        f"{ipaddress.IPv6Address(value).compressed}/{prefixlen}",
        f"{ipaddress.IPv6Address(value).exploded}/{prefixlen}",
    ):
        # None only sends the text to ipaddress (the C library spells some addresses,
        # like "::0.1.0.0", differently); an answer must be ipaddress's.
        got = canonical_network(text)
        assert got is None or got == _expected(text)


@given(st.integers(0, 2**32 - 1), st.integers(0, 32), st.booleans())
def test_ipv4_agrees_with_ipaddress(value: int, prefixlen: int, masked: bool) -> None:
    if masked:
        value &= ~((1 << (32 - prefixlen)) - 1)
    text = f"{ipaddress.IPv4Address(value)}/{prefixlen}"
    assert canonical_network(text) == _expected(text)


def test_non_canonical_forms_are_left_to_ipaddress() -> None:
    for text in (
        "10.0.0.1/24",  # host bits
        "10.0.0.0/024",
        "10.0.0.0",
        "010.0.0.0/8",
        "FD00::/8",
        "fd00:0::/32",
        "::ffff:1.2.3.4/128",
        "::ffff:102:304/128",
        "fd00::/129",
        "fd00::/ 8",
        "fd00::%eth0/64",
        "",
        "/",
    ):
        assert canonical_network(text) is None or canonical_network(text) == _expected(text), text
    assert canonical_network("fd00:b:0:1::1/128") == (6, 128, int(ipaddress.ip_address("fd00:b:0:1::1")))


@given(st.integers(0, 2**128 - 1))
def test_addresses_agree_with_ipaddress(value: int) -> None:
    for address in (ipaddress.IPv6Address(value), ipaddress.IPv4Address(value >> 96)):
        for text in (address.compressed, address.exploded):
            got = canonical_address(text)
            assert got is None or (got == address.version and str(address) == text)
    for text in ("010.0.0.1", "1.2.3", "FD00::1", "fe80::1%eth0", "::ffff:1.2.3.4", "", "host"):
        assert canonical_address(text) is None, text


@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_ipv6_text_is_what_ipaddress_writes(value: int) -> None:
    packed = value.to_bytes(16, "big")
    assert ipv6_text(packed) == str(ipaddress.IPv6Address(packed))


def test_ipv6_text_of_ipv4_mapped_and_compatible_forms() -> None:
    for text in ("::ffff:1.2.3.4", "::1.2.3.4", "::", "::1", "::ffff:0:0"):
        packed = ipaddress.IPv6Address(text).packed
        assert ipv6_text(packed) == str(ipaddress.IPv6Address(packed))
