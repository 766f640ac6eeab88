"""No action, and no device change, shows key material: repr, str, text and JSON."""

from __future__ import annotations

import json

import pytest

from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.actions import Action, AddPeer, DeviceChange, SetPrivateKey, UpdatePeer
from bmx7_wg.plan.state import Peer

PRIVATE = PrivateKey.generate()
PSK = PresharedKey(PrivateKey.generate().raw)
PEER = Peer(
    public_key=PrivateKey.generate().public_key(),
    allowed_ips=frozenset({"10.9.1.0/24"}),
    endpoint="192.0.2.1:51820",
    preshared_key=PSK,
    name="vpn",
)


def spellings(raw: bytes) -> list[str]:
    """Every way a key's bytes could leak into text."""
    import base64

    return [base64.b64encode(raw).decode(), raw.hex(), repr(raw), str(list(raw))[1:30]]


def assert_no_secret(text: str) -> None:
    for raw in (PRIVATE.raw, PSK.raw):
        for spelling in spellings(raw):
            assert spelling not in text


ACTIONS = [
    SetPrivateKey("wg0", private_key=PRIVATE, public_key=PRIVATE.public_key()),
    AddPeer("wg0", peer=PEER),
    UpdatePeer("wg0", peer=PEER, changed=("preshared_key", "endpoint")),
]


@pytest.mark.parametrize("action", ACTIONS, ids=lambda a: a.kind)
def test_action_shows_no_key(action: Action) -> None:
    for text in (repr(action), str(action), action.describe(), json.dumps(action.to_json())):
        assert_no_secret(text)


def test_what_actions_do_show() -> None:
    set_key, add, _ = ACTIONS
    assert set_key.to_json() == {
        "interface": "wg0",
        "action": "set_private_key",
        "public_key": PRIVATE.public_key(),
    }
    assert set_key.describe() == f"wg0: set private key (public key {PRIVATE.public_key()})"
    assert "PrivateKey(<redacted>)" not in repr(set_key)  # the field is left out of repr entirely
    assert add.to_json()["peer"] == {
        "public_key": PEER.public_key,
        "allowed_ips": ["10.9.1.0/24"],
        "source": "static",
        "endpoint": "192.0.2.1:51820",
        "preshared_key": "(set)",
        "name": "vpn",
    }
    assert "PresharedKey(<redacted>)" in repr(add)


def test_device_change_shows_no_key() -> None:
    change = DeviceChange.collect("wg0", list(ACTIONS))
    assert change.private_key == PRIVATE and change.add_peers == (PEER,)  # the keys travel...
    assert_no_secret(repr(change))  # ...but never print
    assert_no_secret(str(change))
