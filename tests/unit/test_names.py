"""The naming rules (mesh/names.py): which NAME.DOMAIN and SHORTID.DOMAIN a hosts file gets."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from bmx7_wg.base.dnsname import dns_label, domain_problem
from bmx7_wg.base.nodeid import short_id
from bmx7_wg.mesh.names import HostNames, host_names

NODE_A = "89888EDF9B64A255C3AB1CD3CA9AA706C83DFBF9BDD04CCC70914889"
NODE_B = "1B2C3D4E" + "0" * 48
NODE_C = "CAFEBABE" + "1" * 48
def of(names: HostNames, node_id: str) -> tuple[str, ...]:
    return next((e.names for e in names.entries if e.node_id == node_id), ())


SAFE = re.compile(r"\A[0-9a-f:]+\t[a-z0-9.-]+( [a-z0-9.-]+)*\Z")


def test_a_peer_gets_its_name_and_its_short_id() -> None:
    names = host_names({NODE_A: "Node3", NODE_B: ""}, "mesh")
    assert names.lines() == (
        "fd77:1b2c:3d4e::\t1b2c3d4e.mesh",
        "fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a\tnode3.mesh 89888edf.mesh",
    )
    assert names.refusals == ()


def test_a_name_two_nodes_claim_resolves_to_neither() -> None:
    names = host_names({NODE_A: "gateway", NODE_B: "GATEWAY", NODE_C: "node3"}, "mesh")
    assert of(names, NODE_A) == ("89888edf.mesh",)
    assert of(names, NODE_B) == ("1b2c3d4e.mesh",)
    assert of(names, NODE_C) == ("node3.mesh", "cafebabe.mesh")
    assert sorted(r.node_id for r in names.refusals) == [NODE_B, NODE_A]
    assert all("another mesh node claims it too" in r.describe() for r in names.refusals)


def test_a_name_that_is_another_nodes_short_id_takes_nothing_from_it() -> None:
    names = host_names({NODE_A: "1b2c3d4e", NODE_B: ""}, "mesh")
    # Claimed twice: neither has it, and the name's claimant keeps its own short id.
    assert of(names, NODE_A) == ("89888edf.mesh",)
    assert of(names, NODE_B) == ()


def test_own_names_localhost_and_names_outside_the_block_are_never_taken() -> None:
    names = host_names(
        {NODE_A: "myhost", NODE_B: "localhost", NODE_C: "printer"},
        "mesh",
        own_names={"MyHost"},
        taken={"Printer.mesh", "cafebabe.mesh"},
    )
    assert of(names, NODE_A) == ("89888edf.mesh",)
    assert of(names, NODE_B) == ("1b2c3d4e.mesh",)
    assert of(names, NODE_C) == ()  # its short-id name is in the file too
    reasons = {r.node_id: r.reason for r in names.refusals}
    assert "own name" in reasons[NODE_A] and "own name" in reasons[NODE_B]
    assert "outside" in reasons[NODE_C]


def test_hostile_names_are_refused_and_quoted_escaped() -> None:
    for hostile in (
        "a\nfd77::1 evil",
        "\x1b[2Jx",
        "node 3",
        "a.b",
        "-x",
        "x-",
        "x" * 64,
        "k\u212aode",
        "ünï",
        "a_b",
    ):
        names = host_names({NODE_A: hostile}, "mesh")
        assert of(names, NODE_A) == ("89888edf.mesh",), hostile
        (refusal,) = names.refusals
        assert refusal.describe().isprintable()
        assert "\n" not in refusal.describe() and "\x1b" not in refusal.describe()


def test_dns_labels() -> None:
    assert dns_label("Node-3") == "node-3"
    assert dns_label("x" * 63) == "x" * 63
    assert dns_label("0") == "0"
    for bad in ("", "x" * 64, "-a", "a-", "a.b", "a b", "\u212a", "İ", "a\x00"):
        assert dns_label(bad) is None, bad


def test_domains() -> None:
    assert domain_problem("mesh") is None
    assert domain_problem("mesh.example.org") is None
    for bad in ("", "Mesh", "a..b", ".mesh", "mesh.", "a_b", "x" * 191):
        assert domain_problem(bad) is not None, bad


node_ids = st.text("0123456789ABCDEF", min_size=56, max_size=56)
# Names as a hostile node might choose them: short, colliding, and anything at all.
hostile_names = st.one_of(
    st.sampled_from(["", "node", "Node", "gateway", "localhost", "myhost", "printer", "89888edf", "a-b"]),
    st.text(max_size=70),
    st.text("abcXYZ019-._ \n\x1b\u212a", max_size=12),
)


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(node_ids, hostile_names, max_size=12),
    st.sampled_from(["mesh", "mesh.example"]),
    st.frozensets(hostile_names, max_size=3),
    st.frozensets(st.sampled_from(["printer", "printer.mesh", "gateway.mesh", "node"]), max_size=3),
)
def test_names_are_contained(
    peers: dict[str, str], domain: str, own: frozenset[str], taken: frozenset[str]
) -> None:
    names = host_names(peers, domain, own_names=own, taken=taken)
    lines = names.lines()
    every = [n for line in lines for n in line.split("\t")[1].split(" ")]
    for line in lines:
        assert SAFE.match(line), line
    # No name twice, none of this host's, localhost or the file's, all in the domain.
    assert len(every) == len(set(every))
    forbidden = {n.lower() for n in own} | {"localhost"} | taken
    for name in every:
        assert name.endswith("." + domain)
        label = name.removesuffix("." + domain)
        assert label not in forbidden and name not in forbidden
    # A name two nodes claim resolves to neither.
    for label in {dns_label(n) for n in peers.values()} - {None}:
        claimants = [n for n, given in peers.items() if dns_label(given) == label]
        claimed_as_short = [n for n in peers if short_id(n).lower() == label]
        if len(claimants) + len(claimed_as_short) > 1:
            assert f"{label}.{domain}" not in every
    # Every line is one peer's tunnel address, and every peer is named or refused.
    assert len(lines) <= len(peers)
    refused = {r.node_id for r in names.refusals}
    for node_id in peers:
        assert of(names, node_id) or node_id in refused
        for r in names.refusals:
            assert r.describe().isprintable()
