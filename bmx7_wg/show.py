"""`show`: observed interfaces and peers as text (like `wg show`) or JSON. Pure."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from bmx7_wg.base.nodeid import NODE_ID_RE, short_id, tunnel_address
from bmx7_wg.plan.state import ObservedInterface, ObservedState, Peer, PeerStats


def interfaces_json(
    observed: ObservedState,
    names: Mapping[str, Mapping[str, str]],
    host_names: Mapping[str, tuple[str, ...]] | None = None,
) -> list[dict[str, Any]]:
    """`names`: interface -> public key -> (peer name, node id) labels known from config/mesh;
    `host_names`: tunnel address -> the names the hosts file's mesh block gives it."""
    return [
        _interface_json(observed.interfaces[n], names.get(n, {}), host_names or {})
        for n in sorted(observed.interfaces)
    ]


def _interface_json(
    iface: ObservedInterface, labels: Mapping[str, str], host_names: Mapping[str, tuple[str, ...]]
) -> dict[str, Any]:
    dev = iface.device
    out: dict[str, Any] = {
        "name": iface.name,
        "backend": iface.implementation,
        "managed": iface.managed,
        "up": iface.up,
        "mtu": iface.mtu,
        "addresses": sorted(iface.addresses),
        "routes": sorted(iface.routes),
        "public_key": dev.private_key.public_key() if dev and dev.private_key else None,
        "listen_port": dev.listen_port if dev else None,
        "fwmark": dev.fwmark if dev else 0,
        "peers": [],
    }
    if dev is not None:
        for key in sorted(dev.peers):
            peer = _peer_json(dev.peers[key], dev.stats.get(key, PeerStats()), labels)
            if "tunnel_address" in peer:
                peer["host_names"] = list(host_names.get(peer["tunnel_address"], ()))
            out["peers"].append(peer)
    return out


def _peer_json(peer: Peer, stats: PeerStats, labels: Mapping[str, str]) -> dict[str, Any]:
    label = labels.get(peer.public_key, "")
    # Mesh labels are "name|NODEID"; a configured name is the whole label, "|" and all.
    name, _, node_id = label.rpartition("|")
    if not NODE_ID_RE.match(node_id):
        name, node_id = label, ""
    out: dict[str, Any] = {
        "public_key": peer.public_key,
        "name": name or None,
        "endpoint": peer.endpoint,
        "allowed_ips": sorted(peer.allowed_ips),
        "persistent_keepalive": peer.persistent_keepalive,
        "preshared_key": peer.preshared_key is not None,
        "latest_handshake": int(stats.last_handshake),
        "rx_bytes": stats.rx_bytes,
        "tx_bytes": stats.tx_bytes,
    }
    if node_id:
        out["node_id"] = node_id
        out["short_id"] = short_id(node_id)
        out["tunnel_address"] = str(tunnel_address(node_id))
    return out


def render_text(interfaces: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    lines: list[str] = []
    for i in interfaces:
        if lines:
            lines.append("")
        flags = ", ".join([i["backend"] or "not WireGuard", "managed" if i["managed"] else "not managed"])
        lines.append(f"interface: {i['name']} ({flags})")
        if i["public_key"]:
            lines.append(f"  public key: {i['public_key']}")
        if i["listen_port"]:
            lines.append(f"  listening port: {i['listen_port']}")
        if i["fwmark"]:
            lines.append(f"  fwmark: {i['fwmark']:#x}")
        lines.append(f"  state: {'up' if i['up'] else 'down'}, mtu {i['mtu']}")
        lines.append(f"  addresses: {', '.join(i['addresses']) or '(none)'}")
        for p in i["peers"]:
            lines.append("")
            label = p["public_key"]
            if p.get("name"):
                label += f" ({p['name']})"
            lines.append(f"  peer: {label}")
            if p.get("node_id"):
                lines.append(f"    mesh node: {p['short_id']}  tunnel address: {p['tunnel_address']}")
            if p.get("host_names"):
                lines.append(f"    names: {', '.join(p['host_names'])}")
            if p["endpoint"]:
                lines.append(f"    endpoint: {p['endpoint']}")
            lines.append(f"    allowed ips: {', '.join(p['allowed_ips']) or '(none)'}")
            lines.append(f"    latest handshake: {_ago(p['latest_handshake'], now)}")
            lines.append(f"    transfer: {_bytes(p['rx_bytes'])} received, {_bytes(p['tx_bytes'])} sent")
            if p["persistent_keepalive"]:
                lines.append(f"    persistent keepalive: every {p['persistent_keepalive']} seconds")
    return "\n".join(lines)


def _ago(ts: int, now: float) -> str:
    if not ts:
        return "never"
    secs = max(0, int(now - ts))
    if secs < 60:
        return f"{secs} second{'s' if secs != 1 else ''} ago"
    mins, secs = divmod(secs, 60)
    if mins < 60:
        return f"{mins} min {secs} s ago"
    hours, mins = divmod(mins, 60)
    return f"{hours} h {mins} min ago"


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.2f} {unit}"
        size /= 1024
    return f"{n} B"
