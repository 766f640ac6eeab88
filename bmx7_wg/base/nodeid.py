"""BMX7 node ids and the IPv6 addresses derived from them."""

from __future__ import annotations

import functools
import ipaddress
import re

from bmx7_wg.base.iptext import ipv6_text

NODE_ID_RE = re.compile(r"\A[0-9A-Fa-f]{56}\Z")  # \Z: "$" would accept a trailing newline
TUNNEL_PREFIX = 0xFD77  # the wg_tun plugin's tunnel prefix, fd77::/16
PRIMARY_PREFIX = 0xFD70  # bmx7's ipAutoPrefix default, fd70::/16
MESH_NETWORK = "fd77::/16"
BMX7_NETWORK = "fd70::/16"  # bmx7's own primary addresses: the underlay the tunnels run over


def normalize_node_id(text: str) -> str:
    """Return the canonical upper-case node id, or raise ValueError."""
    if not NODE_ID_RE.match(text):
        raise ValueError(f"not a BMX7 node id (56 hex characters): {text[:64]!r}")
    return text.upper()


def _address(prefix: int, node_id: str) -> ipaddress.IPv6Address:
    suffix = bytes.fromhex(normalize_node_id(node_id))[:14]
    return ipaddress.IPv6Address(prefix.to_bytes(2, "big") + suffix)


def tunnel_address(node_id: str) -> ipaddress.IPv6Address:
    """fd77::/16 + the first 14 bytes of the node id."""
    return _address(TUNNEL_PREFIX, node_id)


def primary_address(node_id: str) -> ipaddress.IPv6Address:
    """fd70::/16 + the first 14 bytes of the node id: bmx7's own primary address."""
    return _address(PRIMARY_PREFIX, node_id)


# A node's addresses are asked for at every reconcile (and twice in one: the mesh's rules
# and this node's): node ids stay, so each text is made once per process.
@functools.lru_cache(maxsize=1 << 16)
def tunnel_host(node_id: str) -> str:
    """The tunnel address as a /128 ("fd77:…/128"), canonical text: a mesh peer's allowed IP."""
    return f"{_text(TUNNEL_PREFIX, node_id)}/128"


@functools.lru_cache(maxsize=1 << 16)
def primary_text(node_id: str) -> str:
    """The primary address, canonical text: a mesh peer's endpoint host."""
    return _text(PRIMARY_PREFIX, node_id)


def _text(prefix: int, node_id: str) -> str:
    suffix = bytes.fromhex(normalize_node_id(node_id))[:14]
    return ipv6_text(prefix.to_bytes(2, "big") + suffix)


def short_id(node_id: str) -> str:
    return normalize_node_id(node_id)[:8]
