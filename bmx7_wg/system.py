"""The live system: read observed state and carry out actions.

This is where the planner's actions meet the boundaries: netlink for links, addresses
and routes; the UAPI socket (wireguard-go) or generic netlink (kernel) for the device.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING

from bmx7_wg.errors import ApplyError, KeyFileError, ResourceConflict
from bmx7_wg.keys import PrivateKey
from bmx7_wg.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    AdoptLink,
    CreateKeyFile,
    CreateLink,
    DeleteLink,
    DeviceChange,
    PublishAnnouncement,
    RegisterSms,
    RemoveAddress,
    RemoveRoute,
    SetMtu,
    SetPrivateKey,
    SetUp,
    UnregisterSms,
    WithdrawAnnouncement,
    WriteHostNames,
)
from bmx7_wg.plan.execute import Outcome, execute
from bmx7_wg.plan.state import (
    OWNER_ALIAS,
    ROUTE_PROTO,
    HostNetworks,
    Implementation,
    ObservedInterface,
    ObservedState,
)
from bmx7_wg.wireguard.uapi import DEFAULT_SOCKET_DIR, UapiClient

if TYPE_CHECKING:
    from bmx7_wg.net.netlink import LinkInfo, Netlink, RouteStack
    from bmx7_wg.wireguard.kernel import KernelWireGuard

log = logging.getLogger(__name__)

SOCKET_DIR = os.environ.get("BMX7_WG_SOCKET_DIR", DEFAULT_SOCKET_DIR)


class System:
    """One connection to the kernel and the WireGuard devices of this network namespace."""

    def __init__(self, socket_dir: str = SOCKET_DIR) -> None:
        self.uapi = UapiClient(socket_dir)
        self.socket_dir = socket_dir
        self._netlink: Netlink | None = None
        self._kernel: KernelWireGuard | None = None

    def __enter__(self) -> System:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._netlink is not None:
            self._netlink.close()
            self._netlink = None
        if self._kernel is not None:
            self._kernel.close()
            self._kernel = None

    @property
    def netlink(self) -> Netlink:
        if self._netlink is None:
            from bmx7_wg.net.netlink import Netlink

            self._netlink = Netlink(route_stack())
        return self._netlink

    @property
    def kernel(self) -> KernelWireGuard:
        if self._kernel is None:
            from bmx7_wg.wireguard.kernel import KernelWireGuard

            self._kernel = KernelWireGuard()
        return self._kernel

    # -- reading -------------------------------------------------------------------

    def implementation_of(self, link: LinkInfo, served_here: frozenset[str]) -> Implementation | None:
        """The WireGuard implementation behind a link of this namespace, or None.

        A TUN link is wireguard-go's only if the daemon behind the socket of its name
        runs in this namespace (`served_here`, from UapiClient.served_here): the socket
        directory is shared by every namespace, and a plain TUN named like another
        namespace's device must not lead us to that device.
        """
        if link.kind == "wireguard":
            return "kernel"
        if link.kind == "tun" and link.name in served_here:
            return "userspace"
        return None

    def observe(
        self, declared: Iterable[str], *, all_wireguard: bool = False, devices: bool = True
    ) -> ObservedState:
        """Read every managed interface and every declared name (and, for `show`, every
        WireGuard interface). Foreign interfaces are read, never written.

        Managed means a WireGuard link of this namespace carrying our alias: the alias
        alone proves nothing (anyone can set it on any link), so a bridge or a plain TUN
        with it is foreign. The links' addresses and routes (`host`) come along, for the
        mesh view; links about to be deleted (managed, no longer declared) are left out.
        With `devices` False the WireGuard devices are not read (`device` is None): the
        links, addresses and routes alone, what the service checks on rtnetlink events.
        """
        wanted = set(declared)
        result: dict[str, ObservedInterface] = {}
        routes = self.netlink.link_routes(ROUTE_PROTO)
        links = self.netlink.links()
        # Names a daemon answers for but that have no link here: another namespace's, or
        # one of ours shutting down after its link was deleted (served_here tells which).
        answering = {n for n in wanted - links.keys() if self.uapi.answers(n)}
        served_here: frozenset[str] = frozenset()
        if answering or any(i.kind == "tun" for i in links.values()):
            served_here = self.uapi.served_here()
        host_addresses: dict[str, frozenset[str]] = {}
        host_routes: dict[str, frozenset[str]] = {}
        for name, link in links.items():
            implementation = self.implementation_of(link, served_here)
            managed = link.alias == OWNER_ALIAS and implementation is not None
            if not (managed and name not in wanted):
                host_addresses[name] = link.addresses
                host_routes[name] = routes.every.get(link.ifindex, frozenset())
            if not (managed or name in wanted or (all_wireguard and implementation)):
                continue
            device = None
            if implementation is not None and devices:
                device = self.device(implementation).get(name)
            result[name] = ObservedInterface(
                name=name,
                ifindex=link.ifindex,
                implementation=implementation,
                managed=managed,
                mtu=link.mtu,
                up=link.up,
                addresses=link.addresses,
                routes=routes.ours.get(link.ifindex, frozenset()),
                device=device,
            )
        host = HostNetworks(host_addresses, host_routes)
        return ObservedState(result, host, frozenset(answering - served_here))

    def device(self, implementation: Implementation) -> KernelWireGuard | UapiClient:
        """The backend of one implementation: both read a device (`get`) and change it
        (`apply`) alike; only creating the link differs (see `_apply_link`)."""
        return self.kernel if implementation == "kernel" else self.uapi

    # -- changing ------------------------------------------------------------------

    def execute(
        self,
        actions: list[Action],
        implementations: Mapping[str, Implementation],
        on_done: Callable[[Action], None] = lambda a: None,
    ) -> Outcome:
        """Carry out actions in order (see plan/execute.py): device actions of one interface
        go out as one change; a failure fails only its action and what needs it. Errors
        keep their type in the outcome's failures; nothing is raised for them."""
        new_keys: dict[str, PrivateKey] = {}  # key file -> the key CreateKeyFile wrote

        def step(batch: list[Action]) -> list[Action]:
            batch = [_with_new_key(a, new_keys) for a in batch]
            first = batch[0]
            if first.device:
                change = DeviceChange.collect(first.interface, batch)
                self.device(implementations[first.interface]).apply(change)
            elif isinstance(first, CreateKeyFile):
                from bmx7_wg import keys

                new_keys[first.path] = keys.create_key_file(first.path)
                log.info("created private key file %s (mode 0600)", first.path)
            elif isinstance(first, (PublishAnnouncement, RegisterSms, WithdrawAnnouncement, UnregisterSms)):
                _publish(first)
            elif isinstance(first, WriteHostNames):
                from bmx7_wg.net import hostsfile

                hostsfile.write_block(first.path, first.lines)
            else:
                self._apply_link(first)
            return batch

        return execute(actions, step, on_done)

    def _apply_link(self, action: Action) -> None:
        nl = self.netlink
        name = action.interface
        if isinstance(action, CreateLink):
            if action.implementation == "kernel":
                nl.create_wireguard(name)
            else:
                from bmx7_wg.wireguard.wggo import start as start_wireguard_go

                start_wireguard_go(name, self.socket_dir)
                nl.wait_for_link(name)
                # wireguard-go's tun would get an fe80 address at link-up; kernel
                # WireGuard gets none. Keep both alike.
                nl.disable_ipv6_autoconf(name)
            # Mark it at once: if anything later fails, the next apply still knows it is ours.
            nl.set_alias(name, OWNER_ALIAS)
        elif isinstance(action, AdoptLink):
            nl.set_alias(name, OWNER_ALIAS)
        elif isinstance(action, DeleteLink):
            nl.delete(name)
        elif isinstance(action, SetMtu):
            nl.set_mtu(name, action.mtu)
        elif isinstance(action, SetUp):
            nl.set_up(name)
        elif isinstance(action, AddAddress):
            nl.add_address(name, action.address)
        elif isinstance(action, RemoveAddress):
            nl.remove_address(name, action.address)
        elif isinstance(action, AddRoute):
            from bmx7_wg.net.netlink import NetlinkOperationError

            try:
                nl.add_route(name, action.network, ROUTE_PROTO)
            except NetlinkOperationError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                # Ours would have been seen (and left alone): this one is not bmx7-wg's.
                raise ResourceConflict(
                    f"{name}: cannot add route {action.network}: another route to "
                    f"{action.network} is in the way (one bmx7-wg does not own, or one "
                    "through another interface); bmx7-wg leaves it alone"
                ) from exc
        elif isinstance(action, RemoveRoute):
            nl.remove_route(name, action.network, ROUTE_PROTO)
        else:  # pragma: no cover - every action kind is handled above
            raise TypeError(f"unknown action {action!r}")


def route_stack() -> RouteStack:
    """Which rtnetlink socket this process talks through: pyroute2's where the kernel has
    WireGuard (what `backend = "auto"` picks; its generic netlink imports pyroute2 anyway,
    and there net/rtnl.py saved nothing), the standard library's (net/rtnl.py) where it has
    not: wireguard-go, with no pyroute2 import, half of each command's time. Decided by
    bench/paths.py on both backends (HACKING.md, "Speed paths"). A `backend = "userspace"`
    interface on a kernel with WireGuard is served by pyroute2's socket too: correct, and
    ~0.1 s slower per command."""
    from bmx7_wg.wireguard.probe import kernel_has_wireguard

    return "pyroute2" if kernel_has_wireguard() else "rtnl"


def _with_new_key(action: Action, new_keys: Mapping[str, PrivateKey]) -> Action:
    """The action with the key its key file got in this apply (planning knew only the file)."""
    if isinstance(action, SetPrivateKey) and action.private_key is None:
        key = _new_key(action.key_file, new_keys)
        return replace(action, private_key=key, public_key=key.public_key())
    if isinstance(action, PublishAnnouncement) and action.public_key is None and action.key_file:
        return replace(action, public_key=_new_key(action.key_file, new_keys).public_key())
    return action


def _new_key(path: str | None, new_keys: Mapping[str, PrivateKey]) -> PrivateKey:
    if path is None or path not in new_keys:
        # Only a plan made in check mode lacks a key without a file: it is never executed.
        raise KeyFileError(f"{path or 'session key'}: no key was made in this apply")
    return new_keys[path]


def _publish(action: PublishAnnouncement | RegisterSms | WithdrawAnnouncement | UnregisterSms) -> None:
    from bmx7_wg.mesh.bmx7 import Bmx7Runtime

    runtime = Bmx7Runtime(action.runtime_dir)
    try:
        if isinstance(action, RegisterSms):
            runtime.register_sms(action.sms)
        elif isinstance(action, UnregisterSms):
            runtime.unregister_sms(action.sms)
        elif isinstance(action, WithdrawAnnouncement):
            runtime.withdraw(action.sms)
        else:
            from bmx7_wg.mesh.announce import format_announcement

            if action.public_key is None:
                raise KeyFileError(f"{action.interface}: no public key to announce")
            data = format_announcement(action.public_key, action.listen_port, action.networks)
            runtime.publish(action.sms, data)
    except OSError as exc:
        # A read-only or vanished sendSms directory: this action fails, named, not the run.
        path = os.path.join(runtime.send_dir, action.sms)
        raise ApplyError(f"{action.interface}: cannot {action.kind.replace('_', ' ')} {path}: "
                         f"{exc.strerror or exc}") from exc
