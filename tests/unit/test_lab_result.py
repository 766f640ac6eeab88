"""bmx7-wg-lab measure's result file (its schema, the figures it derives) and its picture."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from bmx7_wg_lab import measure, svg, topology
from bmx7_wg_lab.errors import NotEnoughResources
from bmx7_wg_lab.lab import NODE_MIB, check_inotify, check_memory, interface_name

T0 = 1_700_000_000.0


def sample_result(kind: str = "grid", n: int = 9) -> dict[str, Any]:
    topo = topology.build(n, kind, 3 if kind == "random" else None)
    pct = measure.percentiles([4.0, 5.0, 12.0])
    return measure.build_result(
        lab_info={
            "name": "lab",
            "nodes": n,
            "topology": topo.spec,
            "links": [list(x) for x in topo.links],
            "diameter": topology.diameter(topo.nodes, topo.links),
            "netem": {},
            "backend": "auto",
        },
        started=T0,
        scenarios={
            "converge": {
                "floor_s": 20.0,
                "peers_s": 20.01,
                "full_s": 21.0,
                "share_ms": pct,
                "per_node_held_s": {str(i): 10.0 + i for i in topo.nodes},
            },
            "rekey": {"node": n, "floor_s": 3.0, "peers_s": 3.01, "full_s": 4.0, "share_ms": pct},
            "revoke": {
                "node": n,
                "removed_s": measure.percentiles([0.05]),
                "restored_s": measure.percentiles([0.04]),
            },
            "death": {"node": n, "floor_s": 70.0, "removed_s": measure.percentiles([100.0])},
        },
        resources={"converged": {}},
        timeline=[
            (T0 + 1, 0, 0, 0, n * (n - 1)),
            (T0 + 21, n * (n - 1), n * (n - 1), n * (n - 1), n * (n - 1)),
        ],
        events=[(T0 + 21, "mesh complete"), (T0 + 30, f"n{n} dies")],
        machine={
            "cpus": 2,
            "loadavg_start": [1.0, 1.0, 1.0],
            "loadavg_end": [2.0, 1.0, 1.0],
            "kernel": "6.1",
        },
    )


def test_result_times_are_relative_to_the_start_and_survive_json() -> None:
    result = sample_result()
    assert result["format"] == measure.FORMAT
    assert result["timeline"][0] == [1.0, 0, 0, 0, 72]
    assert result["events"][1] == [30.0, "n9 dies"]
    again = json.loads(json.dumps(result))
    measure.validate(again)
    assert again == result


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: r.pop("scenarios"), "scenarios"),
        (lambda r: r.update(format="other/1"), "format"),
        (lambda r: r["lab"].pop("diameter"), "lab.diameter"),
        (lambda r: r["scenarios"]["converge"].pop("floor_s"), "converge.floor_s"),
        (lambda r: r["scenarios"]["death"].pop("removed_s"), "death.removed_s"),
        (lambda r: r["timeline"].append([1, 2, 3]), "timeline row"),
        (lambda r: r["events"].append([1, 2]), "event"),
    ],
)
def test_a_damaged_result_is_refused(damage: Any, message: str) -> None:
    result = sample_result()
    damage(result)
    with pytest.raises(ValueError, match=message):
        measure.validate(result)


def test_percentiles_by_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert measure.percentiles(values) == {"n": 100, "p50": 50.0, "p99": 99.0, "max": 100.0}
    assert measure.percentiles([7.0]) == {"n": 1, "p50": 7.0, "p99": 7.0, "max": 7.0}
    assert measure.percentiles([]) == {"n": 0, "p50": None, "p99": None, "max": None}


def test_share_is_the_log_time_minus_the_file_time() -> None:
    events = [
        measure.PeerEvent(T0 + 5.010, 1, "add", "K2"),
        measure.PeerEvent(T0 + 6.000, 2, "add", "K1"),
        measure.PeerEvent(T0 + 9.000, 1, "add", "K2"),  # a later add of the same peer does not count
        measure.PeerEvent(T0 + 1.000, 2, "add", "K3"),  # before `since`
    ]
    held = {(1, 2): T0 + 5.0, (2, 1): T0 + 5.98}
    adds, shares = measure._share(events, held, {1: "K1", 2: "K2", 3: "K3"}, T0 + 2, [(1, 2), (2, 1), (2, 3)])
    assert adds == [T0 + 5.010, T0 + 6.0]
    assert shares == pytest.approx([10.0, 20.0])
    # node 2's service was ready only after its announcement from node 1 arrived: start-up, not share
    events.append(measure.PeerEvent(T0 + 5.99, 2, "ready", ""))
    adds, shares = measure._share(events, held, {1: "K1", 2: "K2", 3: "K3"}, T0 + 2, [(1, 2), (2, 1), (2, 3)])
    assert adds == [T0 + 5.010, T0 + 6.0]
    assert shares == pytest.approx([10.0])


def test_peer_events_are_read_from_the_service_log_lines() -> None:
    key = "A" * 42 + "E="
    line = f"1700000005.123456 bmx7-wg: wl1234n1: add peer {key} (n2) [mesh node 89888EDF]"
    m = measure.LOG_LINE.match(line)
    assert m and m.groups() == ("1700000005.123456", "add", key)
    assert measure.LOG_LINE.match(f"1700000005.1 bmx7-wg: wl1234n1: remove peer {key}")
    assert not measure.LOG_LINE.match(f"bmx7-wg: wl1234n1: add peer {key}")  # no time: not measurable


def test_the_scenarios_pick_the_node_farthest_from_n1() -> None:
    line = topology.build(10, "line")
    assert measure.farthest(line.nodes, line.links) == 10
    grid = topology.build(9, "grid")
    assert measure.farthest(grid.nodes, grid.links) == 9


@pytest.mark.parametrize(
    ("kind", "n"), [("line", 10), ("line", 30), ("ring", 6), ("grid", 25), ("random", 50)]
)
def test_picture_is_svg_with_every_node_link_and_curve(kind: str, n: int) -> None:
    result = sample_result(kind, n)
    root = ET.fromstring(svg.render(result))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert {f"n{i}" for i in range(1, n + 1)} <= set(texts)
    assert len(list(root.iter(f"{ns}circle"))) == n
    assert len(list(root.iter(f"{ns}polyline"))) == 3
    assert f"n{n} dies" in texts
    # every node inside the picture
    for c in root.iter(f"{ns}circle"):
        assert 0 < float(c.get("cx", "-1")) < svg.WIDTH and 0 < float(c.get("cy", "-1")) < svg.TOPO_H


def test_write_names_the_files_after_size_and_topology(tmp_path: Any) -> None:
    paths = measure.write(sample_result("random", 10), str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["lab-10-random-3.json", "lab-10-random-3.svg"]
    measure.validate(json.loads((tmp_path / "lab-10-random-3.json").read_text()))


def test_too_little_memory_is_refused_before_anything_starts() -> None:
    check_memory(10, available=10 * NODE_MIB)
    with pytest.raises(NotEnoughResources, match="50 nodes need about"):
        check_memory(50, available=1000)


def test_too_few_inotify_instances_are_refused_with_the_fix() -> None:
    check_inotify(25, limit=128, in_use=20)  # 100 + 20 fit
    with pytest.raises(NotEnoughResources, match=r"sysctl -w fs.inotify.max_user_instances=1024"):
        check_inotify(50, limit=128, in_use=20)


def test_interface_names_fit_and_differ_between_labs() -> None:
    names = {interface_name(lab, n) for lab in ("lab", "bench1", "abcdefghijkl") for n in range(1, 251)}
    assert len(names) == 3 * 250
    assert max(len(x) for x in names) <= 15
