from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from bmx7_wg.keys import encode_key
from bmx7_wg.mesh.announce import format_announcement
from bmx7_wg.mesh.view import MeshView, TrustPolicy, mesh_peers

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
    view = mesh_peers(N1, [(N2, ann(K2, nets=(victim, "fd77::/16")))], ALL, ["::/0"])
    assert view.peers[0].allowed_ips == frozenset({"fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a/128"})
    assert [r.network for r in view.refusals] == ["fd77::/16", victim]


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
    view = mesh_peers(N1, [(N2, ann(K1))], ALL, own_public_key=K1)
    assert view.peers == ()
    assert "own public key" in view.refusals[0].reason


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
