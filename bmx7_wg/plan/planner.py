"""The one comparison of desired and observed state.

`plan()` is pure and deterministic: the same inputs give the same actions in the same
order. `plan`, `apply --check` and `apply` all use it; nothing else compares state.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from bmx7_wg.errors import ConflictError, UsageError
from bmx7_wg.plan.actions import (
    Action,
    AddAddress,
    AddPeer,
    AddRoute,
    AdoptLink,
    CreateKeyFile,
    CreateLink,
    DeleteLink,
    PublishAnnouncement,
    RegisterSms,
    RemoveAddress,
    RemovePeer,
    RemoveRoute,
    SetFwmark,
    SetListenPort,
    SetMtu,
    SetPrivateKey,
    SetUp,
    UnregisterSms,
    UpdatePeer,
    WithdrawAnnouncement,
    WriteHostNames,
)
from bmx7_wg.plan.desired import Publication
from bmx7_wg.plan.state import (
    DesiredInterface,
    DesiredState,
    Device,
    ObservedAnnouncement,
    ObservedInterface,
    ObservedState,
    Peer,
)

EMPTY_DEVICE = Device()


def plan(desired: DesiredState, observed: ObservedState) -> list[Action]:
    """Return the actions that turn `observed` into `desired`, in the order to run them.

    The order makes a plan converge in one apply: what frees a resource runs before what
    takes it. Key files first; then links that go (a renamed interface's old link frees
    its listen port, addresses and routes); then routes and addresses that go; then each
    interface's link, device, addresses and routes, an interface that takes a listen port
    after the one that gives it up; the mesh announcement last, once the device has the
    key and port it announces.

    Raises ConflictError when a declared name is taken by something that is not a
    WireGuard interface: bmx7-wg never deletes what it did not create.
    """
    declared = {d.name for d in desired.interfaces}
    new_keys: list[Action] = []
    deletes: list[Action] = []
    releases: list[Action] = []
    setups: dict[str, list[Action]] = {}
    for want in sorted(desired.interfaces, key=lambda d: d.name):
        if want.name in observed.sockets_elsewhere and want.name not in observed.interfaces:
            raise ConflictError(
                f"{want.name}: a wireguard-go of that name runs in another network namespace "
                "(its control socket in /run/wireguard is shared by all namespaces); bmx7-wg "
                "does not touch it (rename the interface in the configuration)"
            )
        if want.private_key is None and want.new_key_file:
            new_keys.append(CreateKeyFile(want.name, path=want.new_key_file))
        delete, release, setup = _plan_interface(want, observed.interfaces.get(want.name))
        deletes += delete
        releases += release
        setups[want.name] = setup
    for name in sorted(observed.interfaces):
        have = observed.interfaces[name]
        if have.managed and name not in declared:
            deletes.append(DeleteLink(name, reason="no longer in the configuration"))
    deleted = {a.interface for a in deletes}
    actions = new_keys + deletes + releases
    for name in port_order(desired, observed, deleted):
        actions += setups[name]
    return actions + _plan_announcement(desired, observed)


def plan_down(
    observed: ObservedState, names: Sequence[str], mesh: tuple[str, Publication] | None = None
) -> list[Action]:
    """What `down` does: withdraw this node's mesh announcement if its interface goes (so
    that other nodes drop it before its link is gone), then delete the links.

    `names` are the interfaces asked for (none: every managed one); `mesh` is the mesh
    interface and where its announcement is published (`observed.announcement` says what
    is published now). Raises UsageError for a name that is not here and ConflictError
    for an interface bmx7-wg does not manage: nothing is planned then.
    """
    targets = list(dict.fromkeys(names)) or sorted(n for n, i in observed.interfaces.items() if i.managed)
    for name in targets:
        iface = observed.interfaces.get(name)
        if iface is None:
            raise UsageError(f"down: no interface named {name}")
        if not iface.managed:
            raise ConflictError(f"down: {name} is not managed by bmx7-wg; it is left alone")
    actions: list[Action] = []
    # Down for all also withdraws an announcement whose interface is gone already (a
    # down that could not withdraw it, an interface deleted by hand).
    gone = not names and mesh is not None and mesh[0] not in observed.interfaces
    if mesh is not None and (mesh[0] in targets or gone):
        actions += _withdraw(mesh[0], mesh[1], observed.announcement)
    return actions + [DeleteLink(n, reason="bmx7-wg down") for n in targets]


def _withdraw(
    interface: str, where: Publication, have: ObservedAnnouncement | None, *, file: bool = True
) -> list[Action]:
    """Stop publishing: remove the sendSms file if it is there, and the SMS name if bmx7
    is told to publish it (unknown while bmx7 does not answer: it forgets the name when
    it restarts)."""
    if have is None or have.sms != where.sms:
        return []
    actions: list[Action] = []
    if file and (have.file_exists or have.announcement is not None):
        actions.append(WithdrawAnnouncement(interface, runtime_dir=where.runtime_dir, sms=where.sms))
    if have.registered:
        actions.append(UnregisterSms(interface, runtime_dir=where.runtime_dir, sms=where.sms))
    return actions


def plan_rollback(
    before: DesiredState,
    before_published: ObservedAnnouncement | None,
    observed: ObservedState,
    mesh: tuple[str, Publication] | None = None,
) -> list[Action]:
    """What puts the system back as it was before an `apply --confirm`: `before` is the
    state read then, taken as the desired state (the planner deletes the links that
    apply created and restores keys, peers, addresses and routes), and the mesh
    announcement as it was (`before_published`; published, withdrawn or unregistered
    again). `mesh` is where the applied configuration publishes."""
    actions = plan(before, observed)
    if mesh is None:
        return actions
    interface, where = mesh
    had = before_published if before_published is not None and before_published.sms == where.sms else None
    have = observed.announcement
    if have is None or have.sms != where.sms:
        return actions
    # Nothing readable was published: take away what apply published (a file that was
    # there but did not parse is left as it is).
    had_none = had is None or (had.announcement is None and not had.file_exists)
    if had_none and have.announcement is not None:
        actions.append(WithdrawAnnouncement(interface, runtime_dir=where.runtime_dir, sms=where.sms))
    if had is None or had.registered is False:
        actions = [a for a in actions if not isinstance(a, RegisterSms)]
        if have.registered:
            actions.append(UnregisterSms(interface, runtime_dir=where.runtime_dir, sms=where.sms))
    return actions


def link_plan(desired: DesiredState, observed: ObservedState) -> list[Action]:
    """What `plan()` would do to links, addresses and routes alone, for a state read
    without its WireGuard devices (`System.observe(devices=False)`): how the service
    checks a link event against what its last reconcile left. Peers, device settings,
    key files and the announcement are left out."""
    links = DesiredState(tuple(replace(d, peers={}) for d in desired.interfaces))
    return [a for a in plan(links, observed) if not a.device and not isinstance(a, CreateKeyFile)]


def port_order(desired: DesiredState, observed: ObservedState, deleted: set[str]) -> list[str]:
    """Declared interface names, each one that takes a listen port after the interface that
    gives it up (name order otherwise). A swap of ports between two interfaces is a cycle:
    those keep name order, and one of them fails until the other has moved."""
    wanted = {d.name: d.listen_port for d in desired.interfaces}
    holder: dict[int, str] = {}
    for name, have in observed.interfaces.items():
        if name in deleted or have.device is None or not have.device.listen_port:
            continue
        held = have.device.listen_port
        if name in wanted and wanted[name] not in (None, held):
            holder[held] = name  # gives `held` up
    after: dict[str, set[str]] = {name: set() for name in wanted}  # name -> who must go first
    for name, port in wanted.items():
        first = holder.get(port) if port is not None else None
        if first is not None and first != name:
            after[name].add(first)
    order: list[str] = []
    left = sorted(wanted)
    while left:
        ready = [n for n in left if not after[n] - set(order)]
        if not ready:
            ready = left[:1]  # a cycle: keep name order
        order.append(ready[0])
        left.remove(ready[0])
    return order


def _plan_interface(
    want: DesiredInterface, have: ObservedInterface | None
) -> tuple[list[Action], list[Action], list[Action]]:
    """(link deletions, releases of addresses and routes, everything else) for one interface."""
    name = want.name
    if have is not None and have.implementation is None:
        raise ConflictError(
            f"{name}: an interface of that name exists and is not a WireGuard interface; "
            "bmx7-wg does not touch it (rename the interface in the configuration)"
        )
    deletes: list[Action] = []
    if have is not None and have.implementation != want.implementation:
        if not have.managed:
            raise ConflictError(
                f"{name}: exists as a {have.implementation} WireGuard interface not managed by "
                f"bmx7-wg, but the configuration asks for backend {want.implementation}"
            )
        deletes.append(
            DeleteLink(
                name,
                reason=f"backend changes from {have.implementation} to {want.implementation}",
            )
        )
        have = None
    if have is None:
        return deletes, [], [CreateLink(name, implementation=want.implementation), *_configure(want, None)]
    setup: list[Action] = []
    if not have.managed:
        setup.append(AdoptLink(name))
    releases: list[Action] = [RemoveRoute(name, network=n) for n in sorted(have.routes - want.routes)]
    releases += [RemoveAddress(name, address=a) for a in sorted(have.addresses - want.addresses)]
    return deletes, releases, setup + _configure(want, have)


def _configure(want: DesiredInterface, have: ObservedInterface | None) -> list[Action]:
    """What an interface that exists (have) or is being created (have is None) takes:
    its settings, device, addresses and routes (releases are planned apart, earlier)."""
    name = want.name
    actions: list[Action] = []
    device = have.device if have is not None and have.device is not None else EMPTY_DEVICE
    if have is None or have.mtu != want.mtu:
        actions.append(SetMtu(name, mtu=want.mtu))

    if want.private_key is None:
        # A key apply makes (a key file it creates, or a session key): none to compare or show.
        actions.append(SetPrivateKey(name, key_file=want.new_key_file))
    elif device.private_key is None or device.private_key.clamped != want.private_key.clamped:
        actions.append(
            SetPrivateKey(name, private_key=want.private_key, public_key=want.private_key.public_key())
        )
    if want.listen_port is not None and device.listen_port != want.listen_port:
        actions.append(SetListenPort(name, listen_port=want.listen_port))
    if device.fwmark != want.fwmark:
        actions.append(SetFwmark(name, fwmark=want.fwmark))
    actions.extend(plan_peers(name, want.peers, device.peers))

    have_addresses = have.addresses if have is not None else frozenset()
    for address in sorted(want.addresses - have_addresses):
        actions.append(AddAddress(name, address=address))
    if have is None or not have.up:
        actions.append(SetUp(name))
    # Routes need the link up (the kernel refuses a route on a down link).
    have_routes = have.routes if have is not None else frozenset()
    for network in sorted(want.routes - have_routes):
        actions.append(AddRoute(name, network=network))
    return actions


def _plan_announcement(desired: DesiredState, observed: ObservedState) -> list[Action]:
    """Publish this node's mesh announcement and have bmx7 carry it, if either differs."""
    want = desired.announcement
    if want is None:
        return []
    have = observed.announcement if observed.announcement and observed.announcement.sms == want.sms else None
    iface = next((d for d in desired.interfaces if d.name == want.interface), None)
    key_file = iface.new_key_file if iface is not None and iface.private_key is None else None
    actions: list[Action] = []
    a = want.announcement
    if have is None or have.announcement != a or a.public_key is None:
        actions.append(
            PublishAnnouncement(
                want.interface,
                runtime_dir=want.runtime_dir,
                sms=want.sms,
                public_key=a.public_key,
                listen_port=a.listen_port,
                networks=a.networks,
                key_file=key_file,
            )
        )
    if have is None or have.registered is False:
        actions.append(RegisterSms(want.interface, runtime_dir=want.runtime_dir, sms=want.sms))
    return actions


def plan_peers(name: str, want: Mapping[str, Peer], have: Mapping[str, Peer]) -> list[Action]:
    """The peer changes of one device: `want` and `have` may be the whole device or the
    same few keys of it (the service's step between full reconciles)."""
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


def plan_host_names(
    interface: str, path: str, want: tuple[str, ...], have: tuple[str, ...] | None
) -> list[Action]:
    """The mesh names' block of a hosts file: `want` its lines now, `have` the block the
    file holds (None: none). An empty `want` removes the block; a file without one keeps
    having none."""
    if want == (have or ()) and (want or have is None):
        return []
    return [WriteHostNames(interface, path=path, lines=want)]


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
