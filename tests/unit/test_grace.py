"""The grace period for vanished mesh announcements (mesh/grace.py) with the mesh's rules
(mesh/view.py), on clocks the test moves: what is held is the announcement, and it goes
through the same rules as a live one."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from bmx7_wg.base.nodeid import tunnel_host
from bmx7_wg.keys import encode_key
from bmx7_wg.mesh.announce import format_announcement
from bmx7_wg.mesh.grace import HoldEvent, MeshGrace, Remembered
from bmx7_wg.mesh.view import HeldAnnouncement, MeshView, TrustPolicy, mesh_peers

OWN = "0" * 56
B, C, G, H, X = ("B" * 56, "C" * 56, "6" * 56, "7" * 56, "8" * 56)
KEY = {n: encode_key(bytes([i + 1]) * 32) for i, n in enumerate((B, C, G, H, X))}
ALL = TrustPolicy(mode="all")
WM = "wm"


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


def make(grace: float = 30) -> tuple[MeshGrace, Clocks]:
    clock = Clocks()
    return MeshGrace(grace, clock, clock.wall_clock), clock


def ann(node_id: str, *nets: str, key: str | None = None) -> bytes:
    return format_announcement(key or KEY[node_id], 40456, nets)


def read(
    g: MeshGrace,
    files: Mapping[str, bytes],
    accept: tuple[str, ...] = ("10.0.0.0/8",),
    policy: TrustPolicy = ALL,
) -> MeshView:
    """One full read, as mesh/session.py does it: the holds, the rules, what they decided."""
    return read_held(g, files, accept, policy)[0]


def read_held(
    g: MeshGrace,
    files: Mapping[str, bytes],
    accept: tuple[str, ...] = ("10.0.0.0/8",),
    policy: TrustPolicy = ALL,
) -> tuple[MeshView, dict[str, HeldAnnouncement]]:
    """`read`, and the announcements held in it (weighed by the rules, peer or not)."""
    held = g.begin(WM, set(files))
    view = mesh_peers(OWN, list(files.items()), policy, accept, held=held)
    g.settle(WM, view, policy.refusal)
    return view, {n: a for n, a in held.items() if policy.refusal(n) is None}


def nets(view: MeshView) -> dict[str, set[str]]:
    """Node id -> its peer's networks beside its tunnel address."""
    return {p.node_id or "": set(p.allowed_ips) - {tunnel_host(p.node_id or "")} for p in view.peers}


def said(g: MeshGrace) -> list[tuple[str, str]]:
    return [(e.kind, e.node_id) for e in g.events]


def test_a_vanished_announcement_is_held_for_the_grace_then_let_go() -> None:
    g, clock = make(30)
    read(g, {B: ann(B), C: ann(C)})
    clock.advance(1)
    view = read(g, {B: ann(B)})
    assert set(nets(view)) == {B, C} and view.held == {C}
    assert [(e.kind, e.node_id, e.until) for e in g.events] == [("held", C, 1031.0)]
    assert g.next_deadline() == 1031.0
    clock.advance(29.9)
    assert set(nets(read(g, {B: ann(B)}))) == {B, C}
    assert g.events == []  # said once, when the hold started
    clock.advance(0.1)
    assert set(nets(read(g, {B: ann(B)}))) == {B}
    assert g.next_deadline() is None
    clock.advance(100)
    assert set(nets(read(g, {B: ann(B)}))) == {B}  # and not held anew


def test_an_announcement_back_in_time_ends_the_hold() -> None:
    g, clock = make()
    read(g, {B: ann(B)})
    read(g, {})
    clock.advance(8)  # as a middle node's restart: back after 6-11 s
    view = read(g, {B: ann(B)})
    assert view.held == frozenset() and set(nets(view)) == {B}
    assert said(g) == [("back", B)]
    assert g.next_deadline() is None


def test_a_new_key_after_the_restart_is_the_peer_at_once() -> None:
    g, _ = make()
    read(g, {B: ann(B)})
    read(g, {})
    view = read(g, {B: ann(B, key=KEY[X])})
    assert [p.public_key for p in view.peers] == [KEY[X]]
    assert g.events == []  # not "back": the peer changed


# -- the capture case of issue 25: a held claim still counts


def test_a_held_claim_keeps_refusing_a_covering_network() -> None:
    """G announces 10.1.0.0/16, H 10.0.0.0/8: both refused. bmx7 restarts and H's file
    comes back first: H must still be refused while G's announcement is held."""
    g, clock = make(30)
    view = read(g, {G: ann(G, "10.1.0.0/16"), H: ann(H, "10.0.0.0/8")})
    assert nets(view) == {G: set(), H: set()}
    read(g, {})  # bmx7 wiped rcvdSms/
    clock.advance(6)
    view = read(g, {H: ann(H, "10.0.0.0/8")})
    assert nets(view) == {G: set(), H: set()}  # G held with only what it had
    assert view.held == {G}
    assert any(r.node_id == H and r.network == "10.0.0.0/8" and G[:8] in r.reason for r in view.refusals)
    clock.advance(24)  # G's grace is over: it was a departure, H's claim stands alone
    assert nets(read(g, {H: ann(H, "10.0.0.0/8")})) == {H: {"10.0.0.0/8"}}


def test_a_held_claim_keeps_refusing_an_equal_claim() -> None:
    g, clock = make(30)
    read(g, {G: ann(G, "10.1.0.0/16"), H: ann(H, "10.1.0.0/16")})
    clock.advance(1)
    view = read(g, {H: ann(H, "10.1.0.0/16")})
    assert nets(view) == {G: set(), H: set()}


def test_a_held_network_is_not_taken_by_a_more_specific_one() -> None:
    g, clock = make(30)
    assert nets(read(g, {G: ann(G, "10.1.0.0/16")})) == {G: {"10.1.0.0/16"}}
    clock.advance(1)
    # While G is held, X announces a network inside G's: neither gets it (the claims rule).
    view = read(g, {X: ann(X, "10.1.2.0/24")})
    assert nets(view) == {G: set(), X: set()}
    assert view.held == {G}


def test_a_held_node_never_gets_more_than_it_had() -> None:
    g, clock = make(30)
    read(g, {G: ann(G, "10.1.0.0/16"), H: ann(H, "10.1.0.0/16")})  # both refused
    clock.advance(1)
    view = read(g, {})  # both held: nothing contests G's claim but H's held one
    assert nets(view) == {G: set(), H: set()}
    assert view.held == {G, H}


def test_held_claims_are_compared_as_prefixes_not_strings() -> None:
    g, clock = make(30)
    read(g, {G: ann(G, "10.1.0.0/16")})
    clock.advance(1)
    # The same network written another way is canonical once parsed: still the same claim.
    view = read(g, {X: ann(X, "10.1.0.0/16"), B: ann(B, "10.0.0.0/9")})
    assert nets(view) == {G: set(), X: set(), B: set()}


# -- today's rules for a held announcement


def test_a_held_network_outside_todays_accept_networks_goes() -> None:
    g, clock = make(30)
    read(g, {G: ann(G, "10.1.0.0/16", "10.2.0.0/16")})
    clock.advance(1)
    view = read(g, {}, accept=("10.2.0.0/16",))
    assert nets(view) == {G: {"10.2.0.0/16"}}
    assert [(r.network, r.reason) for r in view.refusals] == [
        ("10.1.0.0/16", "outside accept_networks; network ignored")
    ]


def test_a_narrowed_accept_networks_applies_to_a_restored_peer() -> None:
    """A held entry reloaded from the state file passes today's rules (service restart)."""
    g, clock = make(30)
    read(g, {G: ann(G, "10.1.0.0/16")})
    snap = g.snapshot(WM)
    again, clock2 = make(30)
    clock2.wall = clock.wall + 5
    again.restore(WM, snap)
    view = read(again, {}, accept=("192.168.0.0/16",))
    assert nets(view) == {G: set()} and view.held == {G}


def test_a_held_node_refused_for_trust_goes_and_is_not_said_to_stay() -> None:
    g, clock = make(30)
    read(g, {B: ann(B), C: ann(C)})
    clock.advance(1)
    revoked = TrustPolicy(mode="all", denied=frozenset({C}))
    view = read(g, {B: ann(B)}, policy=revoked)
    assert set(nets(view)) == {B}
    assert g.events == []  # no "stays 30 s more": its peer goes
    assert [(r.node_id, r.reason) for r in view.refusals] == [
        (C, "denied by configuration; its held peer goes")
    ]
    assert g.next_deadline() is None
    assert set(nets(read(g, {B: ann(B)}))) == {B}  # not held again once trusted again


def test_a_key_claimed_beside_a_held_node_refuses_both() -> None:
    g, clock = make(30)
    read(g, {B: ann(B)})
    clock.advance(1)
    view = read(g, {X: ann(X, key=KEY[B])})
    assert nets(view) == {}
    assert {r.node_id for r in view.refusals} == {B, X}
    clock.advance(30)
    assert set(nets(read(g, {X: ann(X, key=KEY[B])}))) == {X}


def test_a_refused_node_is_not_held() -> None:
    g, _ = make()
    read(g, {B: ann(B)})
    view = read(g, {B: b"garbage"})  # still announces, but its complete content is bad
    assert nets(view) == {} and g.next_deadline() is None
    assert set(nets(read(g, {}))) == set()


# -- time: only while bmx7 answers


def test_while_bmx7_does_not_answer_no_grace_runs_out() -> None:
    g, clock = make(10)
    read(g, {B: ann(B)})
    clock.advance(1)
    read(g, {})  # B held until 1011
    clock.advance(4)
    g.pause(WM)
    assert g.next_deadline() is None  # nothing to wake up for meanwhile
    clock.advance(300)  # bmx7 away far longer than the grace
    view = read(g, {})
    assert set(nets(view)) == {B}  # back: the 6 s left are still left
    assert g.next_deadline() == clock.now + 6
    clock.advance(6)
    assert set(nets(read(g, {}))) == set()


def test_zero_grace_holds_nothing() -> None:
    g, _ = make(0)
    read(g, {B: ann(B)})
    assert set(nets(read(g, {}))) == set()
    assert g.events == []


def test_an_interface_that_leaves_the_mesh_is_forgotten() -> None:
    g, _ = make()
    read(g, {B: ann(B)})
    read(g, {})
    assert g.next_deadline() is not None
    g.keep_only(None)
    assert g.next_deadline() is None and not g.knows(WM)


# -- across service restarts


def test_snapshot_and_restore_carry_the_view_across_a_restart() -> None:
    g, clock = make(30)
    read(g, {B: ann(B), C: ann(C)})
    clock.advance(5)
    read(g, {B: ann(B)})  # C held since 1005
    clock.advance(5)
    snap = g.snapshot(WM)
    assert snap[B].last_seen == clock.wall and snap[C].last_seen == clock.wall - 5
    # A new service 10 s later: B missing now is held for the 20 s left, C for 15 s.
    again, clock2 = make(30)
    clock2.wall = clock.wall + 10
    again.restore(WM, snap)
    assert set(nets(read(again, {}))) == {B, C}
    assert {e.node_id: round(e.until - clock2.now) for e in again.events} == {B: 20, C: 15}
    # Remembered peers older than the grace are not held.
    late, clock3 = make(30)
    clock3.wall = clock.wall + 40
    late.restore(WM, snap)
    assert set(nets(read(late, {}))) == set()


def test_a_restored_peer_keeps_the_time_it_was_remembered_with() -> None:
    # Saved again before any read (bmx7 not answering): its last sighting must not move,
    # or restarts could keep a peer alive for ever.
    g, clock = make(30)
    first, _ = make(30)
    read(first, {B: ann(B)})
    assert not g.knows(WM)
    g.restore(WM, {B: Remembered(first.snapshot(WM)[B].peer, clock.wall - 10)})
    assert g.knows(WM)
    clock.advance(5)
    assert g.snapshot(WM)[B].last_seen == clock.wall - 15
    read(g, {B: ann(B)})  # read: seen now
    assert g.snapshot(WM)[B].last_seen == clock.wall


# -- random live/held/claim mixes

POOL = ("10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24", "10.2.0.0/16", "10.1.0.0/16", "192.168.0.0/16")
NODES = (B, C, G, H, X)
node_announcement = st.tuples(
    st.sampled_from(NODES), st.lists(st.sampled_from(POOL), max_size=2), st.sampled_from(NODES)
)
rounds = st.lists(
    st.tuples(st.lists(node_announcement, max_size=5), st.sampled_from((0.0, 1.0, 5.0, 40.0))),
    min_size=1,
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(rounds)
def test_no_node_gets_a_network_another_live_or_held_claim_overlaps(
    plan: list[tuple[list[tuple[str, list[str], str]], float]],
) -> None:
    g, clock = make(30)
    live: dict[str, frozenset[str]] = {}  # node id -> what its live announcement got last
    had: dict[str, frozenset[str]] = {}  # held node id -> what it had when it vanished
    for files_now, wait in plan:
        clock.advance(wait)
        files = {n: ann(n, *networks, key=KEY[k]) for n, networks, k in files_now}
        view, held = read_held(g, files)
        had = {n: had.get(n, live.get(n, frozenset())) for n in held}
        assert set(held) >= set(view.held)
        claims: list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = []
        for node_id in files:
            claims += [(node_id, ipaddress.ip_network(t)) for t in view.announcements[node_id].networks]
        for node_id, a in held.items():
            claims += [(node_id, ipaddress.ip_network(t)) for t in a.claims]
        for node_id, granted in nets(view).items():
            for text in granted:
                net = ipaddress.ip_network(text)
                assert not any(o != node_id and net.overlaps(c) for o, c in claims), (node_id, text, claims)
            if node_id in view.held:
                assert granted <= had[node_id]  # never more than it had
        keys = [p.public_key for p in view.peers]
        assert len(keys) == len(set(keys))
        live = {n: frozenset(s) for n, s in nets(view).items() if n not in view.held}


def test_hold_events_say_what_happens_to_the_peer() -> None:
    g, clock = make(30)
    read(g, {B: ann(B), C: ann(C)})
    clock.advance(1)
    view = read(g, {X: ann(X, key=KEY[C])})  # C held, but X takes its key: no peer for C
    peers = {p.node_id for p in view.peers}
    for e in g.events:
        assert isinstance(e, HoldEvent)
        assert e.kind != "held" or e.node_id in peers
    assert said(g) == [("held", B)]
