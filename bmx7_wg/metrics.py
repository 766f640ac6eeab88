"""Metrics in the Prometheus text format (version 0.0.4): `bmx7-wg metrics` and the
service's textfile for node_exporter's textfile collector.

`render` is pure: it takes the observed state, the peers' labels, the mesh's node
counts and the service's own numbers, and returns the text. Label values other nodes
chose (host names) are escaped twice: made printable (mesh/escape.py), then escaped as
the format asks (backslash, double quote, newline). The series stay bounded: three per
peer, a handful per interface, a fixed set for the service; a host name is cut at
MAX_LABEL characters. At 10,000 peers the text is 6.3 MB, rendered in 0.2 s (see README).

`write_textfile` writes the file atomically (a temporary file in the same directory,
renamed into place): node_exporter never reads half a file.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from bmx7_wg.base.atomicfile import write_atomically
from bmx7_wg.mesh.escape import escape
from bmx7_wg.mesh.session import MeshSession
from bmx7_wg.plan.state import DesiredState, ObservedState, Peer

PREFIX = "bmx7_wg_"
MAX_LABEL = 64  # characters of a host name kept in a label
# Reconcile durations: a no-op at 10 peers takes milliseconds, a full reconcile of a
# 10,000-node mesh about a second (bench/RESULTS.md).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
NODE_STATES = ("peer", "refused", "held", "untrusted")


@dataclass(frozen=True)
class PeerLabel:
    """What a peer is called: its configured name or mesh host name, its mesh node id."""

    name: str = ""
    node_id: str = ""


@dataclass
class Histogram:
    buckets: tuple[float, ...] = BUCKETS
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))  # the last: +Inf
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


@dataclass
class ServiceMetrics:
    """The service's own numbers, kept across reconciles."""

    durations: dict[str, Histogram] = field(
        default_factory=lambda: {"full": Histogram(), "step": Histogram()}
    )
    failed_changes: int = 0
    last_success: float | None = None  # seconds since the epoch


def label_value(text: str) -> str:
    """A label value as the text format writes it between double quotes."""
    return escape(text).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items()) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() and abs(value) < 2**53 else repr(float(value))


def render(observed: ObservedState, known: Context, service: ServiceMetrics | None = None) -> str:
    """The metrics of the managed interfaces in `observed`, labelled and counted as
    `known` says (`service`: only `bmx7-wg run` has one)."""
    labels, mesh_nodes, bmx7_up = known.labels, known.mesh_nodes, known.bmx7_up
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {PREFIX}{name} {help_text}")
        out.append(f"# TYPE {PREFIX}{name} {kind}")

    interfaces = [observed.interfaces[n] for n in sorted(observed.interfaces)]
    interfaces = [i for i in interfaces if i.managed and i.device is not None]
    peer_lines: dict[str, list[str]] = {"handshake": [], "rx": [], "tx": []}
    for iface in interfaces:
        assert iface.device is not None
        names = labels.get(iface.name, {})
        for key in sorted(iface.device.peers):
            stats = iface.device.stats.get(key)
            label = names.get(key, PeerLabel())
            series = _labels(
                interface=iface.name, public_key=key, node_id=label.node_id, name=label.name[:MAX_LABEL]
            )
            handshake = stats.last_handshake if stats is not None else 0.0
            peer_lines["handshake"].append(
                f"{PREFIX}peer_last_handshake_timestamp_seconds{series} {int(handshake)}"
            )
            peer_lines["rx"].append(
                f"{PREFIX}peer_receive_bytes_total{series} {stats.rx_bytes if stats else 0}"
            )
            peer_lines["tx"].append(
                f"{PREFIX}peer_transmit_bytes_total{series} {stats.tx_bytes if stats else 0}"
            )
    family(
        "peer_last_handshake_timestamp_seconds",
        "gauge",
        "Time of the peer's latest handshake, in seconds since the epoch (0: none yet).",
    )
    out += peer_lines["handshake"]
    family("peer_receive_bytes_total", "counter", "Bytes received from the peer (since its device was made).")
    out += peer_lines["rx"]
    family("peer_transmit_bytes_total", "counter", "Bytes sent to the peer (since its device was made).")
    out += peer_lines["tx"]
    family("interface_peers", "gauge", "Peers of the WireGuard interface.")
    for iface in interfaces:
        assert iface.device is not None
        out.append(f"{PREFIX}interface_peers{_labels(interface=iface.name)} {len(iface.device.peers)}")
    if mesh_nodes:
        family(
            "mesh_nodes",
            "gauge",
            "Mesh nodes by state: peer, refused (bad or clashing announcement), held (announcement "
            "vanished, kept for the grace period), untrusted.",
        )
        for name in sorted(mesh_nodes):
            for state in NODE_STATES:
                count = mesh_nodes[name].get(state, 0)
                out.append(f"{PREFIX}mesh_nodes{_labels(interface=name, state=state)} {count}")
    if bmx7_up is not None:
        family("bmx7_up", "gauge", "Whether bmx7 answers on its control socket (1) or not (0).")
        out.append(f"{PREFIX}bmx7_up {int(bmx7_up)}")
    if service is not None:
        _service(service, family, out)
    return "\n".join(out) + "\n"


def _service(service: ServiceMetrics, family: Callable[[str, str, str], None], out: list[str]) -> None:
    family(
        "reconcile_duration_seconds",
        "histogram",
        "Time a reconcile took: full (read everything, plan, apply) or step (a few announcements).",
    )
    for kind in sorted(service.durations):
        h = service.durations[kind]
        cumulative = 0
        for bound, count in zip((*h.buckets, float("inf")), h.counts, strict=True):
            cumulative += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            out.append(f"{PREFIX}reconcile_duration_seconds_bucket{_labels(kind=kind, le=le)} {cumulative}")
        out.append(f"{PREFIX}reconcile_duration_seconds_sum{_labels(kind=kind)} {h.total!r}")
        out.append(f"{PREFIX}reconcile_duration_seconds_count{_labels(kind=kind)} {h.count}")
    family("failed_changes_total", "counter", "Changes that failed since the service started.")
    out.append(f"{PREFIX}failed_changes_total {service.failed_changes}")
    family(
        "last_successful_reconcile_timestamp_seconds",
        "gauge",
        "When a full reconcile last succeeded, in seconds since the epoch (0: not yet).",
    )
    out.append(f"{PREFIX}last_successful_reconcile_timestamp_seconds {_number(service.last_success or 0)}")


def write_textfile(path: str, text: str) -> None:
    """Write `text` to `path` atomically (mode 0644: node_exporter runs as its own user;
    not synced: the file is rewritten every 30 s). OSError if the directory is missing or
    not writable."""
    write_atomically(path, text.encode(), 0o644, durable=False)


@dataclass(frozen=True)
class Context:
    """What a reconcile knows that the device does not: peers' names, mesh node states."""

    labels: Mapping[str, Mapping[str, PeerLabel]] = field(default_factory=dict)
    mesh_nodes: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    bmx7_up: bool | None = None


def context(
    desired: DesiredState,
    mesh_peers: Mapping[str, tuple[Peer, ...]],
    mesh: MeshSession,
    held: Mapping[str, int] | None = None,
) -> Context:
    """The labels and mesh counts of a reconcile: its desired state, its planned mesh
    peers and what it read of the mesh (`held`: interface -> peers held by the service's
    grace; a one-shot command holds none)."""
    labels = {
        d.name: {k: PeerLabel(p.name or "", p.node_id or "") for k, p in d.peers.items()}
        for d in desired.interfaces
    }
    nodes: dict[str, dict[str, int]] = {}
    if mesh.interface is not None and mesh.liveness is not None:
        name = mesh.interface.name
        peers = mesh_peers.get(name, ())
        peer_ids = {p.node_id for p in peers if p.node_id}
        refused = {n for n, _ in mesh.refusals} - peer_ids  # a refused network leaves the peer
        policy = mesh.policy
        untrusted = {n for n in refused if policy is not None and policy.refusal(n) is not None}
        kept = (held or {}).get(name, 0)
        nodes[name] = {
            "peer": max(0, len(peers) - kept),
            "refused": len(refused - untrusted),
            "held": kept,
            "untrusted": len(untrusted),
        }
    up = mesh.liveness.answering if mesh.liveness is not None else None
    return Context(labels, nodes, up)
