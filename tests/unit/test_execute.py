"""Isolation: a failing action fails only itself and what needs it; everything else is done."""

from __future__ import annotations

from collections.abc import Sequence

from bmx7_wg.errors import (
    ApplyError,
    BackendUnavailable,
    Bmx7WgError,
    ChangesFailed,
    KeyFileError,
    ResourceConflict,
    Unreachable,
)
from bmx7_wg.keys import PrivateKey, encode_key
from bmx7_wg.plan.actions import (
    Action,
    AddAddress,
    AddPeer,
    AddRoute,
    CreateKeyFile,
    CreateLink,
    DeleteLink,
    PublishAnnouncement,
    RegisterSms,
    SetListenPort,
    SetMtu,
    SetPrivateKey,
    SetUp,
)
from bmx7_wg.plan.execute import batches, execute
from bmx7_wg.plan.state import Peer

KEY = PrivateKey(bytes(range(32)))


def peer(n: int) -> Peer:
    return Peer(encode_key(n.to_bytes(32, "big")), frozenset({f"10.30.{n}.0/24"}))


class FakeSystem:
    """Records each batch; fails the actions it is told to, like the device or kernel would."""

    def __init__(self, fail: dict[Action, Bmx7WgError] | None = None) -> None:
        self.fail = fail or {}
        self.batches: list[list[Action]] = []
        self.applied: list[Action] = []

    def step(self, batch: list[Action]) -> Sequence[Action]:
        self.batches.append(batch)
        for a in batch:
            if a in self.fail:
                raise self.fail[a]
        self.applied += batch
        return batch


def interface(name: str, *peers: Peer) -> list[Action]:
    return [
        CreateLink(name),
        SetMtu(name, mtu=1420),
        SetPrivateKey(name, private_key=KEY, public_key=KEY.public_key()),
        SetListenPort(name, listen_port=51820),
        *[AddPeer(name, peer=p) for p in peers],
        AddAddress(name, address="10.9.0.1/24"),
        SetUp(name),
        *[AddRoute(name, network=next(iter(p.allowed_ips))) for p in peers],
    ]


def test_a_foreign_route_fails_only_that_route() -> None:
    a, b = peer(1), peer(2)
    actions = interface("wg0", a, b)
    clash = AddRoute("wg0", network="10.30.1.0/24")
    system = FakeSystem({clash: ResourceConflict("wg0: cannot add route 10.30.1.0/24: in the way")})
    outcome = execute(actions, system.step)
    assert [(f.action, f.status, f.resource) for f in outcome.failures] == [
        (clash, "conflict", "wg0 route 10.30.1.0/24")
    ]
    assert outcome.done == [x for x in actions if x != clash]
    assert AddRoute("wg0", network="10.30.2.0/24") in system.applied


def test_a_link_that_cannot_be_created_skips_its_interface_only() -> None:
    actions = interface("wga", peer(1)) + interface("wgb", peer(2))
    system = FakeSystem({CreateLink("wga"): BackendUnavailable("wga: cannot run wireguard-go")})
    outcome = execute(actions, system.step)
    assert outcome.done == interface("wgb", peer(2))
    failed = {f.action: f.status for f in outcome.failures}
    assert failed[CreateLink("wga")] == "failed"
    assert all(failed[x] == "skipped" for x in interface("wga", peer(1))[1:])
    skipped = next(f for f in outcome.failures if f.action == AddRoute("wga", network="10.30.1.0/24"))
    assert skipped.reason == "not tried: wga failed"
    # Typed errors keep their exit code through execution: an unavailable backend is 3, not 5.
    assert ChangesFailed(outcome.failures, applied=len(outcome.done)).exit_code == 3


def test_a_device_batch_with_one_refused_peer_gets_the_others_in() -> None:
    good, bad, other = peer(1), peer(2), peer(3)
    refused = AddPeer("wg0", peer=bad)
    actions = interface("wg0", good, bad, other)
    system = FakeSystem({refused: ApplyError("wg0: the device refused the change (errno 22)")})
    outcome = execute(actions, system.step)
    assert [f.action for f in outcome.failures] == [refused]
    assert outcome.failures[0].resource == f"wg0 peer {bad.public_key}"
    assert AddPeer("wg0", peer=good) in outcome.done and AddPeer("wg0", peer=other) in outcome.done
    # Its route needs the link, not the peer: it is still added.
    assert AddRoute("wg0", network="10.30.2.0/24") in outcome.done
    # One batch for the device, then one action at a time to find the refused one.
    device = [b for b in system.batches if b[0].device]
    assert len(device[0]) == 5 and all(len(b) == 1 for b in device[1:])
    assert ChangesFailed(outcome.failures, applied=len(outcome.done)).exit_code == 5


def test_a_refused_listen_port_keeps_the_announcement_back_not_the_peers() -> None:
    port = SetListenPort("wg0", listen_port=51820)
    publish = PublishAnnouncement(
        "wg0", runtime_dir="/run/bmx7", sms="wg-bmx7", public_key="k", listen_port=51820
    )
    register = RegisterSms("wg0", runtime_dir="/run/bmx7", sms="wg-bmx7")
    actions = [*interface("wg0", peer(1)), publish, register]
    outcome = execute(actions, FakeSystem({port: ApplyError("wg0: address already in use")}).step)
    assert {f.action: f.status for f in outcome.failures} == {port: "failed", publish: "skipped"}
    assert AddPeer("wg0", peer=peer(1)) in outcome.done and register in outcome.done


def test_an_unreachable_device_is_not_retried_action_by_action() -> None:
    actions = interface("wg0", peer(1), peer(2))
    down = Unreachable("wg0: no answer on the device socket")
    system = FakeSystem({SetPrivateKey("wg0", private_key=KEY, public_key=KEY.public_key()): down})
    outcome = execute(actions, system.step)
    assert len([b for b in system.batches if b[0].device]) == 1
    failed = {f.action.kind for f in outcome.failures if f.status == "failed"}
    assert failed == {"set_private_key", "set_listen_port", "add_peer"}
    # The device does not answer: the rest of its interface is not tried either.
    skipped = {f.action.kind for f in outcome.failures if f.status == "skipped"}
    assert skipped == {"add_address", "set_up", "add_route"}
    assert outcome.done == [CreateLink("wg0"), SetMtu("wg0", mtu=1420)]


def test_a_key_file_that_cannot_be_created_holds_back_only_its_key() -> None:
    create = CreateKeyFile("wg0", path="/k/wg0.key")
    set_key = SetPrivateKey("wg0", key_file="/k/wg0.key")
    publish = PublishAnnouncement("wg0", sms="wg-bmx7", listen_port=1, key_file="/k/wg0.key")
    actions = [create, CreateLink("wg0"), set_key, AddPeer("wg0", peer=peer(1)), SetUp("wg0"), publish]
    outcome = execute(actions, FakeSystem({create: KeyFileError("/k/wg0.key: read-only file system")}).step)
    assert [(f.action, f.status) for f in outcome.failures] == [
        (create, "failed"),
        (set_key, "skipped"),
        (publish, "skipped"),
    ]
    assert outcome.done == [CreateLink("wg0"), AddPeer("wg0", peer=peer(1)), SetUp("wg0")]
    assert ChangesFailed(outcome.failures, applied=3).exit_code == 2


def test_deleting_a_link_that_fails_skips_its_recreation() -> None:
    actions = [DeleteLink("wg0", reason="backend changes"), *interface("wg0")]
    outcome = execute(actions, FakeSystem({actions[0]: ApplyError("wg0: busy")}).step)
    assert outcome.done == []
    assert [f.status for f in outcome.failures] == ["failed"] + ["skipped"] * len(interface("wg0"))


def test_batches_group_device_actions_of_one_interface() -> None:
    actions = interface("wga", peer(1)) + interface("wgb", peer(2))
    assert [len(b) for b in batches(actions)] == [1, 1, 3, 1, 1, 1] * 2


def test_failures_are_named_in_text_and_json() -> None:
    clash = AddRoute("wg0", network="10.30.1.0/24")
    outcome = execute([clash], FakeSystem({clash: ResourceConflict("another route is in the way")}).step)
    (failure,) = outcome.failures
    assert failure.to_json() == {
        "interface": "wg0",
        "action": "add_route",
        "network": "10.30.1.0/24",
        "resource": "wg0 route 10.30.1.0/24",
        "status": "conflict",
        "reason": "another route is in the way",
    }
    message = str(ChangesFailed(outcome.failures, applied=0))
    assert "wg0: add route 10.30.1.0/24: conflict (wg0 route 10.30.1.0/24): another route" in message
