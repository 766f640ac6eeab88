"""One reconcile: configuration -> desired state -> plan against observed -> apply.

The CLI verbs and the service all go through `reconcile()`; this module holds the order
of the steps and the choices that need the live system (keys, backend, names).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bmx7_wg import keys, lock
from bmx7_wg.base.nodeid import MESH_NETWORK
from bmx7_wg.config.model import Config, InterfaceConfig
from bmx7_wg.errors import ApplyError, BackendUnavailable, KeyFileError, StateReadError
from bmx7_wg.mesh.view import Clearance, Refusal, reservations
from bmx7_wg.plan.actions import Action
from bmx7_wg.plan.desired import InterfaceInputs, MeshInputs, Resolver, desired_state
from bmx7_wg.plan.execute import Failure, Outcome
from bmx7_wg.plan.planner import plan
from bmx7_wg.plan.state import (
    DesiredState,
    Implementation,
    ObservedAnnouncement,
    ObservedInterface,
    ObservedState,
    Peer,
)
from bmx7_wg.system import System

if TYPE_CHECKING:
    from bmx7_wg.mesh.bmx7 import ReceivedCache
    from bmx7_wg.mesh.grace import MeshGrace
    from bmx7_wg.mesh.session import MeshSession

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    desired: DesiredState
    observed: ObservedState
    actions: list[Action]
    # Mesh peers and networks refused because they clash with this node (mesh.view.Clearance).
    refused: tuple[Refusal, ...] = ()
    # Interface -> its mesh peers as planned (announced or held, this node's rules applied).
    mesh_peers: Mapping[str, tuple[Peer, ...]] = field(default_factory=dict)
    # Interface -> this node's rules as they were applied (the service's steps reuse them:
    # indexing the namespace's routes costs ~16 ms per 1,000).
    clearances: Mapping[str, Clearance] = field(default_factory=dict)


def _resolve_all_now(config: Config) -> Resolver:
    """Every endpoint name of the configuration looked up at once, for a bounded time
    in all (net/resolve.py): what one-shot commands use."""
    from bmx7_wg.net.resolve import resolve_now

    hosts = {p.endpoint.host for i in config.interfaces for p in i.peers if p.endpoint is not None}
    return resolve_now(hosts)


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
    from bmx7_wg.wireguard.probe import kernel_has_wireguard

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
        mesh: Mapping[str, MeshInputs] | None = None,
        published: ObservedAnnouncement | None = None,
        resolve: Resolver | None = None,
        check: bool = False,
    ) -> Plan:
        """Read the system, build the desired state, compare. Writes nothing: a key file
        that does not exist yet is a planned action (CreateKeyFile), not a key made now.

        `resolve` turns a configured endpoint host into "ip:port": by default every name
        is looked up at once, for a bounded time (the service passes its own, cached
        one). `published` is this node's mesh announcement as it is now.
        In `check` mode a session key that apply would make is not made either.
        """
        declared = [i.name for i in config.interfaces]
        observed = replace(observe(self.system, declared), announcement=published)
        inputs: dict[str, InterfaceInputs] = {}
        refused: list[Refusal] = []
        planned_mesh: dict[str, tuple[Peer, ...]] = {}
        clearances: dict[str, Clearance] = {}
        for iface in config.interfaces:
            existing = observed.interfaces.get(iface.name)
            implementation = choose_implementation(iface, existing, _kernel_ok, _userspace_ok)
            private_key, new_key_file = self._private_key(iface, existing, check)
            m = (mesh or {}).get(iface.name, MeshInputs())
            if m.hold:
                m = _held_mesh(iface, existing)
            if m.peers:
                host = observed.host
                reserved = reservations(config.interfaces, host.addresses, host.routes, iface.name)
                own = private_key.public_key() if private_key is not None else None
                clearances[iface.name] = Clearance(reserved, own)
                clear = clearances[iface.name](m.peers)
                m = replace(m, peers=clear.peers)
                refused.extend(clear.refusals)
            planned_mesh[iface.name] = m.peers
            inputs[iface.name] = InterfaceInputs(
                implementation=implementation,
                private_key=private_key,
                preshared_keys=_preshared_keys(iface),
                mesh_peers=m.peers,
                mesh_address=m.address,
                mesh_routes=m.routes,
                new_key_file=new_key_file,
                publish=m.publish,
            )
        desired = desired_state(config, inputs, resolve or _resolve_all_now(config))
        return Plan(desired, observed, plan(desired, observed), tuple(refused), planned_mesh, clearances)

    def apply(self, p: Plan, on_done: Callable[[Action], None] = lambda a: None) -> Outcome:
        implementations = {d.name: d.implementation for d in p.desired.interfaces}
        return self.system.execute(p.actions, implementations, on_done)

    def _private_key(
        self, iface: InterfaceConfig, existing: ObservedInterface | None, check: bool
    ) -> tuple[keys.PrivateKey | None, str | None]:
        """The interface's private key; or None and the key file that apply will create
        (or, for a session key in check mode, None and None: apply makes one)."""
        if iface.key == "session":
            if iface.name in self.session_keys:
                return self.session_keys[iface.name], None
            # A one-shot command keeps the key the device already has: only the service
            # makes a new session key, once, when it starts.
            if existing is not None and existing.device is not None and existing.device.private_key:
                return existing.device.private_key, None
            if check:
                return None, None  # a key shown now would not be the one apply makes
            key = keys.PrivateKey.generate()
            self.session_keys[iface.name] = key
            return key, None
        path = iface.private_key_file
        try:
            return keys.read_key_file(path), None
        except KeyFileError:
            if os.path.lexists(path):
                raise
        return None, path


@dataclass(frozen=True)
class Reconciled:
    """What one reconcile planned and, unless in check mode, what came of it."""

    plan: Plan
    outcome: Outcome | None  # None: check mode, nothing was tried
    mesh: MeshSession

    @property
    def actions(self) -> list[Action]:
        """What was done (apply), or what would be done (check mode)."""
        return self.plan.actions if self.outcome is None else self.outcome.done

    @property
    def failures(self) -> list[Failure]:
        return [] if self.outcome is None else self.outcome.failures


def reconcile(
    engine: Engine,
    config: Config,
    *,
    check: bool,
    verb: str,
    resolve: Resolver | None = None,
    grace: MeshGrace | None = None,
    on_mesh: Callable[[MeshSession], None] = lambda m: None,
    on_done: Callable[[Action], None] = lambda a: None,
    received_cache: ReceivedCache | None = None,
) -> Reconciled:
    """One reconcile, for `plan`, `apply` and the service alike: read the mesh and the
    system, plan, and (unless `check`) carry the plan out under this network namespace's
    lock (`verb` says who holds it). Failed actions are in the result, not raised: the
    caller reports them (cli: exit 5) or retries (the service).

    The service passes `grace` (recently vanished mesh peers are kept, mesh/grace.py),
    its cached `resolve`, and `on_mesh`, called with what was read of the mesh before
    planning (it follows bmx7's restarts there), and its `received_cache` (announcement
    files unchanged since the last read are not read again).
    """
    from bmx7_wg.mesh.session import mesh_inputs

    with contextlib.nullcontext() if check else lock.held(verb):
        mesh = mesh_inputs(config, grace=grace, cache=received_cache)
        on_mesh(mesh)
        p = engine.make_plan(
            config, mesh=mesh.inputs, published=mesh.published, resolve=resolve, check=check
        )
        mesh.add_refusals(p.refused)
        outcome = None if check else engine.apply(p, on_done)
    return Reconciled(p, outcome, mesh)


def observe(system: System, declared: Iterable[str], *, all_wireguard: bool = False) -> ObservedState:
    """The system's state; a failure to read it is a StateReadError (nothing was changed),
    not a change that failed half-way."""
    try:
        return system.observe(declared, all_wireguard=all_wireguard)
    except ApplyError as exc:
        raise StateReadError(f"cannot read the current state: {exc}; nothing was changed") from exc


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
