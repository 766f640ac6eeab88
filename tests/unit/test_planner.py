"""The planner: table-driven cases, minimality, order, and scale."""

from __future__ import annotations

from dataclasses import replace

import pytest

from bmx7_wg.errors import ConflictError, UsageError
from bmx7_wg.keys import PresharedKey, PrivateKey, encode_key
from bmx7_wg.plan.actions import (
    AddAddress,
    AddPeer,
    AddRoute,
    AdoptLink,
    CreateKeyFile,
    CreateLink,
    DeleteLink,
    PublishAnnouncement,
    RemoveAddress,
    RemovePeer,
    RemoveRoute,
    SetFwmark,
    SetListenPort,
    SetMtu,
    SetPrivateKey,
    SetUp,
    UpdatePeer,
)
from bmx7_wg.plan.desired import Publication
from bmx7_wg.plan.planner import link_plan, plan, plan_down, plan_rollback
from bmx7_wg.plan.state import (
    Announcement,
    DesiredAnnouncement,
    DesiredInterface,
    DesiredState,
    Device,
    ObservedAnnouncement,
    ObservedInterface,
    ObservedState,
    Peer,
)

KEY = PrivateKey(bytes(range(32)))
OTHER_KEY = PrivateKey(bytes(range(1, 33)))


def pub(n: int) -> str:
    return encode_key(n.to_bytes(32, "big"))


PEER_A = Peer(pub(1), frozenset({"10.9.1.0/24"}), "192.0.2.1:51820", 25)
PEER_B = Peer(pub(2), frozenset({"10.9.2.0/24"}), None, 0)


def want(**kw: object) -> DesiredInterface:
    base = DesiredInterface(
        name="wg0",
        implementation="userspace",
        private_key=KEY,
        listen_port=51820,
        fwmark=0,
        mtu=1420,
        addresses=frozenset({"10.9.0.1/24"}),
        routes=frozenset({"10.9.1.0/24"}),
        peers={PEER_A.public_key: PEER_A},
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def have(**kw: object) -> ObservedInterface:
    """An interface that matches want() exactly."""
    device = Device(private_key=KEY, listen_port=51820, fwmark=0, peers={PEER_A.public_key: PEER_A})
    base = ObservedInterface(
        name="wg0",
        ifindex=7,
        implementation="userspace",
        managed=True,
        mtu=1420,
        up=True,
        addresses=frozenset({"10.9.0.1/24"}),
        routes=frozenset({"10.9.1.0/24"}),
        device=device,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def run(desired: list[DesiredInterface], observed: list[ObservedInterface]) -> list[object]:
    return list(plan(DesiredState(tuple(desired)), ObservedState({o.name: o for o in observed})))


def dev(**kw: object) -> Device:
    base = Device(private_key=KEY, listen_port=51820, fwmark=0, peers={PEER_A.public_key: PEER_A})
    return replace(base, **kw)  # type: ignore[arg-type]


CASES = [
    ("unchanged system: nothing to do", [want()], [have()], []),
    (
        "new interface: create, configure, up, route",
        [want()],
        [],
        [
            CreateLink("wg0", implementation="userspace"),
            SetMtu("wg0", mtu=1420),
            SetPrivateKey("wg0", private_key=KEY, public_key=KEY.public_key()),
            SetListenPort("wg0", listen_port=51820),
            AddPeer("wg0", peer=PEER_A),
            AddAddress("wg0", address="10.9.0.1/24"),
            SetUp("wg0"),
            AddRoute("wg0", network="10.9.1.0/24"),
        ],
    ),
    ("mtu drift", [want()], [have(mtu=1500)], [SetMtu("wg0", mtu=1420)]),
    ("link down", [want()], [have(up=False)], [SetUp("wg0")]),
    (
        "listen port changed behind our back",
        [want()],
        [have(device=dev(listen_port=4000))],
        [SetListenPort("wg0", listen_port=51820)],
    ),
    (
        "no port configured: any port is fine",
        [want(listen_port=None)],
        [have(device=dev(listen_port=4000))],
        [],
    ),
    ("fwmark", [want(fwmark=7)], [have()], [SetFwmark("wg0", fwmark=7)]),
    (
        "private key changed",
        [want(private_key=OTHER_KEY)],
        [have()],
        [SetPrivateKey("wg0", private_key=OTHER_KEY, public_key=OTHER_KEY.public_key())],
    ),
    (
        "device reports the key clamped: no change",
        [want(private_key=PrivateKey(bytes([7] * 32)))],
        [have(device=dev(private_key=PrivateKey(bytes([7 & 248] + [7] * 30 + [(7 & 127) | 64]))))],
        [],
    ),
    ("peer removed behind our back", [want()], [have(device=dev(peers={}))], [AddPeer("wg0", peer=PEER_A)]),
    (
        "peer added and peer removed in config",
        [want(peers={PEER_B.public_key: PEER_B}, routes=frozenset({"10.9.2.0/24"}))],
        [have()],
        [
            # A route that goes is removed before anything is taken (it may be wanted elsewhere).
            RemoveRoute("wg0", network="10.9.1.0/24"),
            RemovePeer("wg0", public_key=PEER_A.public_key),
            AddPeer("wg0", peer=PEER_B),
            AddRoute("wg0", network="10.9.2.0/24"),
        ],
    ),
    (
        "allowed-ips changed: one update naming only that field",
        [want(peers={PEER_A.public_key: replace(PEER_A, allowed_ips=frozenset({"10.9.1.0/25"}))})],
        [have()],
        [
            UpdatePeer(
                "wg0",
                peer=replace(PEER_A, allowed_ips=frozenset({"10.9.1.0/25"})),
                changed=("allowed_ips",),
            )
        ],
    ),
    (
        "peer without configured endpoint keeps the endpoint it roamed to",
        [want(peers={PEER_B.public_key: PEER_B}, routes=frozenset({"10.9.2.0/24"}))],
        [
            have(
                device=dev(peers={PEER_B.public_key: replace(PEER_B, endpoint="198.51.100.9:1234")}),
                routes=frozenset({"10.9.2.0/24"}),
            )
        ],
        [],
    ),
    (
        "endpoint, keepalive and psk changed",
        [
            want(
                peers={
                    PEER_A.public_key: replace(
                        PEER_A,
                        endpoint="192.0.2.2:51820",
                        persistent_keepalive=0,
                        preshared_key=PresharedKey(b"\1" * 32),
                    )
                }
            )
        ],
        [have()],
        [
            UpdatePeer(
                "wg0",
                peer=replace(
                    PEER_A,
                    endpoint="192.0.2.2:51820",
                    persistent_keepalive=0,
                    preshared_key=PresharedKey(b"\1" * 32),
                ),
                changed=("endpoint", "persistent_keepalive", "preshared_key"),
            )
        ],
    ),
    (
        "address drift both ways",
        [want()],
        [have(addresses=frozenset({"10.9.0.2/24"}))],
        [RemoveAddress("wg0", address="10.9.0.2/24"), AddAddress("wg0", address="10.9.0.1/24")],
    ),
    (
        "route removed behind our back",
        [want()],
        [have(routes=frozenset())],
        [AddRoute("wg0", network="10.9.1.0/24")],
    ),
    (
        "interface dropped from config is deleted",
        [],
        [have()],
        [DeleteLink("wg0", reason="no longer in the configuration")],
    ),
    ("a foreign WireGuard interface is never touched", [], [have(managed=False)], []),
    (
        "a declared, unmarked WireGuard interface is adopted",
        [want()],
        [have(managed=False)],
        [AdoptLink("wg0")],
    ),
    (
        "backend change is said in the plan",
        [want(implementation="kernel")],
        [have()],
        [
            DeleteLink("wg0", reason="backend changes from userspace to kernel"),
            CreateLink("wg0", implementation="kernel"),
            SetMtu("wg0", mtu=1420),
            SetPrivateKey("wg0", private_key=KEY, public_key=KEY.public_key()),
            SetListenPort("wg0", listen_port=51820),
            AddPeer("wg0", peer=PEER_A),
            AddAddress("wg0", address="10.9.0.1/24"),
            SetUp("wg0"),
            AddRoute("wg0", network="10.9.1.0/24"),
        ],
    ),
]


@pytest.mark.parametrize(
    ("desired", "observed", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_plan(
    desired: list[DesiredInterface], observed: list[ObservedInterface], expected: list[object]
) -> None:
    assert run(desired, observed) == expected


def test_name_taken_by_a_non_wireguard_interface_is_a_conflict() -> None:
    with pytest.raises(ConflictError, match="wg0: an interface of that name exists and is not a WireGuard"):
        run([want()], [have(implementation=None, device=None, managed=False)])


def test_a_name_whose_socket_serves_another_namespace_is_a_conflict() -> None:
    elsewhere = ObservedState({}, sockets_elsewhere=frozenset({"wg0"}))
    with pytest.raises(ConflictError, match="wg0: a wireguard-go of that name runs in another network"):
        plan(DesiredState((want(),)), elsewhere)
    # Other names are planned as usual.
    first = plan(DesiredState((want(name="wg1"),)), elsewhere)[0]
    assert first == CreateLink("wg1", implementation="userspace")


def test_backend_change_of_a_foreign_interface_is_a_conflict() -> None:
    with pytest.raises(ConflictError, match="not managed by bmx7-wg"):
        run([want(implementation="kernel")], [have(managed=False)])


def test_order_is_deterministic_across_interfaces() -> None:
    a, b = want(name="wgb"), want(name="wga")
    first = run([a, b], [])
    assert run([b, a], []) == first
    assert first[0].interface == "wga"  # type: ignore[attr-defined]


def test_private_key_never_in_repr_or_json() -> None:
    actions = run([want()], [])
    secret = KEY.to_base64()
    for a in actions:
        assert secret not in repr(a)
        assert secret not in str(a.to_json())  # type: ignore[attr-defined]
        assert KEY.raw.hex() not in repr(a)


def _many_peers(n: int) -> dict[str, Peer]:
    peers = {}
    for i in range(n):
        p = Peer(pub(i + 10), frozenset({f"fd00::{i:x}/128"}), f"[fd70::{i:x}]:40456", 0)
        peers[p.public_key] = p
    return peers


def test_one_changed_peer_among_10000_is_one_update() -> None:
    peers = _many_peers(10_000)
    key = pub(5000 + 10)
    changed = dict(peers)
    changed[key] = replace(peers[key], persistent_keepalive=25)
    d = want(peers=changed, addresses=frozenset({"fd00::1/64"}), routes=frozenset())
    o = have(device=dev(peers=peers), addresses=frozenset({"fd00::1/64"}), routes=frozenset())
    actions = run([d], [o])
    assert actions == [UpdatePeer("wg0", peer=changed[key], changed=("persistent_keepalive",))]


# -- order: what frees a resource runs before what takes it -----------------------


def _kinds(actions: list[object]) -> list[tuple[str, str]]:
    return [(a.interface, a.kind) for a in actions]  # type: ignore[attr-defined]


def test_rename_deletes_the_old_link_before_the_new_one_takes_its_port() -> None:
    # [interface.wga] renamed [interface.wgz], same listen port: wga must go first, or
    # wgz's port is "already in use" at every apply.
    old = have(name="wga", routes=frozenset(), addresses=frozenset({"10.9.0.1/24"}))
    actions = run([want(name="wgz")], [old])
    kinds = _kinds(actions)
    assert kinds.index(("wga", "delete_link")) < kinds.index(("wgz", "create_link"))
    assert kinds[0] == ("wga", "delete_link")


def test_a_port_given_up_is_set_before_another_interface_takes_it() -> None:
    # wga moves from 51820 to 51821; wgb (name order first otherwise) takes 51820.
    wga = have(name="wga", device=dev(listen_port=51820))
    wgb = have(name="wgb", device=dev(listen_port=51822))
    # Named so that name order alone would put the taker first.
    actions = run(
        [want(name="wga", listen_port=51821), want(name="wgb", listen_port=51820)],
        [wga, wgb],
    )
    assert actions == [SetListenPort("wga", listen_port=51821), SetListenPort("wgb", listen_port=51820)]
    taker_first = run(
        [want(name="wgb", listen_port=51821), want(name="wga", listen_port=51820)],
        [replace(wga, name="wgb"), replace(wgb, name="wga")],
    )
    assert taker_first == [SetListenPort("wgb", listen_port=51821), SetListenPort("wga", listen_port=51820)]


def test_a_port_swap_keeps_name_order() -> None:
    wga = have(name="wga", device=dev(listen_port=1))
    wgb = have(name="wgb", device=dev(listen_port=2))
    actions = run([want(name="wga", listen_port=2), want(name="wgb", listen_port=1)], [wga, wgb])
    assert _kinds(actions) == [("wga", "set_listen_port"), ("wgb", "set_listen_port")]


def test_a_route_moving_between_interfaces_is_removed_before_it_is_added() -> None:
    net = "10.9.9.0/24"
    wga = have(name="wga", routes=frozenset({"10.9.1.0/24"}))
    wgb = have(name="wgb", routes=frozenset({"10.9.1.0/24", net}))
    actions = run([want(name="wga", routes=frozenset({"10.9.1.0/24", net})), want(name="wgb")], [wga, wgb])
    assert actions == [RemoveRoute("wgb", network=net), AddRoute("wga", network=net)]


def test_addresses_that_go_are_removed_before_any_interface_is_set_up() -> None:
    wga = have(name="wga", addresses=frozenset())
    wgb = have(name="wgb", addresses=frozenset({"10.9.0.1/24", "10.9.5.1/24"}))
    actions = run([want(name="wga"), want(name="wgb")], [wga, wgb])
    assert actions == [RemoveAddress("wgb", address="10.9.5.1/24"), AddAddress("wga", address="10.9.0.1/24")]


# -- key files: planned, never written while planning ------------------------------


def test_a_missing_key_file_is_a_planned_action_and_no_key_is_shown() -> None:
    actions = run([want(private_key=None, new_key_file="/k/wg0.key")], [])
    assert actions[0] == CreateKeyFile("wg0", path="/k/wg0.key")
    set_key = next(a for a in actions if isinstance(a, SetPrivateKey))
    assert set_key == SetPrivateKey("wg0", key_file="/k/wg0.key")
    assert set_key.to_json() == {
        "interface": "wg0",
        "action": "set_private_key",
        "public_key": None,
        "key_file": "/k/wg0.key",
    }
    assert "the new key of /k/wg0.key" in set_key.describe()
    # The key file comes before anything else, even a deletion.
    gone = have(name="wgold")
    assert run([want(private_key=None, new_key_file="/k/wg0.key")], [gone])[0] == CreateKeyFile(
        "wg0", path="/k/wg0.key"
    )


# -- the mesh announcement: compared here like everything else ---------------------

PUBLISH = Publication(runtime_dir="/run/bmx7", sms="wg-bmx7")


def _announced(announcement: Announcement, registered: bool | None) -> tuple[DesiredState, ObservedState]:
    desired = DesiredState(
        (want(),),
        DesiredAnnouncement(
            "wg0", PUBLISH.runtime_dir, PUBLISH.sms, Announcement(KEY.public_key(), 51820, ())
        ),
    )
    published = ObservedAnnouncement("wg-bmx7", announcement, registered)
    observed = ObservedState({"wg0": have()}, announcement=published)
    return desired, observed


def test_announcement_published_and_registered_is_left_alone() -> None:
    assert plan(*_announced(Announcement(KEY.public_key(), 51820, ()), True)) == []


def test_announcement_that_differs_is_published_and_an_unregistered_name_registered() -> None:
    actions = plan(*_announced(Announcement(KEY.public_key(), 4000, ()), False))
    assert [a.kind for a in actions] == ["publish_announcement", "register_sms"]
    assert actions[0].to_json() == {
        "interface": "wg0",
        "action": "publish_announcement",
        "sms": "wg-bmx7",
        "public_key": KEY.public_key(),
        "listen_port": 51820,
        "networks": [],
    }


def test_no_registration_while_bmx7_cannot_be_asked() -> None:
    assert plan(*_announced(Announcement(KEY.public_key(), 51820, ()), None)) == []


def test_announcement_of_a_key_still_to_be_created_names_no_key() -> None:
    desired = DesiredState(
        (want(private_key=None, new_key_file="/k/wg0.key"),),
        DesiredAnnouncement("wg0", "/run/bmx7", "wg-bmx7", Announcement(None, 51820, ())),
    )
    actions = plan(desired, ObservedState({}))
    publish = actions[-2]
    assert isinstance(publish, PublishAnnouncement)
    assert publish.to_json()["public_key"] is None
    assert publish.needs == ("wg0", "wg0 private key", "wg0 listen port", "key file /k/wg0.key")


def test_a_session_key_apply_would_make_is_not_shown_by_plan() -> None:
    (set_key,) = [a for a in run([want(private_key=None)], []) if isinstance(a, SetPrivateKey)]
    assert set_key.to_json() == {"interface": "wg0", "action": "set_private_key", "public_key": None}
    assert set_key.describe() == "wg0: set private key (a new session key)"


def test_link_plan_sees_links_addresses_and_routes_not_devices() -> None:
    """What the service checks a link event with: a read without devices that matches
    the links plans nothing; a link that differs plans what plan() would do to it."""
    desired = DesiredState((want(private_key=None, new_key_file="/k"),))

    def links(**kw: object) -> ObservedState:
        return ObservedState({"wg0": have(device=None, **kw)})

    assert link_plan(desired, links()) == []
    assert link_plan(desired, links(addresses=frozenset())) == [AddAddress("wg0", address="10.9.0.1/24")]
    assert link_plan(desired, links(up=False, routes=frozenset())) == [
        SetUp("wg0"),
        AddRoute("wg0", network="10.9.1.0/24"),
    ]
    assert link_plan(desired, links(mtu=1300)) == [SetMtu("wg0", mtu=1420)]
    missing = link_plan(desired, ObservedState({}))
    assert missing[0] == CreateLink("wg0", implementation="userspace")
    assert not any(a.device for a in missing)


# -- down ---------------------------------------------------------------------------

MESH = ("wg0", PUBLISH)


def _down_state(published: ObservedAnnouncement | None = None) -> ObservedState:
    foreign = have(name="wgx", managed=False)
    return ObservedState({"wg0": have(), "wg1": have(name="wg1"), "wgx": foreign}, announcement=published)


def test_down_withdraws_the_announcement_before_deleting_every_managed_link() -> None:
    published = ObservedAnnouncement("wg-bmx7", Announcement(KEY.public_key(), 51820, ()), True, True)
    actions = plan_down(_down_state(published), [], MESH)
    assert [(a.kind, a.interface) for a in actions] == [
        ("withdraw_announcement", "wg0"),
        ("unregister_sms", "wg0"),
        ("delete_link", "wg0"),
        ("delete_link", "wg1"),
    ]
    assert actions[0].to_json() == {"interface": "wg0", "action": "withdraw_announcement", "sms": "wg-bmx7"}


def test_down_of_another_interface_leaves_the_announcement() -> None:
    published = ObservedAnnouncement("wg-bmx7", Announcement(KEY.public_key(), 51820, ()), True, True)
    assert [a.kind for a in plan_down(_down_state(published), ["wg1"], MESH)] == ["delete_link"]


def test_down_removes_a_file_that_does_not_parse_and_skips_an_unknown_registration() -> None:
    published = ObservedAnnouncement("wg-bmx7", None, None, True)  # bmx7 does not answer
    assert [a.kind for a in plan_down(_down_state(published), ["wg0"], MESH)] == [
        "withdraw_announcement",
        "delete_link",
    ]
    nothing = ObservedAnnouncement("wg-bmx7", None, False, False)
    assert [a.kind for a in plan_down(_down_state(nothing), ["wg0"], MESH)] == ["delete_link"]


def test_down_refuses_foreign_and_missing_interfaces_and_plans_nothing() -> None:
    with pytest.raises(ConflictError, match="wgx is not managed"):
        plan_down(_down_state(), ["wg0", "wgx"])
    with pytest.raises(UsageError, match="no interface named wg9"):
        plan_down(_down_state(), ["wg9"])


# -- rollback of apply --confirm -------------------------------------------------------


def test_rollback_plans_the_state_before_as_desired() -> None:
    # Before: wg0 with peer A on port 51820. Applied: port 4000, peer B instead of A, an
    # address more, and a new interface wg1.
    before = DesiredState((want(),))
    applied = have(
        addresses=frozenset({"10.9.0.1/24", "10.8.0.1/24"}),
        device=dev(listen_port=4000, peers={PEER_B.public_key: PEER_B}),
        routes=frozenset({"10.9.2.0/24"}),
    )
    observed = ObservedState({"wg0": applied, "wg1": have(name="wg1")})
    actions = plan_rollback(before, None, observed)
    assert [(a.kind, a.interface) for a in actions] == [
        ("delete_link", "wg1"),
        ("remove_route", "wg0"),
        ("remove_address", "wg0"),
        ("set_listen_port", "wg0"),
        ("remove_peer", "wg0"),
        ("add_peer", "wg0"),
        ("add_route", "wg0"),
    ]
    assert plan_rollback(before, None, ObservedState({"wg0": have()})) == []


def test_rollback_brings_back_a_deleted_interface_with_its_key() -> None:
    before = DesiredState((want(),))
    actions = plan_rollback(before, None, ObservedState({}))
    assert actions[0] == CreateLink("wg0", implementation="userspace")
    key = next(a for a in actions if isinstance(a, SetPrivateKey))
    assert key.private_key == KEY and key.public_key == KEY.public_key()


def test_rollback_withdraws_an_announcement_that_was_not_there() -> None:
    now = ObservedAnnouncement("wg-bmx7", Announcement(KEY.public_key(), 51820, ()), True, True)
    observed = ObservedState({"wg0": have()}, announcement=now)
    before_none = ObservedAnnouncement("wg-bmx7", None, False, False)
    kinds = [a.kind for a in plan_rollback(DesiredState((want(),)), before_none, observed, MESH)]
    assert kinds == ["withdraw_announcement", "unregister_sms"]


def test_rollback_publishes_the_announcement_as_it_was() -> None:
    old = Announcement(OTHER_KEY.public_key(), 40000, ("10.9.0.0/24",))
    before = DesiredState((want(),), DesiredAnnouncement("wg0", PUBLISH.runtime_dir, PUBLISH.sms, old))
    had = ObservedAnnouncement("wg-bmx7", old, True, True)
    now = ObservedAnnouncement("wg-bmx7", Announcement(KEY.public_key(), 51820, ()), True, True)
    actions = plan_rollback(before, had, ObservedState({"wg0": have()}, announcement=now), MESH)
    assert [a.kind for a in actions] == ["publish_announcement"]
    assert actions[0].to_json()["public_key"] == OTHER_KEY.public_key()


def test_down_for_all_withdraws_an_announcement_whose_interface_is_gone() -> None:
    published = ObservedAnnouncement("wg-bmx7", Announcement(KEY.public_key(), 51820, ()), True, True)
    observed = ObservedState({"wg1": have(name="wg1")}, announcement=published)
    assert [a.kind for a in plan_down(observed, [], MESH)] == [
        "withdraw_announcement",
        "unregister_sms",
        "delete_link",
    ]
    assert [a.kind for a in plan_down(observed, ["wg1"], MESH)] == ["delete_link"]
