"""`bmx7-wg-lab status`: the nodes' views put together, as JSON data and as text."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bmx7_wg_lab.lab import Lab
from bmx7_wg_lab.observe import NodeView


def expected_peers(lab: Lab, views: Mapping[int, NodeView], n: int) -> set[int]:
    """The nodes n should have as peers: every other running node that n trusts."""
    return {m for m, v in views.items() if m != n and v.bmx7_up and v.service_up and lab.trusts(n, m)}


def mesh_complete(lab: Lab, views: Mapping[int, NodeView], owners: Mapping[str, int]) -> bool:
    for n, v in views.items():
        if not (v.bmx7_up and v.service_up) or v.device is None:
            continue
        peers = {owners.get(k) for k in v.device.peers}
        if peers != expected_peers(lab, views, n):
            return False
    return True


def status_data(
    lab: Lab,
    views: Mapping[int, NodeView],
    owners: Mapping[str, int],
    reach: Mapping[tuple[int, int], bool],
    sampled: bool,
) -> dict[str, Any]:
    r = lab.record
    now = time.time()
    nodes = []
    for n, v in sorted(views.items()):
        want = expected_peers(lab, views, n) if v.bmx7_up and v.service_up else set()
        have = {owners.get(k, 0): hs for k, hs in (v.device.peers.items() if v.device else ())}
        nodes.append(
            {
                "node": n,
                "namespace": r.namespaces[n],
                "node_id": r.node_ids.get(n),
                "interface": r.interfaces[n],
                "bmx7": "up" if v.bmx7_up else "down",
                "bmx7_wg": "up" if v.service_up else "down",
                "nodes_seen": v.seen,
                "announcements_held": sorted(v.held),
                "peers": sorted(m for m in have if m),
                "peers_missing": sorted(want - set(have)),
                "peers_unexpected": sorted(m for m in have if m not in want),  # 0: a key no node has now
                "handshakes": sum(1 for hs in have.values() if hs > 0),
                "recent_handshakes": sum(1 for hs in have.values() if hs > 0 and now - hs < 180),
            }
        )
    pairs = [
        {"from": a, "to": b, "reached": ok, "expected": lab.trusts(a, b) and lab.trusts(b, a)}
        for (a, b), ok in sorted(reach.items())
    ]
    return {
        "name": r.name,
        "topology": r.topology,
        "nodes": nodes,
        "links": [{"a": a, "b": b, "up": (a, b) not in r.cut} for a, b in r.links],
        "distrust": [list(p) for p in r.distrust],
        "reachability": {"sampled": sampled, "pairs": pairs},
        "complete": mesh_complete(lab, views, owners)
        and all(p["reached"] for p in pairs if p["expected"] and _both_up(views, p["from"], p["to"])),
    }


def _both_up(views: Mapping[int, NodeView], a: int, b: int) -> bool:
    return all(views[x].bmx7_up and views[x].service_up for x in (a, b) if x in views)


def _nodes(ids: list[int]) -> str:
    return ",".join(f"n{m}" if m else "a stale key" for m in ids) if ids else "-"


def status_text(data: Mapping[str, Any]) -> str:
    lines = [f"lab {data['name']}: {len(data['nodes'])} nodes, topology {data['topology']}"]
    cut = [f"n{link['a']}-n{link['b']}" for link in data["links"] if not link["up"]]
    if cut:
        lines.append(f"links cut: {', '.join(cut)}")
    if data["distrust"]:
        lines.append("trust revoked: " + ", ".join(f"n{a} -> n{b}" for a, b in data["distrust"]))
    lines.append(
        f"{'node':<6}{'bmx7':<6}{'seen':>5}{'held':>6}  {'bmx7-wg':<8}{'peers':>6}{'hs':>5}"
        "  missing / unexpected"
    )
    total = len(data["nodes"])
    for node in data["nodes"]:
        seen = "-" if node["nodes_seen"] is None else str(node["nodes_seen"])
        problems = ""
        if node["peers_missing"] or node["peers_unexpected"]:
            problems = f"{_nodes(node['peers_missing'])} / {_nodes(node['peers_unexpected'])}"
        lines.append(
            f"n{node['node']:<5}{node['bmx7']:<6}{seen:>5}{len(node['announcements_held']):>6}  "
            f"{node['bmx7_wg']:<8}{len(node['peers']):>6}{node['handshakes']:>5}  {problems}"
        )
    reach = data["reachability"]
    pairs = reach["pairs"]
    ok = sum(1 for p in pairs if p["reached"])
    how = (
        f"a sample of {len(pairs)} pairs (more than 16 nodes)"
        if reach["sampled"]
        else f"all {len(pairs)} pairs"
    )
    lines.append(f"reachability over fd77, {how}: {ok} answered")
    if not reach["sampled"] and total <= 16:
        ids = [node["node"] for node in data["nodes"]]
        got = {(p["from"], p["to"]): p for p in pairs}
        lines.append(
            "      "
            + "".join(f"{m:>4}" for m in ids)
            + "   (row: from; . answered, X not, x not and not expected)"
        )
        for a in ids:
            cells = []
            for b in ids:
                p = got.get((a, b))
                cells.append("-" if p is None else "." if p["reached"] else "X" if p["expected"] else "x")
            lines.append(f"n{a:<5}" + "".join(f"{c:>4}" for c in cells))
    else:
        bad = [f"n{p['from']}->n{p['to']}" for p in pairs if not p["reached"] and p["expected"]]
        if bad:
            lines.append("not answered: " + ", ".join(bad[:40]) + (" ..." if len(bad) > 40 else ""))
    lines.append(
        "complete: every running node has every node it trusts as a peer and reaches it"
        if data["complete"]
        else "not complete"
    )
    return "\n".join(lines)
