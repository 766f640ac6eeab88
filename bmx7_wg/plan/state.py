"""Desired and observed state of WireGuard interfaces: what the planner compares.

Desired state is built from the configuration (and the mesh); observed state is read
from the kernel and the WireGuard devices. Both use these plain frozen values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bmx7_wg.keys import PresharedKey, PrivateKey

Implementation = Literal["kernel", "userspace"]

# Marker written into the interface alias (IFLA_IFALIAS) of every interface bmx7-wg
# manages, so that an interface dropped from the configuration can still be found
# and removed, and a foreign interface is never mistaken for ours.
OWNER_ALIAS = "managed-by=bmx7-wg"
# Routing protocol number stamped on every route bmx7-wg adds ("bmx7-wg" in
# /etc/iproute2/rt_protos.d/bmx7-wg.conf); only routes with it are ever removed.
ROUTE_PROTO = 77


@dataclass(frozen=True, slots=True)  # slots: thousands of them in a big mesh, several times over
class Peer:
    """A WireGuard peer as it should be, or as a device reports it."""

    public_key: str  # base64
    allowed_ips: frozenset[str] = frozenset()  # canonical CIDR strings
    endpoint: str | None = None  # "1.2.3.4:51820" / "[fd70::1]:40456"; desired None = leave alone
    persistent_keepalive: int = 0
    preshared_key: PresharedKey | None = None
    # Informational only, never compared:
    name: str | None = field(default=None, compare=False)
    source: str = field(default="static", compare=False)  # "static" | "mesh"
    node_id: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class PeerStats:
    """Runtime facts a device reports about a peer; shown, never planned."""

    last_handshake: float = 0.0  # seconds since the epoch, 0 = never
    rx_bytes: int = 0
    tx_bytes: int = 0


@dataclass(frozen=True)
class Device:
    """The WireGuard part of an interface (keys, port, peers)."""

    private_key: PrivateKey | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: Mapping[str, Peer] = field(default_factory=dict)  # public key -> peer
    stats: Mapping[str, PeerStats] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class DesiredInterface:
    name: str
    implementation: Implementation
    # None: the key file `new_key_file` does not exist yet; apply creates it (planning
    # never writes, and never shows a key that apply would not use).
    private_key: PrivateKey | None
    listen_port: int | None  # None: leave to the device
    fwmark: int
    mtu: int
    addresses: frozenset[str]  # canonical interface strings "10.9.0.1/24"
    routes: frozenset[str]  # canonical network strings routed into the interface
    peers: Mapping[str, Peer]  # public key -> peer
    new_key_file: str | None = None


@dataclass(frozen=True)
class Announcement:
    """This node's mesh announcement as published through bmx7's SMS plugin."""

    public_key: str | None  # None: the interface's key is created by this apply
    listen_port: int
    networks: tuple[str, ...]  # canonical CIDRs, sorted


@dataclass(frozen=True)
class DesiredAnnouncement:
    interface: str
    runtime_dir: str  # bmx7's runtime directory (holds sms/sendSms)
    sms: str  # the SMS name bmx7 publishes it under
    announcement: Announcement


@dataclass(frozen=True)
class ObservedAnnouncement:
    sms: str
    announcement: Announcement | None  # None: no file, or one that does not parse
    # bmx7 is told to publish `sms` (syncSms); None: bmx7 cannot be asked now (not running),
    # so there is nothing to register with until it answers again.
    registered: bool | None
    # The sendSms file is there, whether or not it parses (what `down` withdraws).
    file_exists: bool = False


@dataclass(frozen=True)
class ObservedInterface:
    name: str
    ifindex: int
    implementation: Implementation | None  # None: exists but is not WireGuard
    managed: bool  # carries OWNER_ALIAS
    mtu: int
    up: bool
    addresses: frozenset[str]  # link-local addresses excluded
    routes: frozenset[str]  # only routes with ROUTE_PROTO
    device: Device | None  # None when the WireGuard device could not be read


@dataclass(frozen=True)
class DesiredState:
    interfaces: tuple[DesiredInterface, ...]
    announcement: DesiredAnnouncement | None = None


@dataclass(frozen=True)
class HostNetworks:
    """Addresses and routes of the namespace's links, WireGuard or not, by link name:
    what a mesh peer's networks must keep clear of (mesh.view.reservations). Read with
    the observed state; the planner never looks at it."""

    addresses: Mapping[str, frozenset[str]] = field(default_factory=dict)  # "10.0.0.1/24"
    # Unicast and local routes of every table, default routes left out.
    routes: Mapping[str, frozenset[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ObservedState:
    # Every WireGuard or managed interface in the namespace, plus any interface that
    # carries a name the configuration declares.
    interfaces: Mapping[str, ObservedInterface]
    host: HostNetworks = field(default_factory=HostNetworks, compare=False)
    # Declared names with no link here whose wireguard-go socket answers from another
    # network namespace (the socket directory is shared): not ours, and taken.
    sockets_elsewhere: frozenset[str] = frozenset()
    announcement: ObservedAnnouncement | None = None
