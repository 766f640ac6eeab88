"""The grace period for vanished mesh peers (mesh/grace.py), on a clock the test moves."""

from __future__ import annotations

from bmx7_wg.engine import MeshInputs
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.grace import MeshGrace
from bmx7_wg.plan.state import Peer

NODE_A = "A" * 56
NODE_B = "B" * 56


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def mesh_peer(node_id: str, ip: str, key: str | None = None) -> Peer:
    return Peer(
        public_key=key or PrivateKey.generate().public_key(),
        allowed_ips=frozenset({ip}),
        source="mesh",
        node_id=node_id,
    )


def inputs(*peers: Peer) -> dict[str, MeshInputs]:
    return {"wg0": MeshInputs(peers=peers, address="fd77::1/128", routes=("fd77::/16",))}


def test_vanished_peer_is_kept_until_the_grace_ends() -> None:
    clock = Clock()
    grace = MeshGrace(10.0, clock)
    a, b = mesh_peer(NODE_A, "fd77::a/128"), mesh_peer(NODE_B, "fd77::b/128")
    assert grace.hold(inputs(a, b))["wg0"].peers == (a, b)
    assert grace.next_deadline() is None

    clock.now += 1  # bmx7 restarted: rcvdSms/ is empty for a moment
    assert grace.hold(inputs(a))["wg0"].peers == (a, b)
    assert grace.next_deadline() == 1011.0

    clock.now += 9.5
    assert grace.hold(inputs(a))["wg0"].peers == (a, b)  # 9.5 s: still held
    clock.now += 0.5
    assert grace.hold(inputs(a))["wg0"].peers == (a,)  # 10 s: gone
    assert grace.next_deadline() is None
    clock.now += 100
    assert grace.hold(inputs(a))["wg0"].peers == (a,)  # and not held anew


def after_b_announced() -> tuple[Clock, MeshGrace, Peer]:
    """Node B's peer was announced a second ago."""
    clock = Clock()
    grace = MeshGrace(10.0, clock)
    b = mesh_peer(NODE_B, "fd77::b/128")
    grace.hold(inputs(b))
    clock.now += 1
    return clock, grace, b


def test_a_node_that_announces_again_is_its_current_peer() -> None:
    clock, grace, _ = after_b_announced()
    grace.hold(inputs())
    new = mesh_peer(NODE_B, "fd77::b/128")  # a new key after the restart
    clock.now += 1
    assert grace.hold(inputs(new))["wg0"].peers == (new,)
    assert grace.next_deadline() is None


def test_refused_node_goes_at_once() -> None:
    _, grace, _ = after_b_announced()
    # Still announcing, but no longer trusted: nothing to wait for.
    assert grace.hold(inputs(), refused=frozenset({NODE_B}))["wg0"].peers == ()


def test_held_peer_gives_way_to_a_current_peer_with_its_key() -> None:
    _, grace, b = after_b_announced()
    same_key = mesh_peer(NODE_A, "fd77::a/128", key=b.public_key)
    assert grace.hold(inputs(same_key))["wg0"].peers == (same_key,)


def test_held_peer_gives_way_to_a_current_peer_with_its_addresses() -> None:
    _, grace, _ = after_b_announced()
    same_ip = mesh_peer(NODE_A, "fd77::b/128")
    assert grace.hold(inputs(same_ip))["wg0"].peers == (same_ip,)


def test_unreadable_bmx7_passes_through_and_keeps_nothing_new() -> None:
    clock = Clock()
    grace = MeshGrace(10.0, clock)
    held = MeshInputs(hold=True)
    assert grace.hold({"wg0": held}) == {"wg0": held}
    assert grace.next_deadline() is None


def test_an_interface_that_leaves_the_mesh_is_forgotten() -> None:
    _, grace, _ = after_b_announced()
    grace.hold(inputs())
    assert grace.next_deadline() is not None
    assert grace.hold({}) == {}
    assert grace.next_deadline() is None
