"""The picture of a measure result, as SVG written by hand: the topology (each node coloured by when it
held every announcement) above the convergence over time (share of node pairs held, peered, reached),
with the scenarios' faults marked."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

WIDTH = 960
TOPO_H = 420
CHART_H = 320
MARGIN = 50


def _positions(lab: Mapping[str, Any]) -> dict[int, tuple[float, float]]:
    n = int(lab["nodes"])
    kind = str(lab["topology"]).split(":")[0]
    nodes = sorted({x for link in lab["links"] for x in link} | set(range(1, n + 1)))
    cx, cy = WIDTH / 2, TOPO_H / 2 + 10
    if kind == "grid":
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols)
        step = min((WIDTH - 2 * MARGIN) / max(cols - 1, 1), (TOPO_H - 2 * MARGIN) / max(rows - 1, 1))
        x0 = cx - step * (cols - 1) / 2
        y0 = cy - step * (rows - 1) / 2
        return {i: (x0 + step * ((i - 1) % cols), y0 + step * ((i - 1) // cols)) for i in nodes}
    if kind == "line":
        per_row = min(n, 13)
        rows = math.ceil(n / per_row)
        xstep = (WIDTH - 2 * MARGIN) / max(per_row - 1, 1)
        ystep = (TOPO_H - 2 * MARGIN) / max(rows - 1, 1) if rows > 1 else 0
        pos = {}
        for i in nodes:
            row, col = divmod(i - 1, per_row)
            if row % 2:  # a serpentine, so neighbours stay side by side
                col = per_row - 1 - col
            pos[i] = (MARGIN + xstep * col, (cy if rows == 1 else MARGIN + 10 + ystep * row))
        return pos
    radius = min(WIDTH, TOPO_H) / 2 - MARGIN
    return {
        i: (cx + radius * math.cos(2 * math.pi * k / len(nodes) - math.pi / 2),
            cy + radius * math.sin(2 * math.pi * k / len(nodes) - math.pi / 2))
        for k, i in enumerate(nodes)
    }  # fmt: skip


def _colour(fraction: float) -> str:
    """Green (early) to red (late)."""
    f = min(max(fraction, 0.0), 1.0)
    return f"rgb({int(60 + 190 * f)},{int(190 - 130 * f)},80)"


def render(result: Mapping[str, Any]) -> str:
    lab = result["lab"]
    sc = result["scenarios"]
    conv = sc.get("converge", {})
    held = {int(k): float(v) for k, v in conv.get("per_node_held_s", {}).items()}
    lo, hi = (min(held.values()), max(held.values())) if held else (0.0, 1.0)
    dead = sc.get("death", {}).get("node")
    pos = _positions(lab)
    height = TOPO_H + CHART_H + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="18" font-size="14">{escape(str(lab["name"]))}: {lab["nodes"]} nodes, '
        f"{escape(str(lab['topology']))}, diameter {lab['diameter']} hops; colour: when the node held every "
        "announcement (green first, red last)</text>",
    ]
    for a, b in lab["links"]:
        if a in pos and b in pos:
            (x1, y1), (x2, y2) = pos[a], pos[b]
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#999"/>')
    r = 13 if len(pos) <= 30 else 10
    for i, (x, y) in sorted(pos.items()):
        fill = _colour((held[i] - lo) / (hi - lo) if i in held and hi > lo else 0.0)
        stroke = ' stroke="black" stroke-width="3" stroke-dasharray="3,2"' if i == dead else ""
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{fill}"{stroke}/>')
        out.append(f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">n{i}</text>')
        if i in held:
            label_y = y + r + 11
            out.append(
                f'<text x="{x:.1f}" y="{label_y:.1f}" text-anchor="middle" fill="#444">{held[i]:.1f}s</text>'
            )
    if dead is not None:
        note = f"dashed: n{dead}, the node the scenarios rekey, revoke and kill"
        out.append(f'<text x="10" y="{TOPO_H - 4}">{note}</text>')
    out += _chart(result, TOPO_H + 20)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _chart(result: Mapping[str, Any], top: float) -> list[str]:
    rows = result["timeline"]
    left, right, bottom = MARGIN + 10, WIDTH - 20, top + CHART_H - 30
    t_end = float(max([row[0] for row in rows] + [t for t, _ in result["events"]] + [1.0]))

    def x(t: float) -> float:
        return left + (right - left) * t / t_end

    def y(f: float) -> float:
        return bottom - (bottom - top - 20) * f

    out = [
        f'<text x="10" y="{top + 8}" font-size="13">'
        "share of node pairs over time (s since up started)</text>",
        f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{y(1.0)}" stroke="black"/>',
    ]
    for f in (0.0, 0.5, 1.0):
        out.append(f'<text x="{left - 5}" y="{y(f) + 4:.1f}" text-anchor="end">{int(f * 100)}%</text>')
    step = max(1, round(t_end / 10))
    for t in range(0, int(t_end) + 1, step):
        out.append(f'<text x="{x(t):.1f}" y="{bottom + 14}" text-anchor="middle">{t}</text>')
    series = (
        (1, "#1f77b4", "announcement held (bmx7)"),
        (2, "#ff7f0e", "peer on the device (bmx7-wg)"),
        (3, "#2ca02c", "reached over fd77 (ping)"),
    )
    for col, colour, _ in series:
        points = " ".join(f"{x(row[0]):.1f},{y(row[col] / row[4] if row[4] else 0):.1f}" for row in rows)
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    for k, (_, colour, label) in enumerate(series):
        ly = top + 24 + 14 * k
        key_x = right - 200
        out.append(
            f'<line x1="{key_x}" y1="{ly}" x2="{key_x + 20}" y2="{ly}" stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{right - 175}" y="{ly + 4}">{label}</text>')
    for t, text in result["events"]:
        xt = x(t)
        out.append(
            f'<line x1="{xt:.1f}" y1="{bottom}" x2="{xt:.1f}" y2="{y(1.0)}" '
            'stroke="#c00" stroke-dasharray="4,3"/>'
        )
        out.append(
            f'<text x="{x(t) + 3:.1f}" y="{y(1.0) + 10:.1f}" fill="#c00" '
            f'transform="rotate(90 {x(t) + 3:.1f} {y(1.0) + 10:.1f})">{escape(text)}</text>'
        )
    return out
