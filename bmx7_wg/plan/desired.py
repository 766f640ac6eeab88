"""Build the desired state from the configuration, keys, the mesh view and name resolution.

Everything here is pure except what is passed in: key loading, the backend choice and
host-name resolution come as arguments, so tests can build desired states without root.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bmx7_wg.base.iptext import Network, canonical_network
from bmx7_wg.config.model import Config, InterfaceConfig, PeerConfig
from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.state import (
    Announcement,
    DesiredAnnouncement,
    DesiredInterface,
    DesiredState,
    Implementation,
    Peer,
)

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], str | None]  # (host, port) -> canonical "ip:port" or None
_DEFAULT_ROUTES = frozenset({"0.0.0.0/0", "::/0"})


@dataclass(frozen=True)
class Publication:
    """Where this node's mesh announcement goes: bmx7's runtime directory and SMS name."""

    runtime_dir: str
    sms: str


@dataclass(frozen=True)
class MeshInputs:
    """What the mesh contributes to one interface (see mesh/session.py)."""

    peers: tuple[Peer, ...] = ()
    address: str | None = None
    routes: tuple[str, ...] = ()
    # bmx7 could not be read: keep the mesh peers and address the interface has, so a
    # bmx7 restart or a slow control socket never tears the mesh down.
    hold: bool = False
    publish: Publication | None = None  # None: bmx7's node is not known, publish nothing


@dataclass(frozen=True)
class InterfaceInputs:
    """What an interface's desired state needs besides its configuration."""

    implementation: Implementation
    private_key: PrivateKey | None  # None: `new_key_file` is created by apply
    preshared_keys: Mapping[str, PresharedKey]  # preshared_key_file path -> key
    mesh_peers: tuple[Peer, ...] = ()
    mesh_address: str | None = None  # "fd77:.../128": this node's tunnel address
    mesh_routes: tuple[str, ...] = ()  # e.g. ("fd77::/16",)
    new_key_file: str | None = None
    publish: Publication | None = None


def desired_state(config: Config, inputs: Mapping[str, InterfaceInputs], resolve: Resolver) -> DesiredState:
    interfaces = tuple(desired_interface(i, inputs[i.name], resolve) for i in config.interfaces)
    announcement = None
    for iface, want in zip(config.interfaces, interfaces, strict=True):
        publish = inputs[iface.name].publish
        if publish is not None:
            announcement = DesiredAnnouncement(
                interface=iface.name,
                runtime_dir=publish.runtime_dir,
                sms=publish.sms,
                announcement=Announcement(
                    public_key=want.private_key.public_key() if want.private_key is not None else None,
                    listen_port=want.listen_port or 0,
                    networks=_announced(iface.announce_networks),
                ),
            )
    return DesiredState(interfaces, announcement)


def _announced(networks: Iterable[str]) -> tuple[str, ...]:
    """Canonical and in the announcement format's order (version, address, length), so that
    it compares equal to what a published announcement parses to."""
    nets = {ipaddress.ip_network(n, strict=False) for n in networks}
    return tuple(str(n) for n in sorted(nets, key=lambda n: (n.version, int(n.network_address), n.prefixlen)))


def desired_interface(iface: InterfaceConfig, inputs: InterfaceInputs, resolve: Resolver) -> DesiredInterface:
    static = {pc.public_key: static_peer(pc, inputs.preshared_keys, resolve) for pc in iface.peers}
    peers = device_peers(static, inputs.mesh_peers)

    addresses = set(iface.addresses)
    if inputs.mesh_address:
        addresses.add(inputs.mesh_address)
    routes: set[str] = set(inputs.mesh_routes)
    if iface.route_allowed_ips:
        routes.update(ip for p in peers.values() for ip in p.allowed_ips if ip not in _DEFAULT_ROUTES)
    return DesiredInterface(
        name=iface.name,
        implementation=inputs.implementation,
        private_key=inputs.private_key,
        listen_port=iface.listen_port,
        fwmark=iface.fwmark,
        mtu=iface.mtu,
        addresses=frozenset(addresses),
        routes=frozenset(minimal_routes(routes, addresses)),
        peers=peers,
        new_key_file=inputs.new_key_file if inputs.private_key is None else None,
    )


def device_peers(static: Mapping[str, Peer], mesh: Iterable[Peer]) -> dict[str, Peer]:
    """A device's peers by public key: every static peer, and each mesh peer whose key no
    static peer has. A static peer wins over a mesh peer with the same key: the operator
    said so explicitly. (A mesh node announcing this node's own public key was refused by
    mesh.view.Clearance.) The full reconcile passes the interface's peers; the service's
    step the few keys it touched (service/incremental.py)."""
    peers = dict(static)
    for mp in mesh:
        peers.setdefault(mp.public_key, mp)
    return peers


def static_peer(pc: PeerConfig, preshared_keys: Mapping[str, PresharedKey], resolve: Resolver) -> Peer:
    endpoint = None
    if pc.endpoint is not None:
        endpoint = resolve(pc.endpoint.host, pc.endpoint.port)
    return Peer(
        public_key=pc.public_key,
        allowed_ips=frozenset(pc.allowed_ips),
        endpoint=endpoint,
        persistent_keepalive=pc.persistent_keepalive,
        preshared_key=preshared_keys.get(pc.preshared_key_file) if pc.preshared_key_file else None,
        name=pc.name,
        source="static",
    )


def minimal_routes(routes: Iterable[str], addresses: Iterable[str]) -> set[str]:
    """Drop routes the kernel already has through an address's connected prefix, or that
    lie inside another route into the same interface: they would change nothing."""
    # Coverage is tested by masking to each prefix length in use (few), not by comparing
    # every pair: at 10,000 peers a pairwise test would cost 10^8 comparisons.
    covering: set[tuple[int, int, int]] = set()  # (version, prefixlen, network int)
    masks: dict[int, dict[int, int]] = {4: {}, 6: {}}  # version -> prefix length in use -> mask
    bits = {4: 32, 6: 128}

    def covered(version: int, addr: int, prefixlen: int) -> bool:
        for q, mask in masks[version].items():
            if q <= prefixlen and (version, q, addr & mask) in covering:
                return True
        return False

    def add(version: int, addr: int, prefixlen: int) -> None:
        covering.add((version, prefixlen, addr))
        masks[version][prefixlen] = ((1 << prefixlen) - 1) << (bits[version] - prefixlen)

    for a in addresses:
        net = ipaddress.ip_interface(a).network
        add(net.version, int(net.network_address), net.prefixlen)
    nets: set[tuple[Network, str]] = set()
    for r in routes:
        parsed = canonical_network(r)
        if parsed is None:
            net = ipaddress.ip_network(r)
            parsed, r = (net.version, net.prefixlen, int(net.network_address)), str(net)
        nets.add((parsed, r))
    kept: set[str] = set()
    for (version, prefixlen, addr), text in sorted(nets):
        if covered(version, addr, prefixlen):
            continue
        kept.add(text)
        add(version, addr, prefixlen)
    return kept
