"""The grace period for vanished mesh peers (mesh/grace.py), on a clock the test moves."""

from __future__ import annotations

from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.grace import MeshGrace, Remembered
from bmx7_wg.plan.desired import MeshInputs
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


# -- trust, hold events and the memory across service restarts

B = "B" * 56
C = "C" * 56


class Clocks:
    """Both clocks: monotonic and wall (the state file's last sightings are wall time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.wall = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def wall_clock(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


def peer(node_id: str, key: str = "k", ip: str | None = None) -> Peer:
    return Peer(
        public_key=f"{key}{node_id[0]}",
        allowed_ips=frozenset({ip or f"fd77::{node_id[0].lower()}/128"}),
        source="mesh",
        node_id=node_id,
    )


def keys(inputs: dict[str, MeshInputs]) -> set[str]:
    return {p.public_key for p in inputs["wm"].peers}


def make(grace: float = 30) -> tuple[MeshGrace, Clocks]:
    clock = Clocks()
    return MeshGrace(grace, clock, clock.wall_clock), clock


def test_a_vanished_peer_is_held_for_the_grace_then_dropped() -> None:
    g, clock = make(30)
    assert keys(g.hold({"wm": MeshInputs(peers=(peer(B), peer(C)))})) == {"kB", "kC"}
    clock.advance(1)
    out = g.hold({"wm": MeshInputs(peers=(peer(B),))})
    assert keys(out) == {"kB", "kC"}
    assert [(e.kind, e.node_id, e.until) for e in g.events] == [("held", C, 1031.0)]
    assert g.next_deadline() == 1031.0
    clock.advance(29.9)
    assert keys(g.hold({"wm": MeshInputs(peers=(peer(B),))})) == {"kB", "kC"}
    assert g.events == []  # logged once, when the hold started
    clock.advance(0.1)
    assert keys(g.hold({"wm": MeshInputs(peers=(peer(B),))})) == {"kB"}
    assert g.next_deadline() is None


def test_a_peer_back_in_time_ends_the_hold() -> None:
    g, clock = make()
    g.hold({"wm": MeshInputs(peers=(peer(B),))})
    g.hold({"wm": MeshInputs()})
    clock.advance(8)  # as a middle node's restart: back after 6-11 s
    assert keys(g.hold({"wm": MeshInputs(peers=(peer(B),))})) == {"kB"}
    assert [e.kind for e in g.events] == ["back"]
    assert g.next_deadline() is None


def test_refused_or_untrusted_nodes_are_never_held() -> None:
    g, _ = make()
    g.hold({"wm": MeshInputs(peers=(peer(B), peer(C)))})
    # B still announces but is refused (no peer); C vanished and lost trust meanwhile.
    out = g.hold({"wm": MeshInputs()}, refused=frozenset({B}), trust=lambda n: "revoked" if n == C else None)
    assert keys(out) == set()
    assert g.next_deadline() is None


def test_a_new_key_replaces_the_held_one_at_once() -> None:
    g, _ = make()
    g.hold({"wm": MeshInputs(peers=(peer(B),))})
    out = g.hold({"wm": MeshInputs(peers=(peer(B, key="new"),))})
    assert keys(out) == {"newB"}


def test_a_held_peer_never_stands_in_the_way() -> None:
    g, _ = make()
    g.hold({"wm": MeshInputs(peers=(peer(B),))})
    # Another node now claims B's allowed IP: the held peer goes.
    out = g.hold({"wm": MeshInputs(peers=(peer(C, ip="fd77::b/128"),))})
    assert keys(out) == {"kC"}


def test_while_bmx7_does_not_answer_no_grace_runs_out() -> None:
    g, clock = make(10)
    g.hold({"wm": MeshInputs(peers=(peer(B),))})
    g.hold({"wm": MeshInputs()})  # B vanished: held until 1010
    held = MeshInputs(hold=True)
    assert g.hold({"wm": held}) == {"wm": held}  # the engine keeps the device's peers
    assert g.next_deadline() is None  # nothing to wake up for meanwhile
    clock.advance(20)
    assert keys(g.hold({"wm": MeshInputs()})) == set()  # back: the grace had ended


def test_zero_grace_holds_nothing() -> None:
    g, _ = make(0)
    g.hold({"wm": MeshInputs(peers=(peer(B),))})
    assert keys(g.hold({"wm": MeshInputs()})) == set()
    assert g.events == []


def test_snapshot_and_restore_carry_the_view_across_a_restart() -> None:
    g, clock = make(30)
    g.hold({"wm": MeshInputs(peers=(peer(B), peer(C)))})
    clock.advance(5)
    g.hold({"wm": MeshInputs(peers=(peer(B),))})  # C held since 1005
    clock.advance(5)
    snap = g.snapshot("wm")
    assert snap[B] == Remembered(peer(B), clock.wall)
    assert snap[C] == Remembered(peer(C), clock.wall - 5)
    # A new service 10 s later: B missing now is held for the 20 s left, C for 15 s.
    again, clock2 = make(30)
    clock2.wall = clock.wall + 10
    again.restore("wm", snap)
    out = again.hold({"wm": MeshInputs()})
    assert keys(out) == {"kB", "kC"}
    assert {e.node_id: round(e.until - clock2.now) for e in again.events} == {B: 20, C: 15}
    # Remembered peers older than the grace are not held.
    late, clock3 = make(30)
    clock3.wall = clock.wall + 40
    late.restore("wm", snap)
    assert keys(late.hold({"wm": MeshInputs()})) == set()


def test_a_restored_peer_keeps_the_time_it_was_remembered_with() -> None:
    # Saved again before any read (bmx7 not answering): its last sighting must not move,
    # or restarts could keep a peer alive for ever.
    g, clock = make(30)
    assert not g.knows("wm")
    g.restore("wm", {B: Remembered(peer(B), clock.wall - 10)})
    assert g.knows("wm")
    clock.advance(5)
    assert g.snapshot("wm")[B].last_seen == clock.wall - 15
    g.hold({"wm": MeshInputs(peers=(peer(B),))})  # read: seen now
    assert g.snapshot("wm")[B].last_seen == clock.wall


def test_update_of_the_changed_nodes_keeps_what_hold_of_them_all_keeps() -> None:
    """`update` (the service's step: only changed nodes) against `hold` (every node), on
    random departures, returns, new keys, keys taken from a held peer and refusals."""
    import copy
    import random

    rng = random.Random(7)
    clock = Clock()
    keys = [PrivateKey.generate().public_key() for _ in range(12)]
    nodes = [f"{i:056X}" for i in range(10)]
    current = {n: mesh_peer(n, f"fd77::{i + 1:x}/128", keys[i]) for i, n in enumerate(nodes[:6])}
    full = MeshGrace(5.0, clock)
    full.hold(inputs(*current.values()))
    step = copy.deepcopy(full, {id(clock): clock})  # one clock for both
    for _ in range(300):
        clock.now += rng.choice((0.0, 0.5, 2.0, 6.0))
        changed: dict[str, Peer | None] = {}
        refused: set[str] = set()
        for n in rng.sample(nodes, rng.randint(1, 3)):
            what = rng.choice(("leave", "announce", "new key", "refused"))
            i = nodes.index(n)
            if what == "leave":
                current.pop(n, None)
                changed[n] = None
            elif what == "refused":
                current.pop(n, None)
                changed[n] = None
                refused.add(n)
            else:
                key = rng.choice(keys) if what == "new key" else keys[i]
                if any(p.public_key == key for m, p in current.items() if m != n):
                    continue  # the mesh's rules refuse a key two nodes claim
                current[n] = mesh_peer(n, f"fd77::{i + 1:x}/128", key)
                changed[n] = current[n]
        want = full.hold(inputs(*current.values()), frozenset(refused))["wg0"].peers
        got = step.update("wg0", changed, frozenset(refused))
        assert got is not None
        assert {p.node_id: p for p in want} == {n: r.peer for n, r in step.snapshot("wg0").items()}
        assert sorted((e.kind, e.node_id) for e in step.events) == sorted(
            (e.kind, e.node_id) for e in full.events
        )
        assert step.next_deadline() == full.next_deadline()
