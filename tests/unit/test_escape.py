"""Text from other mesh nodes reaches terminals, logs and JSON only escaped.

A node chooses its host name and its announcement; bmx7 passes both on. Read through
bmx7-wg, neither can carry an ANSI escape sequence, a newline (a forged log line) or a
bidirectional override to the screen, the journal or `--json`.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from bmx7_wg import show
from bmx7_wg.config.model import Bmx7Config, Config, InterfaceConfig
from bmx7_wg.keys import PrivateKey
from bmx7_wg.mesh.announce import AnnouncementError, format_announcement, parse_announcement
from bmx7_wg.mesh.bmx7 import Bmx7Runtime
from bmx7_wg.mesh.escape import escape
from bmx7_wg.mesh.session import mesh_labels
from bmx7_wg.mesh.view import TrustPolicy, mesh_peers
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState, Peer

HOSTILE = "\x1b[2J\x1b[31mevil\nMar 1 00:00:00 host bmx7-wg: peer added\r\u202egnp.exe\x07"


def _unsafe(text: str) -> bool:
    return any(not c.isprintable() for c in text)


def test_escape_makes_every_unprintable_character_visible() -> None:
    assert escape(HOSTILE) == (
        "\\x1b[2J\\x1b[31mevil\\nMar 1 00:00:00 host bmx7-wg: peer added\\r\\u202egnp.exe\\x07"
    )
    # Printable text, other scripts and backslashes included, is left as it is.
    for text in ("node-1", "Zürich ノード", "a\\nb", ""):
        assert escape(text) == text


def _runtime(tmp_path: Path, names: dict[str, str], announcements: dict[str, bytes]) -> Path:
    root = tmp_path / "bmx7"
    (root / "json" / "originators").mkdir(parents=True)
    (root / "sms" / "rcvdSms").mkdir(parents=True)
    for node_id, name in names.items():
        (root / "json" / "originators" / node_id).write_text(json.dumps({"nodeId": node_id, "name": name}))
    for node_id, payload in announcements.items():
        (root / "sms" / "rcvdSms" / f"{node_id}:wg-bmx7").write_bytes(payload)
    return root


def test_hostile_names_and_payloads_reach_no_output_raw(tmp_path: Path) -> None:
    good, bad = secrets.token_hex(28).upper(), secrets.token_hex(28).upper()
    key = PrivateKey.generate().public_key()
    root = _runtime(
        tmp_path,
        {good: HOSTILE, bad: HOSTILE},
        {
            good: format_announcement(key, 51820),
            bad: f"bmx7-wg 1\nkey {key}\nport 1\nnet {HOSTILE}\n".encode(),
        },
    )
    names = Bmx7Runtime(str(root)).node_names()
    assert names[good] == escape(HOSTILE)

    # The mesh view's refusals (logged, printed, and listed under "refused").
    received = [(n, (root / "sms" / "rcvdSms" / f"{n}:wg-bmx7").read_bytes()) for n in (good, bad)]
    view = mesh_peers(secrets.token_hex(28), received, TrustPolicy(mode="all"), node_names=names)
    assert view.refusals and view.peers
    for refusal in view.refusals:
        assert not _unsafe(refusal.describe()), refusal.describe()
    assert not _unsafe(view.peers[0].name or "")

    # `show`, text and JSON.
    config = Config(
        path="/etc/bmx7-wg.toml",
        interfaces=(InterfaceConfig(name="wg0", private_key_file="/nonexistent", mesh=True),),
        bmx7=Bmx7Config(runtime_dir=str(root)),
    )
    labels = mesh_labels(config)
    peer = Peer(public_key=key, allowed_ips=frozenset({"fd77::1/128"}))
    observed = ObservedState({"wg0": ObservedInterface(
        "wg0", 1, "userspace", True, 1420, True, frozenset(), frozenset(), Device(peers={key: peer})
    )})
    data = show.interfaces_json(observed, labels)
    assert data[0]["peers"][0]["name"] == escape(HOSTILE)
    text = show.render_text(data)
    assert not any(_unsafe(line) for line in text.splitlines())
    assert "\\x1b[2J" in text


def test_announcement_errors_quote_payloads_escaped() -> None:
    for payload in (
        f"bmx7-wg 1\nkey {PrivateKey.generate().public_key()}\nport 1\nnet \x1b[31m\n".encode(),
        b"bmx7-wg \x1b[2J\n",
        b"bmx7-wg 1\n\x1b[2J x\n",
    ):
        try:
            parse_announcement(payload)
        except AnnouncementError as exc:
            assert not _unsafe(exc.reason) and not _unsafe(str(exc)), exc.reason
        else:
            raise AssertionError("accepted")


def test_a_configured_name_with_a_bar_is_shown_whole() -> None:
    # Mesh labels are "name|NODEID"; a configured peer name may hold "|" itself.
    key = PrivateKey.generate().public_key()
    observed = ObservedState({"wg0": ObservedInterface(
        "wg0", 1, "userspace", True, 1420, True, frozenset(), frozenset(),
        Device(peers={key: Peer(public_key=key)}),
    )})
    data = show.interfaces_json(observed, {"wg0": {key: "site|b"}})
    assert data[0]["peers"][0]["name"] == "site|b" and "node_id" not in data[0]["peers"][0]
