"""Node ids and the addresses derived from them (mesh/nodeid.py)."""

from __future__ import annotations

import ipaddress
import random

import pytest

from bmx7_wg.base.nodeid import primary_address, primary_text, tunnel_address, tunnel_host


def _ids() -> list[str]:
    rng = random.Random(3)
    ids = [f"{rng.getrandbits(224):056X}" for _ in range(2000)]
    # Zero groups, one or several runs, at the start, in the middle, at the end: where
    # the canonical text compresses (the longest run, the first of equal runs) or not.
    ids += [(text + "5" * 56)[:56] for text in (
        "0" * 56,
        "0000" + "1" * 52,
        "1111" + "0" * 8 + "2222" + "0" * 8 + "3" * 28,
        "1111" + "0" * 4 + "2222" + "0" * 8 + "3" * 36,
        "1" * 44 + "0" * 12,
        "00010000000000020000" + "0" * 36,
        "abcdef" + "0" * 50,
        "0" * 8 + "1111" + "0" * 12 + "2222",
        "1111" + "0" * 8 + "2222" + "0" * 12,
    )]
    return ids


@pytest.mark.parametrize("node_id", _ids())
def test_address_texts_are_what_ipaddress_writes(node_id: str) -> None:
    assert tunnel_host(node_id) == f"{tunnel_address(node_id)}/128"
    assert primary_text(node_id) == str(primary_address(node_id))
    assert ipaddress.ip_network(tunnel_host(node_id)).prefixlen == 128


def test_a_bad_node_id_is_refused() -> None:
    with pytest.raises(ValueError):
        tunnel_host("xyz")
