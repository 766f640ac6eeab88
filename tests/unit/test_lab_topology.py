"""bmx7-wg-lab's topologies: node and link counts, connectivity, seeds, and the `--topology` syntax."""

from __future__ import annotations

import pytest

from bmx7_wg_lab import topology
from bmx7_wg_lab.errors import UsageError


@pytest.mark.parametrize("n", [2, 3, 6, 10, 25, 50])
def test_line_is_a_path(n: int) -> None:
    t = topology.build(n, "line")
    assert t.nodes == tuple(range(1, n + 1))
    assert len(t.links) == n - 1
    assert topology.connected(t.nodes, t.links)
    assert topology.diameter(t.nodes, t.links) == n - 1
    assert t.neighbours(1) == (2,) and t.neighbours(n) == (n - 1,)


@pytest.mark.parametrize("n", [3, 6, 10, 25, 50])
def test_ring_closes_the_line(n: int) -> None:
    t = topology.build(n, "ring")
    assert len(t.links) == n
    assert (1, n) in t.links
    assert all(len(t.neighbours(i)) == 2 for i in t.nodes)
    assert topology.diameter(t.nodes, t.links) == n // 2


def test_a_ring_of_two_is_one_link() -> None:
    assert topology.build(2, "ring").links == ((1, 2),)


@pytest.mark.parametrize(
    ("n", "columns", "links", "hops"), [(9, 3, 12, 4), (10, 4, 13, 5), (25, 5, 40, 8), (50, 8, 85, 13)]
)
def test_grid_is_near_square(n: int, columns: int, links: int, hops: int) -> None:
    t = topology.build(n, "grid")
    assert t.columns == columns
    assert len(t.links) == links
    assert topology.connected(t.nodes, t.links)
    assert topology.diameter(t.nodes, t.links) == hops
    assert max(len(t.neighbours(i)) for i in t.nodes) <= 4


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("n", [2, 5, 10, 50])
def test_random_is_connected_and_about_degree_three(n: int, seed: int) -> None:
    t = topology.build(n, "random", seed)
    assert topology.connected(t.nodes, t.links)
    assert n - 1 <= len(t.links) <= n - 1 + n // 2
    assert len(set(t.links)) == len(t.links)
    assert all(a < b for a, b in t.links)
    assert t.spec == f"random:{seed}"


def test_random_is_the_same_for_a_seed_and_differs_between_seeds() -> None:
    assert topology.build(25, "random", 7) == topology.build(25, "random", 7)
    assert topology.build(25, "random", 7).links != topology.build(25, "random", 8).links


@pytest.mark.parametrize(
    ("text", "kind", "seed"),
    [("line", "line", None), ("ring", "ring", None), ("grid", "grid", None), ("random", "random", None),
     ("random:42", "random", 42)],
)  # fmt: skip
def test_spec_syntax(text: str, kind: str, seed: int | None) -> None:
    assert topology.parse_spec(text) == (kind, seed)


@pytest.mark.parametrize("text", ["star", "grid:3", "random:", "random:x", "Line", ""])
def test_bad_spec_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--topology"):
        topology.parse_spec(text)


@pytest.mark.parametrize("n", [0, 1, topology.MAX_NODES + 1])
def test_node_count_is_bounded(n: int) -> None:
    with pytest.raises(UsageError, match="--nodes"):
        topology.build(n, "line")


def test_connected_sees_a_split() -> None:
    assert not topology.connected([1, 2, 3, 4], [(1, 2), (3, 4)])
    assert topology.connected([1, 2, 3, 4], [(1, 2), (2, 3), (3, 4)])
