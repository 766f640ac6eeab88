"""The one comparison of desired and observed state.

`plan()` is pure and deterministic: the same inputs give the same actions in the same
order. `plan`, `apply --check` and `apply` all use it; nothing else compares state.
"""

from __future__ import annotations

from collections.abc import Mapping

from bmx7_wg.errors import ConflictError
from bmx7_wg.plan.actions import (
    Action,
    AddAddress,
    AddPeer,
    AddRoute,
    AdoptLink,
    CreateLink,
    DeleteLink,
    RemoveAddress,
    RemovePeer,
    RemoveRoute,
    SetFwmark,
    SetListenPort,
    SetMtu,
    SetPrivateKey,
    SetUp,
    UpdatePeer,
)
from bmx7_wg.plan.state import (
    DesiredInterface,
    DesiredState,
    Device,
    ObservedInterface,
    ObservedState,
    Peer,
)

EMPTY_DEVICE = Device()


def plan(desired: DesiredState, observed: ObservedState) -> list[Action]:
    """Return the actions that turn `observed` into `desired`, in the order to run them.

    Raises ConflictError when a declared name is taken by something that is not a
    WireGuard interface: bmx7-wg never deletes what it did not create.
    """
    actions: list[Action] = []
    declared = {d.name for d in desired.interfaces}
    for want in sorted(desired.interfaces, key=lambda d: d.name):
        if want.name in observed.sockets_elsewhere and want.name not in observed.interfaces:
            raise ConflictError(
                f"{want.name}: a wireguard-go of that name runs in another network namespace "
                "(its control socket in /run/wireguard is shared by all namespaces); bmx7-wg "
                "does not touch it (rename the interface in the configuration)"
            )
        actions.extend(_plan_interface(want, observed.interfaces.get(want.name)))
    for name in sorted(observed.interfaces):
        have = observed.interfaces[name]
        if have.managed and name not in declared:
            actions.append(DeleteLink(name, reason="no longer in the configuration"))
    return actions


def _plan_interface(want: DesiredInterface, have: ObservedInterface | None) -> list[Action]:
    name = want.name
    if have is not None and have.implementation is None:
        raise ConflictError(
            f"{name}: an interface of that name exists and is not a WireGuard interface; "
            "bmx7-wg does not touch it (rename the interface in the configuration)"
        )
    actions: list[Action] = []
    if have is not None and have.implementation != want.implementation:
        if not have.managed:
            raise ConflictError(
                f"{name}: exists as a {have.implementation} WireGuard interface not managed by "
                f"bmx7-wg, but the configuration asks for backend {want.implementation}"
            )
        actions.append(
            DeleteLink(
                name,
                reason=f"backend changes from {have.implementation} to {want.implementation}",
            )
        )
        have = None
    if have is None:
        actions.append(CreateLink(name, implementation=want.implementation))
        return actions + _configure(want, None)
    if not have.managed:
        actions.append(AdoptLink(name))
    return actions + _configure(want, have)


def _configure(want: DesiredInterface, have: ObservedInterface | None) -> list[Action]:
    """Actions for an interface that exists (have) or is being created (have is None)."""
    name = want.name
    actions: list[Action] = []
    device = have.device if have is not None and have.device is not None else EMPTY_DEVICE
    if have is None or have.mtu != want.mtu:
        actions.append(SetMtu(name, mtu=want.mtu))

    if device.private_key is None or device.private_key.clamped != want.private_key.clamped:
        actions.append(
            SetPrivateKey(name, private_key=want.private_key, public_key=want.private_key.public_key())
        )
    if want.listen_port is not None and device.listen_port != want.listen_port:
        actions.append(SetListenPort(name, listen_port=want.listen_port))
    if device.fwmark != want.fwmark:
        actions.append(SetFwmark(name, fwmark=want.fwmark))
    actions.extend(_plan_peers(name, want.peers, device.peers))

    have_addresses = have.addresses if have is not None else frozenset()
    for address in sorted(have_addresses - want.addresses):
        actions.append(RemoveAddress(name, address=address))
    for address in sorted(want.addresses - have_addresses):
        actions.append(AddAddress(name, address=address))
    if have is None or not have.up:
        actions.append(SetUp(name))
    # Routes need the link up (the kernel refuses a route on a down link).
    have_routes = have.routes if have is not None else frozenset()
    for network in sorted(have_routes - want.routes):
        actions.append(RemoveRoute(name, network=network))
    for network in sorted(want.routes - have_routes):
        actions.append(AddRoute(name, network=network))
    return actions


def _plan_peers(name: str, want: Mapping[str, Peer], have: Mapping[str, Peer]) -> list[Action]:
    # Removals first: an allowed-ip handed from one peer to another must leave the old
    # peer before the new one claims it, or the device would move it back and forth.
    removals: list[Action] = [RemovePeer(name, public_key=k) for k in sorted(have.keys() - want.keys())]
    updates: list[Action] = []
    additions: list[Action] = []
    # Equal peers (the common case at scale) are dropped before sorting, in one pass.
    for key in sorted(k for k, peer in want.items() if have.get(k) != peer):
        peer = want[key]
        current = have.get(key)
        if current is None:
            additions.append(AddPeer(name, peer=peer))
            continue
        changed = _changed_fields(peer, current)
        if changed:
            updates.append(UpdatePeer(name, peer=peer, changed=changed))
    return removals + updates + additions


def _changed_fields(want: Peer, have: Peer) -> tuple[str, ...]:
    changed: list[str] = []
    if want.allowed_ips != have.allowed_ips:
        changed.append("allowed_ips")
    # A peer without a configured endpoint keeps whatever endpoint it roamed to.
    if want.endpoint is not None and want.endpoint != have.endpoint:
        changed.append("endpoint")
    if want.persistent_keepalive != have.persistent_keepalive:
        changed.append("persistent_keepalive")
    if want.preshared_key != have.preshared_key:
        changed.append("preshared_key")
    return tuple(changed)
