"""Which routes into an interface are worth adding (plan/desired.minimal_routes)."""

from __future__ import annotations

import pytest

from bmx7_wg.plan.desired import minimal_routes


@pytest.mark.parametrize(
    ("routes", "addresses", "kept"),
    [
        # The connected prefix of an address already routes into the interface.
        ({"10.9.0.5/32", "10.9.1.0/24"}, {"10.9.0.1/24"}, {"10.9.1.0/24"}),
        ({"fd77::/16", "fd77:1::/64"}, {"fd77::1/128"}, {"fd77::/16"}),
        ({"fd77::1/128"}, {"fd77::1/128"}, set()),
        # A route inside another route changes nothing.
        ({"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"}, set(), {"10.0.0.0/8"}),
        ({"fd00::/8", "fd77::/16", "fd77::5/128", "fe80::/10"}, set(), {"fd00::/8", "fe80::/10"}),
        # Neighbours, and the other family, are not covered.
        ({"10.1.0.0/16", "10.2.0.0/16"}, {"10.3.0.1/16"}, {"10.1.0.0/16", "10.2.0.0/16"}),
        ({"::/0", "10.1.0.0/16"}, {"fd00::1/8"}, {"::/0", "10.1.0.0/16"}),
        ({"0.0.0.0/0", "10.1.0.0/16", "192.168.0.0/24"}, set(), {"0.0.0.0/0"}),
        # Written otherwise than ipaddress writes it: compared and returned canonically.
        ({"fd77:0:0::/16", "FD77::5/128"}, set(), {"fd77::/16"}),
        ({"::ffff:10.0.0.0/104", "::ffff:10.1.0.0/112"}, set(), {"::ffff:a00:0/104"}),
        (set(), {"10.9.0.1/24"}, set()),
    ],
)
def test_minimal_routes(routes: set[str], addresses: set[str], kept: set[str]) -> None:
    assert minimal_routes(routes, addresses) == kept


def test_many_host_routes_inside_one_address() -> None:
    # The benchmark's shape: every peer's /128 lies in the interface's own /32.
    routes = {f"fd00:b:{i >> 16:x}:{i & 0xFFFF:x}::1/128" for i in range(10_000)}
    assert minimal_routes(routes, {"fd00:b::/32"}) == set()
    assert len(minimal_routes(routes, {"fd00:c::/32"})) == 10_000
