"""Build the desired state from the configuration, keys, the mesh view and name resolution.

Everything here is pure except what is passed in: key loading, the backend choice and
host-name resolution come as arguments, so tests can build desired states without root.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bmx7_wg.config.fastip import Network, canonical_network
from bmx7_wg.config.model import Config, InterfaceConfig, PeerConfig
from bmx7_wg.keys import PresharedKey, PrivateKey
from bmx7_wg.plan.state import DesiredInterface, DesiredState, Implementation, Peer

log = logging.getLogger(__name__)

Resolver = Callable[[str, int], str | None]  # (host, port) -> canonical "ip:port" or None
_DEFAULT_ROUTES = frozenset({"0.0.0.0/0", "::/0"})


@dataclass(frozen=True)
class InterfaceInputs:
    """What an interface's desired state needs besides its configuration."""

    implementation: Implementation
    private_key: PrivateKey
    preshared_keys: Mapping[str, PresharedKey]  # preshared_key_file path -> key
    mesh_peers: tuple[Peer, ...] = ()
    mesh_address: str | None = None  # "fd77:.../128": this node's tunnel address
    mesh_routes: tuple[str, ...] = ()  # e.g. ("fd77::/16",)


def desired_state(config: Config, inputs: Mapping[str, InterfaceInputs], resolve: Resolver) -> DesiredState:
    return DesiredState(tuple(desired_interface(i, inputs[i.name], resolve) for i in config.interfaces))


def desired_interface(iface: InterfaceConfig, inputs: InterfaceInputs, resolve: Resolver) -> DesiredInterface:
    peers: dict[str, Peer] = {}
    for pc in iface.peers:
        peers[pc.public_key] = static_peer(pc, inputs.preshared_keys, resolve)
    # Static peers win over mesh peers with the same key: the operator said so explicitly.
    # (A mesh node announcing our own public key was refused by mesh.view.keep_clear.)
    for mp in inputs.mesh_peers:
        peers.setdefault(mp.public_key, mp)

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
    )


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
