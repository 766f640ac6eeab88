"""The live system: read observed state and carry out actions.

This is where the planner's actions meet the boundaries: netlink for links, addresses
and routes; the UAPI socket (wireguard-go) or generic netlink (kernel) for the device.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from bmx7_wg.errors import ApplyError, Bmx7WgError
from bmx7_wg.plan.actions import (
    Action,
    AddAddress,
    AddRoute,
    AdoptLink,
    CreateLink,
    DeleteLink,
    DeviceChange,
    RemoveAddress,
    RemoveRoute,
    SetMtu,
    SetUp,
)
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
    from bmx7_wg.net.netlink import LinkInfo, Netlink
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

            self._netlink = Netlink()
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

    def observe(self, declared: Iterable[str], *, all_wireguard: bool = False) -> ObservedState:
        """Read every managed interface and every declared name (and, for `show`, every
        WireGuard interface). Foreign interfaces are read, never written.

        Managed means a WireGuard link of this namespace carrying our alias: the alias
        alone proves nothing (anyone can set it on any link), so a bridge or a plain TUN
        with it is foreign. The links' addresses and routes (`host`) come along, for the
        mesh view; links about to be deleted (managed, no longer declared) are left out.
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
            if implementation is not None:
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
    ) -> None:
        """Run actions in order. Device actions for one interface go out as one change.

        On failure raises ApplyError naming what failed and what was already done; what is
        done stays done (the next apply plans only the rest)."""
        done: list[Action] = []  # described only for an error: 10,000 peers are 10,000 texts

        def finished(batch: list[Action]) -> None:
            for a in batch:
                done.append(a)
                on_done(a)

        i = 0
        while i < len(actions):
            action = actions[i]
            j = i + 1
            if action.device:
                while j < len(actions) and actions[j].device and actions[j].interface == action.interface:
                    j += 1
            batch = actions[i:j]
            try:
                if action.device:
                    change = DeviceChange.collect(action.interface, batch)
                    self.device(implementations[action.interface]).apply(change)
                else:
                    self._apply_link(action)
            except Bmx7WgError as exc:
                raise ApplyError(
                    f"{exc} (while trying: {_summary(batch)})", [a.describe() for a in done]
                ) from None
            finished(batch)
            i = j

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
            nl.add_route(name, action.network, ROUTE_PROTO)
        elif isinstance(action, RemoveRoute):
            nl.remove_route(name, action.network, ROUTE_PROTO)
        else:  # pragma: no cover - every action kind is handled above
            raise TypeError(f"unknown action {action!r}")


def _summary(batch: list[Action]) -> str:
    """The changes of a failed step in words: a device batch can hold thousands of peers,
    and a message must stay readable, so at most three are named."""
    described = [a.describe().split(": ", 1)[-1] for a in batch[:3]]
    if len(batch) > 3:
        described.append(f"and {len(batch) - 3} more")
    return ", ".join(described)
