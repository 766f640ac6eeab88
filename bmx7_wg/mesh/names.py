"""Mesh peers' names: which `NAME.DOMAIN` and `SHORTID.DOMAIN` go into the hosts file.

A node chooses its own host name, and signs it into its bmx7 description: the name is
authentic (it is that node's choice) but not trustworthy (any node can say it is
`gateway`). So a name is taken only when it is harmless to every other use of names on
this host:

- it must be a DNS label after lower-casing (1-63 characters of a-z, 0-9 and inner
  '-', ASCII only: `str.lower` maps some non-ASCII letters, the Kelvin sign for one,
  onto ASCII ones); anything else is refused, and the refusal quotes it escaped;
- a name two peers claim resolves to neither (each keeps its short-id name, unless
  that is claimed twice too): the rule is the same for host names and short ids, so a
  node naming itself after another's short id takes nothing from it;
- this host's own names, `localhost`, and every name the hosts file has outside our
  block are never taken.

Resolvers compare host names case-insensitively, so the block holds them lower-case
(bmx7 prints short ids upper-case). Pure: the service reads and writes the file.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from bmx7_wg.base.dnsname import dns_label
from bmx7_wg.base.nodeid import short_id, tunnel_host
from bmx7_wg.mesh.escape import escape

RESERVED = frozenset({"localhost"})
NOT_A_LABEL = "not a DNS label (a-z, 0-9 and inner '-', 1-63 characters)"


@dataclass(frozen=True)
class HostEntry:
    """One line of the block: a peer's tunnel address and its names, the name first."""

    node_id: str
    address: str
    names: tuple[str, ...]

    def line(self) -> str:
        return f"{self.address}\t{' '.join(self.names)}"


@dataclass(frozen=True)
class NameRefusal:
    node_id: str
    name: str  # as the node gave it, escaped
    reason: str

    def describe(self) -> str:
        return f"mesh node {short_id(self.node_id)}: name \"{self.name}\" not used: {self.reason}"


@dataclass(frozen=True)
class HostNames:
    entries: tuple[HostEntry, ...]  # by node id
    refusals: tuple[NameRefusal, ...]

    def lines(self) -> tuple[str, ...]:
        return tuple(e.line() for e in self.entries)


def host_names(
    peers: Mapping[str, str],
    domain: str,
    *,
    own_names: Iterable[str] = (),
    taken: Iterable[str] = (),
) -> HostNames:
    """The block's entries for `peers` (node id -> host name as bmx7 gave it, "" for
    none). `own_names`: this host's names; `taken`: the names the hosts file has
    outside our block (any case)."""
    forbidden = frozenset({n.lower() for n in own_names if n} | RESERVED)
    outside = frozenset(n.lower() for n in taken)
    refusals: list[NameRefusal] = []
    wanted: dict[str, tuple[str, ...]] = {}
    for node_id in sorted(peers):
        names, refusal = _candidates(node_id, peers[node_id], domain, forbidden, outside)
        if refusal is not None:
            refusals.append(refusal)
        wanted[node_id] = names
    claims = Counter(n for names in wanted.values() for n in names)
    entries = []
    for node_id, names in wanted.items():
        kept = names
        if any(claims[n] > 1 for n in names):
            refusals.extend(NameRefusal(node_id, n, CLAIMED_TWICE) for n in names if claims[n] > 1)
            kept = tuple(n for n in names if claims[n] == 1)
        if kept:
            entries.append(HostEntry(node_id, tunnel_host(node_id).removesuffix("/128"), kept))
    return HostNames(tuple(entries), tuple(refusals))


CLAIMED_TWICE = "another mesh node claims it too"


# A step of the service names every peer again (a name is decided against all the
# others); a node's own candidates change only with its name or this host's: made once
# (a step at 5,000 peers: ~29 ms of CPU for the names instead of ~43).
@functools.lru_cache(maxsize=1 << 16)
def _candidates(
    node_id: str, given: str, domain: str, forbidden: frozenset[str], outside: frozenset[str]
) -> tuple[tuple[str, ...], NameRefusal | None]:
    """The names a node asks for (its name, its short id), before the claims are
    counted, and why its name is refused (None: it is not)."""
    names: list[str] = []
    refusal = None
    label = dns_label(given) if given else None
    if given and label is None:
        refusal = NameRefusal(node_id, escape(given), NOT_A_LABEL)
    elif label is not None:
        full = f"{label}.{domain}"
        if label in forbidden or full in forbidden:
            refusal = NameRefusal(node_id, label, "it is this host's own name or a reserved one")
        elif label in outside or full in outside:
            refusal = NameRefusal(node_id, label, "the hosts file has it outside bmx7-wg's block")
        else:
            names.append(full)
    short = f"{short_id(node_id).lower()}.{domain}"
    if short not in outside and short not in forbidden:
        names.append(short)
    return tuple(names), refusal
