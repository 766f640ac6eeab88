from __future__ import annotations

import contextlib
import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bmx7_wg.keys import encode_key
from bmx7_wg.mesh.announce import (
    MAX_NETWORKS,
    MAX_SIZE,
    Announcement,
    AnnouncementError,
    format_announcement,
    parse_announcement,
)

KEY = encode_key(bytes(range(32)))


def test_format_is_the_documented_line_format() -> None:
    data = format_announcement(KEY, 40456, ["10.9.0.0/24", "fd00:1::/64", "10.1.0.0/16"])
    assert data == (
        f"bmx7-wg 1\nkey {KEY}\nport 40456\n"
        "net 10.1.0.0/16\nnet 10.9.0.0/24\nnet fd00:1::/64\n"
    ).encode()
    assert parse_announcement(data) == Announcement(
        KEY, 40456, ("10.1.0.0/16", "10.9.0.0/24", "fd00:1::/64")
    )


def test_no_networks() -> None:
    assert parse_announcement(format_announcement(KEY, 1)) == Announcement(KEY, 1, ())


def test_largest_announcement_fits() -> None:
    nets = [f"fd{i:02x}:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124" for i in range(MAX_NETWORKS)]
    data = format_announcement(KEY, 65535, nets)
    assert len(data) <= MAX_SIZE
    assert len(parse_announcement(data).networks) == MAX_NETWORKS


def _payload(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"x" * (MAX_SIZE + 1), "too large"),
        ("bmx7-wg 1\nkey é\n".encode(), "not ASCII"),
        (b"bmx7-wg 1\nkey " + KEY.encode() + b"\nport 1", "truncated"),
        (_payload("wg 1", f"key {KEY}", "port 1"), "not a bmx7-wg"),
        (_payload("bmx7-wg 2", f"key {KEY}", "port 1"), "unknown version"),
        (_payload("bmx7-wg 1", "port 1"), "missing field 'key'"),
        (_payload("bmx7-wg 1", f"key {KEY}"), "missing field 'port'"),
        (_payload("bmx7-wg 1", f"key {KEY}", f"key {KEY}", "port 1"), "duplicate field 'key'"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "port 2"), "duplicate field 'port'"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "addr fd77::1"), "unknown field"),
        (_payload("bmx7-wg 1", "key abc=", "port 1"), "bad key"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 0"), "out of range"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 65536"), "out of range"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 040"), "bad port"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port +4"), "bad port"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "net 10.0.0.1/8"), "bad network"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "net 10.0.0.0/33"), "bad network"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "net FD00::/8"), "not canonical"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "net 10.0.0.0/8", "net 10.0.0.0/8"),
         "duplicate network"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1",
                  *(f"net 10.{i}.0.0/16" for i in range(MAX_NETWORKS + 1))), "too many"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", ""), "not 'field value'"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1\r"), "control characters"),
        (_payload("bmx7-wg 1", f"key {KEY}", "port 1", "net 10.0.0.0/8", "port 2"),
         "duplicate field 'port'"),
    ],
)
def test_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(AnnouncementError) as info:
        parse_announcement(data)
    assert reason in info.value.reason


def test_format_refuses_what_it_cannot_announce() -> None:
    with pytest.raises(AnnouncementError):
        format_announcement("nope", 1)
    with pytest.raises(AnnouncementError):
        format_announcement(KEY, 0)
    with pytest.raises(AnnouncementError):
        format_announcement(KEY, 1, ["10.0.0.1/8"])
    with pytest.raises(AnnouncementError):
        format_announcement(KEY, 1, [f"10.{i}.0.0/16" for i in range(MAX_NETWORKS + 1)])


@settings(max_examples=500)
@given(st.binary(max_size=MAX_SIZE + 10))
def test_random_bytes_raise_only_announcement_error(data: bytes) -> None:
    with contextlib.suppress(AnnouncementError):
        parse_announcement(data)


@settings(max_examples=300)
@given(st.lists(st.sampled_from(["bmx7-wg 1", f"key {KEY}", "port 40456", "net 10.0.0.0/8",
                                 "net fd00::/8", "port x", "key", "net", " ", "bmx7-wg 1 "]),
                max_size=8).map(lambda lines: "\n".join(lines).encode() + b"\n"))
def test_line_soup_raises_only_announcement_error(data: bytes) -> None:
    with contextlib.suppress(AnnouncementError):
        parse_announcement(data)


networks = st.one_of(
    st.builds(lambda a, p: str(ipaddress.IPv4Network((a, p), strict=False)),
              st.integers(0, 2**32 - 1), st.integers(0, 32)),
    st.builds(lambda a, p: str(ipaddress.IPv6Network((a, p), strict=False)),
              st.integers(0, 2**128 - 1), st.integers(0, 128)),
)


@given(st.binary(min_size=32, max_size=32), st.integers(1, 65535),
       st.lists(networks, max_size=MAX_NETWORKS, unique=True))
def test_round_trip(raw: bytes, port: int, nets: list[str]) -> None:
    key = encode_key(raw)
    data = format_announcement(key, port, nets)
    assert len(data) <= MAX_SIZE
    ann = parse_announcement(data)
    assert (ann.public_key, ann.port, set(ann.networks)) == (key, port, set(nets))
    assert format_announcement(ann.public_key, ann.port, ann.networks) == data
