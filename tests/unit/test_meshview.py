from __future__ import annotations

import ipaddress
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bmx7_wg.config.model import InterfaceConfig, PeerConfig
from bmx7_wg.keys import encode_key
from bmx7_wg.mesh.announce import format_announcement
from bmx7_wg.mesh.view import Clearance, MeshView, Reservation, TrustPolicy, mesh_peers, reservations
from bmx7_wg.plan.state import Peer

# Real node ids (bmx7 fixtures, run 1).
N1 = "CAD0870E071C0642EBCA29759284D05B7B17A9887A8F6B2BC2D42CA5"
N2 = "89888EDF9B64A255C3AB1CD3CA9AA706C83DFBF9BDD04CCC70914889"
N3 = "9EA1BD0794DB44DB11449C815615C03A41867D375BB64403EE130ADF"
K1, K2, K3, K9 = (encode_key(bytes([i]) * 32) for i in (1, 2, 3, 9))
ALL = TrustPolicy(mode="all")


def ann(key: str, port: int = 40456, nets: tuple[str, ...] = ()) -> bytes:
    return format_announcement(key, port, nets)


def reasons(view: MeshView) -> list[tuple[str, str | None, str]]:
    return [(r.node_id, r.network, r.reason) for r in view.refusals]


def test_peer_address_and_endpoint_come_from_the_node_id() -> None:
    view = mesh_peers(N1, [(N2, ann(K2, 40999))], ALL, (), {N2: "node2"})
    (peer,) = view.peers
    assert peer.public_key == K2
    assert peer.allowed_ips == frozenset({"fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a/128"})
    assert peer.endpoint == "[fd70:8988:8edf:9b64:a255:c3ab:1cd3:ca9a]:40999"
    assert (peer.source, peer.node_id, peer.name) == ("mesh", N2, "node2")
    assert view.refusals == ()


def test_own_announcement_is_skipped_silently() -> None:
    view = mesh_peers(N1, [(N1, ann(K1)), (N2, ann(K2))], ALL)
    assert [p.node_id for p in view.peers] == [N2]
    assert view.refusals == ()


def test_lower_case_ids_are_normalized() -> None:
    view = mesh_peers(N1.lower(), [(N2.lower(), ann(K2))], ALL)
    assert view.peers[0].node_id == N2


def test_networks_inside_accept_networks_are_added() -> None:
    view = mesh_peers(N1, [(N2, ann(K2, nets=("10.9.2.0/24", "192.168.0.0/24")))],
                      ALL, ["10.0.0.0/8"])
    (peer,) = view.peers
    assert "10.9.2.0/24" in peer.allowed_ips
    assert "192.168.0.0/24" not in peer.allowed_ips
    assert reasons(view) == [(N2, "192.168.0.0/24", "outside accept_networks; network ignored")]


def test_no_accept_networks_means_only_the_128() -> None:
    view = mesh_peers(N1, [(N2, ann(K2, nets=("10.9.2.0/24",)))], ALL)
    assert len(view.peers[0].allowed_ips) == 1
    assert view.refusals[0].network == "10.9.2.0/24"


def test_network_in_mesh_prefix_is_refused_even_if_accepted() -> None:
    # A node must not claim another node's tunnel address.
    victim = "fd77:cad0:870e:71c:642:ebca:2975:9284/128"
    underlay = "fd70:cad0:870e:71c:642:ebca:2975:9284/128"
    nets = (victim, "fd77::/16", underlay, "fd00::/8", "::/0", "2001:db8::/32")
    view = mesh_peers(N1, [(N2, ann(K2, nets=nets))], ALL, ["::/0"])
    own = "fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a/128"
    assert view.peers[0].allowed_ips == frozenset({own, "2001:db8::/32"})
    assert reasons(view) == [
        (N2, "::/0", "overlaps the mesh prefixes fd70::/16 and fd77::/16; network ignored"),
        (N2, "fd00::/8", "overlaps the mesh prefixes fd70::/16 and fd77::/16; network ignored"),
        (N2, underlay, "overlaps the mesh prefix fd70::/16; network ignored"),
        (N2, "fd77::/16", "overlaps the mesh prefix fd77::/16; network ignored"),
        (N2, victim, "overlaps the mesh prefix fd77::/16; network ignored"),
    ]


def test_network_claimed_twice_goes_to_nobody() -> None:
    view = mesh_peers(N1, [(N2, ann(K2, nets=("10.5.0.0/16",))),
                           (N3, ann(K3, nets=("10.5.0.0/16", "10.6.0.0/16")))],
                      ALL, ["10.0.0.0/8"])
    by_id = {p.node_id: p for p in view.peers}
    assert "10.5.0.0/16" not in by_id[N2].allowed_ips
    assert "10.5.0.0/16" not in by_id[N3].allowed_ips
    assert "10.6.0.0/16" in by_id[N3].allowed_ips
    assert {r.node_id for r in view.refusals} == {N2, N3}


def test_shared_key_refuses_every_claimant() -> None:
    view = mesh_peers(N1, [(N2, ann(K9)), (N3, ann(K9))], ALL)
    assert view.peers == ()
    assert reasons(view) == [
        (N2, None, f"public key also claimed by {N3[:8]}"),
        (N3, None, f"public key also claimed by {N2[:8]}"),
    ]


def test_own_public_key_is_refused() -> None:
    view = Clearance((), own_public_key=K1)(mesh_peers(N1, [(N2, ann(K1)), (N3, ann(K3))], ALL).peers)
    assert [p.node_id for p in view.peers] == [N3]
    assert reasons(view) == [(N2, None, "announces this node's own public key")]


def test_bad_payload_is_refused_not_raised() -> None:
    view = mesh_peers(N1, [(N2, b"\xff" * 2000), (N3, b"bmx7-wg 9\n")], ALL)
    assert view.peers == ()
    assert [r.reason.split(":")[0] for r in view.refusals] == ["bad announcement"] * 2


def test_bad_node_id_is_refused() -> None:
    view = mesh_peers(N1, [("xyz", ann(K2))], ALL)
    assert view.peers == () and view.refusals[0].reason == "not a node id"


def test_trust_modes() -> None:
    received = [(N2, ann(K2)), (N3, ann(K3))]

    def ids(policy: TrustPolicy) -> list[str]:
        return [p.node_id or "" for p in mesh_peers(N1, received, policy).peers]

    assert ids(TrustPolicy("all")) == [N2, N3]
    assert ids(TrustPolicy("all", denied=frozenset({N3}))) == [N2]
    assert ids(TrustPolicy("listed")) == []
    assert ids(TrustPolicy("listed", trusted=frozenset({N3}))) == [N3]
    assert ids(TrustPolicy("listed", trusted=frozenset({N3}), denied=frozenset({N3}))) == []
    # bmx7 without trustedNodesDir trusts everybody.
    assert ids(TrustPolicy("bmx7", bmx7_levels=None)) == [N2, N3]
    assert ids(TrustPolicy("bmx7", bmx7_levels={})) == []
    assert ids(TrustPolicy("bmx7", bmx7_levels={N2: 2, N3: 3})) == [N2, N3]
    assert ids(TrustPolicy("bmx7", bmx7_levels={N2: 0, N3: 2})) == [N3]
    assert ids(TrustPolicy("bmx7", bmx7_levels={N2: 0}, trusted=frozenset({N2}))) == [N2]
    assert ids(TrustPolicy("bmx7", bmx7_levels={N2: 3}, denied=frozenset({N2}))) == []


def test_untrusted_reason_is_clear() -> None:
    view = mesh_peers(N1, [(N2, ann(K2))], TrustPolicy("bmx7", bmx7_levels={N2: 0}))
    assert view.refusals[0].reason == "not trusted by bmx7 (trust level 0)"
    assert "node 89888EDF" in view.refusals[0].describe()


@settings(deadline=None)  # a loaded machine must not fail it on hypothesis's 200 ms per example
@given(st.permutations([(N2, ann(K2)), (N3, ann(K9)), (N1, ann(K1)),
                        ("89888EDF" + "0" * 48, ann(K9)), ("A" * 56, b"junk")]))
def test_order_of_input_does_not_matter(received: list[tuple[str, bytes]]) -> None:
    reference = mesh_peers(N1, sorted(received), ALL, ["10.0.0.0/8"])
    assert mesh_peers(N1, received, ALL, ["10.0.0.0/8"]) == reference


def test_many_nodes_are_deterministic() -> None:
    rng = random.Random(7)
    ids = sorted({f"{rng.getrandbits(224):056X}" for _ in range(200)})
    received = [(i, ann(encode_key(rng.randbytes(32)))) for i in ids]
    view = mesh_peers(ids[0], received, ALL)
    assert [p.node_id for p in view.peers] == ids[1:]


# --- overlapping claims: no node takes traffic for a network another node announces ------

G, H = N2, N3
GW = "10.0.0.0/8"
SITE = "10.1.0.0/16"


def networks_of(view: MeshView) -> dict[str, set[str]]:
    """Each peer's networks besides its own tunnel address."""
    return {p.node_id or "": {n for n in p.allowed_ips if not n.startswith("fd77:")} for p in view.peers}


def test_a_covering_and_an_equal_claim_capture_nothing() -> None:
    # The case of issue 16: H repeats G's network and adds one covering it. Before, the
    # repeated one went to nobody and H kept 10.0.0.0/8, so G's traffic went to H.
    view = mesh_peers(N1, [(G, ann(K2, nets=(SITE,))), (H, ann(K3, nets=(GW, SITE)))], ALL, [GW])
    assert networks_of(view) == {G: set(), H: set()}
    assert reasons(view) == [
        (G, SITE, f"also announced by {H[:8]}; network ignored"),
        (H, GW, f"covers {SITE}, announced by {G[:8]}; network ignored"),
        (H, SITE, f"also announced by {G[:8]}; network ignored"),
    ]


def test_a_more_specific_claim_captures_nothing() -> None:
    view = mesh_peers(N1, [(G, ann(K2, nets=(SITE,))), (H, ann(K3, nets=("10.1.128.0/17",)))], ALL, [GW])
    assert networks_of(view) == {G: set(), H: set()}
    assert reasons(view)[1] == (H, "10.1.128.0/17", f"inside {SITE}, announced by {G[:8]}; network ignored")


def test_the_price_a_hierarchy_pays_and_the_way_around_it() -> None:
    # A gateway's 10.0.0.0/8 beside a site's 10.1.0.0/16 is indistinguishable from a
    # capture: both go. The gateway announcing the rest of 10/8 instead keeps working.
    view = mesh_peers(N1, [(G, ann(K2, nets=(GW,))), (H, ann(K3, nets=(SITE,)))], ALL, [GW])
    assert networks_of(view) == {G: set(), H: set()}
    rest = ("10.0.0.0/16", "10.2.0.0/15", "10.4.0.0/14", "10.8.0.0/13", "10.16.0.0/12",
            "10.32.0.0/11", "10.64.0.0/10", "10.128.0.0/9")
    view = mesh_peers(N1, [(G, ann(K2, nets=rest)), (H, ann(K3, nets=(SITE,)))], ALL, [GW])
    assert networks_of(view) == {G: set(rest), H: {SITE}}
    assert view.refusals == ()


def test_only_claims_this_node_could_route_are_weighed() -> None:
    # A mesh gateway's default route outside accept_networks is routed to nobody, so it
    # takes nothing from anybody: every other node keeps its networks.
    view = mesh_peers(N1, [(G, ann(K2, nets=(SITE,))), (H, ann(K3, nets=("0.0.0.0/0", "::/0")))], ALL, [GW])
    assert networks_of(view) == {G: {SITE}, H: set()}
    # Accepted, it overlaps every other IPv4 claim, and all of them go.
    view = mesh_peers(N1, [(G, ann(K2, nets=(SITE,))), (H, ann(K3, nets=("0.0.0.0/0",)))], ALL, ["0.0.0.0/0"])
    assert networks_of(view) == {G: set(), H: set()}


def test_a_node_refused_for_its_key_still_weighs_its_claims() -> None:
    view = mesh_peers(N1, [(G, ann(K2, nets=(SITE,))), (H, ann(K9, nets=(GW,))), (N1[:-1] + "1", ann(K9))],
                      ALL, [GW])
    assert networks_of(view) == {G: set()}
    assert [r.reason for r in view.refusals if r.node_id == H] == [f"public key also claimed by {N1[:8]}"]


def test_untrusted_or_unparsable_nodes_claim_nothing() -> None:
    junk = (N1[:-1] + "0", b"bmx7-wg 1\nnet 10.0.0.0/8\n")
    received = [(G, ann(K2, nets=(SITE,))), (H, ann(K3, nets=(GW,))), junk]
    view = mesh_peers(N1, received, TrustPolicy("all", denied=frozenset({H})), [GW])
    assert networks_of(view) == {G: {SITE}}


def test_one_nodes_own_overlapping_networks_stay() -> None:
    # Overlaps within one node's announcement hand nothing to anybody else.
    view = mesh_peers(N1, [(G, ann(K2, nets=(GW, SITE)))], ALL, [GW])
    assert networks_of(view) == {G: {GW, SITE}}


# --- this node's own networks -------------------------------------------------------------

def iface(name: str = "wgmesh", **kw: object) -> InterfaceConfig:
    return InterfaceConfig(name=name, private_key_file=f"/k/{name}", **kw)  # type: ignore[arg-type]


def clear(nets: tuple[str, ...], reserved: tuple[Reservation, ...], accept: str = "0.0.0.0/0") -> MeshView:
    view = mesh_peers(N1, [(G, ann(K2, nets=nets))], ALL, [accept, "2000::/3"])
    return Clearance(reserved, own_public_key=K1)(view.peers)


def test_networks_of_this_node_are_kept_clear() -> None:
    config = [
        iface(addresses=("10.9.0.1/24",), announce_networks=("192.168.7.0/24",),
              peers=(PeerConfig(public_key=K9, allowed_ips=("10.50.0.0/16",), name="vpn"),
                     PeerConfig(public_key=K3, allowed_ips=("0.0.0.0/0",)))),
        iface("wgstatic", peers=(PeerConfig(public_key=K3, allowed_ips=("172.16.0.0/12",)),)),
    ]
    host_addresses = {"eth0": ["192.168.1.5/24", "2001:db8:1::5/64"], "wgmesh": ["10.9.0.1/24"]}
    host_routes = {
        "eth0": ["192.168.1.0/24", "2001:db8:1::/64", "10.200.0.0/16"],  # connected, and via a router
        "bmx7tun": ["10.77.0.0/16"],  # bmx7's own tunnels (another table)
        "wgmesh": ["10.60.0.0/16"],  # the mesh interface's own routes decide nothing
    }
    reserved = reservations(config, host_addresses, host_routes, "wgmesh")
    asked = (
        "10.9.0.1/32",  # our own address
        "10.9.0.0/24",  # a network holding it
        "192.168.7.0/25",  # inside a network we announce
        "10.50.0.0/17",  # inside the static peer vpn's
        "10.48.0.0/12",  # covering it
        "172.16.5.0/24",  # inside another interface's static peer
        "192.168.1.128/25",  # a more specific part of the LAN
        "192.168.0.0/16",  # covering the LAN
        "10.200.0.0/16",  # a route of eth0
        "10.77.1.0/24",  # inside bmx7's routes
        "2001:db8:1::5/128",  # an address of eth0
        "10.60.0.0/16",  # routed into the mesh interface: fine
        "10.70.0.0/16",  # under the static default route only: fine
    )
    view = clear(asked, reserved)
    assert networks_of(view) == {G: {"10.60.0.0/16", "10.70.0.0/16"}}
    why = {r.network: r.reason for r in view.refusals}
    assert set(why) == set(asked) - {"10.60.0.0/16", "10.70.0.0/16"}
    assert why["10.9.0.1/32"] == "is 10.9.0.1/32, an address of wgmesh on this node; network ignored"
    assert why["10.50.0.0/17"] == "overlaps 10.50.0.0/16, the static peer vpn on this node; network ignored"
    assert why["172.16.5.0/24"] == (
        "overlaps 172.16.0.0/12, a static peer of wgstatic on this node; network ignored"
    )
    assert why["192.168.0.0/16"].startswith("overlaps 192.168.1.0/24, a route of eth0")
    assert "a network this node announces on wgmesh" in why["192.168.7.0/25"]
    assert all(r.node_id == G for r in view.refusals)


def test_default_routes_reserve_nothing_but_cover_everything() -> None:
    reserved = reservations([], {}, {"eth0": ["0.0.0.0/0", "192.168.1.0/24"]}, "wgmesh")
    assert [r.network for r in reserved] == ["192.168.1.0/24"]
    view = clear(("0.0.0.0/0", "10.1.0.0/16"), reserved)
    assert networks_of(view) == {G: {"10.1.0.0/16"}}
    assert [r.network for r in view.refusals] == ["0.0.0.0/0"]


def test_held_peers_without_node_ids_are_checked_too() -> None:
    # Peers kept from the device while bmx7 is unreachable carry no node id.
    held = Peer(public_key=K2, allowed_ips=frozenset({"fd77::2/128", "192.168.1.0/25"}), source="mesh")
    view = Clearance(reservations([], {}, {"eth0": ["192.168.1.0/24"]}, "wgmesh"), K1)([held])
    assert view.peers[0].allowed_ips == frozenset({"fd77::2/128"})
    assert view.refusals[0].node_id == f"key {K2[:8]}"


# --- properties: for any set of announcements ---------------------------------------------

V4_POOL = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.0.0/17", "10.1.128.0/17", "10.1.2.0/24",
           "10.2.0.0/16", "10.1.2.3/32", "192.168.0.0/16", "192.168.1.0/24", "169.254.1.0/24"]
V6_POOL = ["::/0", "2001:db8::/32", "2001:db8:1::/48", "2001:db8:1:2::/64", "fd00::/8", "fd70::/16",
           "fd77::/16", "2001:db8:1:2::5/128", "fe80::/64"]
IDS = [N1, N2, N3, "A" * 56, "B" * 56, "C" * 56]
KEYS = [encode_key(bytes([i]) * 32) for i in range(1, 8)]
announcements = st.lists(
    st.tuples(st.sampled_from(IDS[1:]), st.sampled_from(KEYS),
              st.lists(st.sampled_from(V4_POOL + V6_POOL), max_size=6, unique=True)),
    max_size=6, unique_by=lambda a: a[0],
)


def _inside(a: str, b: str) -> bool:
    x, y = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return x.version == y.version and x.subnet_of(y)  # type: ignore[arg-type]


def _overlap(a: str, b: str) -> bool:
    x, y = ipaddress.ip_network(a), ipaddress.ip_network(b)
    return x.version == y.version and x.overlaps(y)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(announcements, st.lists(st.sampled_from(V4_POOL + V6_POOL), max_size=3, unique=True),
       st.sets(st.sampled_from(IDS[1:]), max_size=2))
def test_no_accepted_network_overlaps_another_nodes_claim(
    anns: list[tuple[str, str, list[str]]], accept: list[str], denied: set[str]
) -> None:
    received = [(node, ann(key, nets=tuple(nets))) for node, key, nets in anns]
    policy = TrustPolicy("all", denied=frozenset(denied))
    view = mesh_peers(N1, received, policy, accept)
    # Claims: what a trusted node announces that this node would route to it were it alone.
    claims = [(node, n) for node, _, nets in anns if node not in denied for n in nets
              if not _overlap(n, "fd70::/16") and not _overlap(n, "fd77::/16")
              and not _inside(n, "fe80::/10") and not _inside(n, "169.254.0.0/16")
              and any(_inside(n, a) for a in accept)]
    for peer in view.peers:
        assert peer.node_id is not None
        for mine in networks_of(view)[peer.node_id]:
            assert not any(node != peer.node_id and _overlap(mine, n) for node, n in claims), (mine, claims)
            assert not _overlap(mine, "fd70::/16") and not _overlap(mine, "fd77::/16")
            assert not _inside(mine, "fe80::/10") and not _inside(mine, "169.254.0.0/16")
            assert any(_inside(mine, a) for a in accept)
    # Every network announced by a peer is either given to it or listed as refused.
    given_or_refused = {(r.node_id, r.network) for r in view.refusals}
    for peer in view.peers:
        assert peer.node_id is not None
        nets = next(nets for node, _, nets in anns if node == peer.node_id)
        for n in nets:
            assert (n in peer.allowed_ips) != ((peer.node_id, n) in given_or_refused)


@settings(max_examples=200, deadline=None)
@given(announcements, st.lists(st.sampled_from(V4_POOL + V6_POOL), max_size=4),
       st.lists(st.sampled_from(V4_POOL + V6_POOL), max_size=3))
def test_no_kept_network_overlaps_what_this_node_holds(
    anns: list[tuple[str, str, list[str]]], routes: list[str], static: list[str]
) -> None:
    received = [(node, ann(key, nets=tuple(nets))) for node, key, nets in anns]
    view = mesh_peers(N1, received, ALL, ["0.0.0.0/0", "::/0"])
    config = [iface(peers=(PeerConfig(public_key=K9, allowed_ips=tuple(sorted(set(static)))),))]
    reserved = reservations(config, {}, {"eth0": routes}, "wgmesh")
    held = [n for n in routes + static if ipaddress.ip_network(n).prefixlen > 0]
    kept = Clearance(reserved, own_public_key=KEYS[0])(view.peers)
    assert all(p.public_key != KEYS[0] for p in kept.peers)
    for nets in networks_of(kept).values():
        for mine in nets:
            assert not any(_overlap(mine, h) for h in held), (mine, held)


def test_networks_no_tunnel_can_carry_are_refused() -> None:
    nets = ("fe80::/64", "169.254.0.0/16", "127.0.0.1/32", "224.0.0.0/4", "ff02::/16",
            "0.0.0.0/8", "10.1.0.0/16", "2001:db8::/32")
    view = mesh_peers(N1, [(G, ann(K2, nets=nets))], ALL, ["0.0.0.0/0", "fe80::/10", "ff00::/8", "2000::/3"])
    assert networks_of(view) == {G: {"10.1.0.0/16", "2001:db8::/32"}}
    why = {r.network: r.reason for r in view.refusals}
    assert why["fe80::/64"] == "a link-local network has no meaning in a tunnel; network ignored"
    assert why["127.0.0.1/32"].startswith("loopback")
    assert set(why) == set(nets) - {"10.1.0.0/16", "2001:db8::/32"}
    # A default route covers them, and is no more refused for it.
    view = mesh_peers(N1, [(G, ann(K2, nets=("0.0.0.0/0",)))], ALL, ["0.0.0.0/0"])
    assert networks_of(view) == {G: {"0.0.0.0/0"}}
