"""The metrics text: names, types, labels escaped, numbers as the format wants them."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from bmx7_wg import metrics
from bmx7_wg.keys import encode_key
from bmx7_wg.mesh.escape import escape
from bmx7_wg.plan.state import Device, ObservedInterface, ObservedState, Peer, PeerStats

KEY_A = encode_key(bytes(31) + b"\x01")
KEY_B = encode_key(bytes(31) + b"\x02")
# A sample line: name, labels, value (the format's grammar, enough for these names).
SAMPLE = re.compile(r'^([a-z_][a-z0-9_]*)(\{(?:[a-z_]+="(?:[^"\\\n]|\\[\\"n])*",?)*\})? (\S+)$')


def _state() -> ObservedState:
    device = Device(
        peers={KEY_A: Peer(KEY_A), KEY_B: Peer(KEY_B)},
        stats={KEY_A: PeerStats(1_700_000_123.7, 4096, 8192), KEY_B: PeerStats()},
    )
    wg0 = ObservedInterface("wg0", 3, "userspace", True, 1420, True, frozenset(), frozenset(), device)
    foreign = ObservedInterface("wgx", 4, "userspace", False, 1420, True, frozenset(), frozenset(), device)
    return ObservedState({"wg0": wg0, "wgx": foreign})


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def test_every_line_is_a_comment_or_a_sample_with_the_prefix_and_a_type() -> None:
    service = metrics.ServiceMetrics(failed_changes=2, last_success=1_700_000_000.0)
    service.durations["full"].observe(0.03)
    service.durations["full"].observe(4.0)
    text = metrics.render(_state(), metrics.Context({}, {"wg0": {"peer": 1}}, True), service)
    typed = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, line
        name = m.group(1)
        family = (
            re.sub(r"_(bucket|sum|count)$", "", name)
            if name.startswith(metrics.PREFIX + "reconcile")
            else name
        )
        assert family in typed, name
        assert typed[family] != "counter" or family.endswith("_total")
    assert typed[metrics.PREFIX + "reconcile_duration_seconds"] == "histogram"
    assert 'bmx7_wg_reconcile_duration_seconds_bucket{kind="full",le="0.05"} 1' in text
    assert 'bmx7_wg_reconcile_duration_seconds_bucket{kind="full",le="+Inf"} 2' in text
    assert 'bmx7_wg_reconcile_duration_seconds_count{kind="full"} 2' in text
    assert "bmx7_wg_failed_changes_total 2" in text
    assert "bmx7_wg_last_successful_reconcile_timestamp_seconds 1700000000" in text
    assert "bmx7_wg_bmx7_up 1" in text
    for state in metrics.NODE_STATES:
        assert f'bmx7_wg_mesh_nodes{{interface="wg0",state="{state}"}}' in text


def test_peers_of_managed_interfaces_only_with_their_numbers() -> None:
    labels = {"wg0": {KEY_A: metrics.PeerLabel("vpn", "AB" * 28)}}
    text = metrics.render(_state(), metrics.Context(labels))
    series = f'{{interface="wg0",public_key="{KEY_A}",node_id="{"AB" * 28}",name="vpn"}}'
    assert f"bmx7_wg_peer_last_handshake_timestamp_seconds{series} 1700000123" in text
    assert f"bmx7_wg_peer_receive_bytes_total{series} 4096" in text
    assert f"bmx7_wg_peer_transmit_bytes_total{series} 8192" in text
    none = f'{{interface="wg0",public_key="{KEY_B}",node_id="",name=""}}'
    assert f"bmx7_wg_peer_last_handshake_timestamp_seconds{none} 0" in text
    assert "wgx" not in text
    assert 'bmx7_wg_interface_peers{interface="wg0"} 2' in text
    # Without a mesh, and in `bmx7-wg metrics` (no service), those families are left out.
    assert "bmx7_wg_bmx7_up" not in text and "mesh_nodes" not in text and "reconcile_duration" not in text


def test_a_hostile_host_name_stays_inside_its_label() -> None:
    hostile = 'evil"} 1\nbmx7_wg_bmx7_up 0\n\\x\x1b[2J\u202e' + "y" * 200
    labels = {"wg0": {KEY_A: metrics.PeerLabel(hostile, "")}}
    text = metrics.render(_state(), metrics.Context(labels))
    assert "\x1b" not in text and "\u202e" not in text
    assert not any(line.startswith("bmx7_wg_bmx7_up") for line in text.splitlines())
    lines = [line for line in text.splitlines() if KEY_A in line]
    assert len(lines) == 3 and all(SAMPLE.match(line) for line in lines)
    name = re.search(r'name="((?:[^"\\]|\\.)*)"', lines[0])
    assert name is not None
    # Made printable as everywhere mesh text is shown (mesh/escape.py), cut, and kept whole.
    assert _unescape(name.group(1)) == escape(hostile[: metrics.MAX_LABEL])


def test_textfile_is_replaced_whole_and_readable(tmp_path: Path) -> None:
    path = tmp_path / "bmx7-wg.prom"
    metrics.write_textfile(str(path), "a 1\n")
    metrics.write_textfile(str(path), "b 2\n")
    assert path.read_text() == "b 2\n"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bmx7-wg.prom"]
