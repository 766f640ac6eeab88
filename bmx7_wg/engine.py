"""One reconcile: configuration -> desired state -> plan against observed -> apply.

The CLI verbs and the service all go through `Engine`; this module holds the order of
the steps and the choices that need the live system (keys, backend, names).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from bmx7_wg import keys
from bmx7_wg.config.fastip import canonical_address
from bmx7_wg.config.model import Config, InterfaceConfig
from bmx7_wg.errors import BackendUnavailable, KeyFileError
from bmx7_wg.mesh.nodeid import MESH_NETWORK
from bmx7_wg.mesh.view import Refusal, keep_clear, reservations
from bmx7_wg.plan.actions import Action
from bmx7_wg.plan.desired import InterfaceInputs, desired_state
from bmx7_wg.plan.planner import plan
from bmx7_wg.plan.state import DesiredState, Implementation, ObservedInterface, ObservedState, Peer
from bmx7_wg.system import System

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshInputs:
    """What the mesh contributes to one interface (see meshview)."""

    peers: tuple[Peer, ...] = ()
    address: str | None = None
    routes: tuple[str, ...] = ()
    # bmx7 could not be read: keep the mesh peers and address the interface has, so a
    # bmx7 restart or a slow control socket never tears the mesh down.
    hold: bool = False


@dataclass(frozen=True)
class Plan:
    desired: DesiredState
    observed: ObservedState
    actions: list[Action]
    new_key_files: tuple[str, ...] = ()  # key files apply creates (plan only)
    # Mesh peers and networks refused because they clash with this node (mesh.view.keep_clear).
    refused: tuple[Refusal, ...] = ()


def resolve_endpoint(host: str, port: int) -> str | None:
    """Turn a configured host into the "ip:port" WireGuard takes; None if it cannot."""
    version = canonical_address(host)
    if version is not None:
        return f"[{host}]:{port}" if version == 6 else f"{host}:{port}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            log.warning("cannot resolve endpoint host %s (%s); its endpoint is left as it is", host, exc)
            return None
        ip = ipaddress.ip_address(str(infos[0][4][0]).split("%")[0])
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def choose_implementation(
    iface: InterfaceConfig,
    existing: ObservedInterface | None,
    kernel_ok: Callable[[], bool],
    userspace_ok: Callable[[], bool],
) -> Implementation:
    """Pick the WireGuard implementation for an interface; an existing one keeps its own."""
    have = existing.implementation if existing is not None else None
    if iface.backend == "auto":
        if have is not None:
            return have
        if kernel_ok():
            return "kernel"
        if userspace_ok():
            return "userspace"
        raise BackendUnavailable(
            f"interface {iface.name}: no WireGuard implementation available: the kernel has no "
            "WireGuard module and wireguard-go is not installed (apt install wireguard-go)"
        )
    if iface.backend == "kernel":
        if have == "kernel" or kernel_ok():
            return "kernel"
        raise BackendUnavailable(
            f'interface {iface.name}: backend = "kernel" but this kernel has no WireGuard support; '
            'load the wireguard module or set backend = "userspace" (needs wireguard-go)'
        )
    if have == "userspace" or userspace_ok():
        return "userspace"
    raise BackendUnavailable(
        f'interface {iface.name}: backend = "userspace" but wireguard-go is not installed '
        "(apt install wireguard-go)"
    )


def _kernel_ok() -> bool:
    from bmx7_wg.net.netlink import kernel_has_wireguard

    return kernel_has_wireguard()


def _userspace_ok() -> bool:
    from bmx7_wg.wireguard.wggo import find_wireguard_go

    return find_wireguard_go() is not None


class Engine:
    """Plans and applies one configuration against one System."""

    def __init__(self, system: System, *, session_keys: Mapping[str, keys.PrivateKey] | None = None):
        self.system = system
        # Keys of `key = "session"` interfaces made by this process (the service), by interface.
        self.session_keys: dict[str, keys.PrivateKey] = dict(session_keys or {})

    def make_plan(
        self,
        config: Config,
        *,
        create_keys: bool,
        mesh: Mapping[str, MeshInputs] | None = None,
        resolve: Callable[[str, int], str | None] = resolve_endpoint,
    ) -> Plan:
        declared = [i.name for i in config.interfaces]
        observed = self.system.observe(declared)
        inputs: dict[str, InterfaceInputs] = {}
        new_files: list[str] = []
        refused: list[Refusal] = []
        for iface in config.interfaces:
            existing = observed.interfaces.get(iface.name)
            implementation = choose_implementation(iface, existing, _kernel_ok, _userspace_ok)
            private_key, created = self._private_key(iface, existing, create_keys)
            if created:
                new_files.append(iface.private_key_file)
            m = (mesh or {}).get(iface.name, MeshInputs())
            if m.hold:
                m = _held_mesh(iface, existing)
            if m.peers:
                host = observed.host
                reserved = reservations(config.interfaces, host.addresses, host.routes, iface.name)
                clear = keep_clear(m.peers, reserved, private_key.public_key())
                m = replace(m, peers=clear.peers)
                refused.extend(clear.refusals)
            inputs[iface.name] = InterfaceInputs(
                implementation=implementation,
                private_key=private_key,
                preshared_keys=_preshared_keys(iface),
                mesh_peers=m.peers,
                mesh_address=m.address,
                mesh_routes=m.routes,
            )
        desired = desired_state(config, inputs, resolve)
        return Plan(desired, observed, plan(desired, observed), tuple(new_files), tuple(refused))

    def apply(self, p: Plan, on_done: Callable[[Action], None] = lambda a: None) -> None:
        implementations = {d.name: d.implementation for d in p.desired.interfaces}
        self.system.execute(p.actions, implementations, on_done)

    def _private_key(
        self, iface: InterfaceConfig, existing: ObservedInterface | None, create: bool
    ) -> tuple[keys.PrivateKey, bool]:
        """The interface's private key, and whether a key file is still to be created."""
        if iface.key == "session":
            if iface.name in self.session_keys:
                return self.session_keys[iface.name], False
            # A one-shot command keeps the key the device already has: only the service
            # makes a new session key, once, when it starts.
            if existing is not None and existing.device is not None and existing.device.private_key:
                return existing.device.private_key, False
            key = keys.PrivateKey.generate()
            self.session_keys[iface.name] = key
            return key, False
        path = iface.private_key_file
        try:
            return keys.read_key_file(path), False
        except KeyFileError:
            if os.path.lexists(path):
                raise
        if create:
            log.info("created private key file %s (mode 0600)", path)
            return keys.create_key_file(path), False
        # Planning only: stand in a fresh key so the plan shows what apply will do.
        return keys.PrivateKey.generate(), True


def _held_mesh(iface: InterfaceConfig, existing: ObservedInterface | None) -> MeshInputs:
    """The mesh part an interface has now: peers that are not static, its fd77 address."""
    if existing is None or existing.device is None:
        return MeshInputs()
    static = {p.public_key for p in iface.peers}
    peers = tuple(replace(p, source="mesh") for k, p in existing.device.peers.items() if k not in static)
    address = next((a for a in sorted(existing.addresses) if a.startswith("fd77:")), None)
    routes = tuple(r for r in existing.routes if r == MESH_NETWORK)
    return MeshInputs(peers=peers, address=address, routes=routes)


def _preshared_keys(iface: InterfaceConfig) -> dict[str, keys.PresharedKey]:
    out: dict[str, keys.PresharedKey] = {}
    for peer in iface.peers:
        if peer.preshared_key_file and peer.preshared_key_file not in out:
            out[peer.preshared_key_file] = keys.PresharedKey(keys.read_key_file(peer.preshared_key_file).raw)
    return out
