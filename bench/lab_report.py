"""Put bmx7-wg-lab measure results into bench/RESULTS.md (section "The mesh lab").

Usage: lab_report.py RESULTS.md RESULT.json...; the section between the markers below is
rewritten, the rest of the file left as it is (appended at the end the first time).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

BEGIN = "<!-- bmx7-wg-lab results: begin (written by bench/lab_report.py) -->"
END = "<!-- bmx7-wg-lab results: end -->"


def _s(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ms(p: dict[str, Any]) -> str:
    return "-" if not p or p.get("p50") is None else f"{p['p50']:.1f} / {p['p99']:.1f}"


def _sec(p: dict[str, Any], key: str = "max") -> str:
    return "-" if not p or p.get(key) is None else f"{p[key]:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    rows = [
        "| nodes | topology | hops | bmx7 floor s | peers s | full mesh s | bmx7-wg share ms p50 / p99 "
        "| rekey: held / peers s | rekey share ms p50 / p99 | revoke s (max) | re-trust s (max) "
        "| death: bmx7 / peers gone s | load (1 min) start / end |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(results, key=lambda r: (r["lab"]["nodes"], str(r["lab"]["topology"]))):
        lab, sc, m = r["lab"], r["scenarios"], r["machine"]
        c, k, v, d = sc.get("converge", {}), sc.get("rekey", {}), sc.get("revoke", {}), sc.get("death", {})
        rows.append(
            f"| {lab['nodes']} | {lab['topology']} | {lab['diameter']} | {_s(c.get('floor_s'))} "
            f"| {_s(c.get('peers_s'))} | {_s(c.get('full_s'))} | {_ms(c.get('share_ms', {}))} "
            f"| {_s(k.get('floor_s'))} / {_s(k.get('peers_s'))} | {_ms(k.get('share_ms', {}))} "
            f"| {_sec(v.get('removed_s', {}))} | {_sec(v.get('restored_s', {}))} "
            f"| {_s(d.get('floor_s'))} / {_sec(d.get('removed_s', {}))} "
            f"| {m['loadavg_start'][0]:.1f} / {m['loadavg_end'][0]:.1f} |"
        )
    rows += [
        "",
        "Resident memory (MiB) and CPU time (s, from start to the complete mesh) per node, mean (max):",
        "",
        "| nodes | topology | bmx7 RSS | bmx7-wg RSS | wireguard-go RSS "
        "| bmx7 CPU | bmx7-wg CPU | wireguard-go CPU |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: (r["lab"]["nodes"], str(r["lab"]["topology"]))):
        res = r["resources"].get("converged", {})

        def cell(role: str, what: str, res: dict[str, Any] = res) -> str:
            x = res.get(role)
            return "-" if not x else f"{x[what + '_mean']} ({x[what + '_max']})"

        rows.append(
            f"| {r['lab']['nodes']} | {r['lab']['topology']} | {cell('bmx7', 'rss_mib')} "
            f"| {cell('bmx7-wg', 'rss_mib')} | {cell('wireguard-go', 'rss_mib')} | {cell('bmx7', 'cpu_s')} "
            f"| {cell('bmx7-wg', 'cpu_s')} | {cell('wireguard-go', 'cpu_s')} |"
        )
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    target = Path(argv[0])
    results = [json.loads(Path(p).read_text()) for p in argv[1:]]
    text = target.read_text(encoding="utf-8") if target.exists() else ""
    section = f"{BEGIN}\n{table(results)}\n{END}"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    target.write_text(text, encoding="utf-8")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
