"""Topologies: which nodes a lab has and which pairs a veth link joins. Pure.

Nodes are numbered from 1. A link is a pair `(a, b)` with `a < b`. Every topology is
connected: bmx7 needs a path between any two nodes for their announcements to meet.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bmx7_wg_lab.errors import UsageError

KINDS = ("line", "ring", "grid", "random")
MAX_NODES = 250  # a veth pair and three daemons per node: far more than two cores hold anyway


@dataclass(frozen=True)
class Topology:
    kind: str
    nodes: tuple[int, ...]
    links: tuple[tuple[int, int], ...]
    seed: int | None = None  # random only
    columns: int | None = None  # grid only: nodes per row

    @property
    def spec(self) -> str:
        """The `--topology` value that builds this again."""
        return f"{self.kind}:{self.seed}" if self.seed is not None else self.kind

    def neighbours(self, node: int) -> tuple[int, ...]:
        return tuple(
            sorted({b for a, b in self.links if a == node} | {a for a, b in self.links if b == node})
        )


def parse_spec(text: str) -> tuple[str, int | None]:
    """`line`, `ring`, `grid`, `random` or `random:SEED` -> (kind, seed)."""
    match = re.fullmatch(r"(line|ring|grid|random)(?::(\d{1,18}))?", text)
    if not match or (match.group(2) is not None and match.group(1) != "random"):
        raise UsageError(
            f"--topology {text!r}: expected line, ring, grid, random or random:SEED (SEED a number)"
        )
    return match.group(1), int(match.group(2)) if match.group(2) is not None else None


def build(nodes: int, kind: str, seed: int | None = None) -> Topology:
    if kind not in KINDS:
        raise UsageError(f"unknown topology {kind!r} (one of {', '.join(KINDS)})")
    if not 2 <= nodes <= MAX_NODES:
        raise UsageError(f"--nodes {nodes}: a lab has 2 to {MAX_NODES} nodes")
    ids = tuple(range(1, nodes + 1))
    if kind == "line":
        return Topology(kind, ids, tuple((i, i + 1) for i in ids[:-1]))
    if kind == "ring":
        links = [(i, i + 1) for i in ids[:-1]]
        if nodes > 2:  # two nodes in a ring would be one link twice
            links.append((1, nodes))
        return Topology(kind, ids, tuple(links))
    if kind == "grid":
        columns = math.ceil(math.sqrt(nodes))
        links = []
        for i in ids:
            col = (i - 1) % columns
            if col + 1 < columns and i + 1 <= nodes:
                links.append((i, i + 1))
            if i + columns <= nodes:
                links.append((i, i + columns))
        return Topology(kind, ids, tuple(sorted(links)), columns=columns)
    if seed is None:
        raise UsageError("a random topology needs its seed")
    return Topology(kind, ids, _random_links(nodes, seed), seed=seed)


def _random_links(nodes: int, seed: int) -> tuple[tuple[int, int], ...]:
    """A random tree (so it is connected), plus about half as many extra links again.

    Average degree about three, as in a community mesh where most nodes see two to four
    others; the same seed gives the same links."""
    rng = random.Random(seed)
    links: set[tuple[int, int]] = set()
    for i in range(2, nodes + 1):
        j = rng.randint(1, i - 1)
        links.add((j, i))
    extra = nodes // 2
    tries = 0
    while extra and tries < 20 * nodes:
        tries += 1
        a, b = sorted(rng.sample(range(1, nodes + 1), 2))
        if (a, b) not in links:
            links.add((a, b))
            extra -= 1
    return tuple(sorted(links))


def connected(nodes: Iterable[int], links: Iterable[tuple[int, int]]) -> bool:
    """Whether every node reaches every other one over the links."""
    remaining = set(nodes)
    if not remaining:
        return True
    adjacent: dict[int, set[int]] = {n: set() for n in remaining}
    for a, b in links:
        if a in adjacent and b in adjacent:
            adjacent[a].add(b)
            adjacent[b].add(a)
    start = next(iter(remaining))
    seen = {start}
    todo = [start]
    while todo:
        for n in adjacent[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen == remaining


def diameter(nodes: Iterable[int], links: Iterable[tuple[int, int]]) -> int:
    """The most hops between two nodes (breadth-first from each node)."""
    ids = list(nodes)
    adjacent: dict[int, set[int]] = {n: set() for n in ids}
    for a, b in links:
        adjacent[a].add(b)
        adjacent[b].add(a)
    longest = 0
    for start in ids:
        depth = {start: 0}
        todo = [start]
        for n in todo:
            for m in adjacent[n]:
                if m not in depth:
                    depth[m] = depth[n] + 1
                    todo.append(m)
        longest = max(longest, *depth.values())
    return longest
