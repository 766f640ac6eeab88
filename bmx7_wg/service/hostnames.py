"""The service's mesh names: after each full reconcile and each step, the hosts file's
block is planned from the mesh peers there are now (mesh/names.py decides the names,
plan/planner.plan_host_names compares, system.py writes through net/hostsfile.py).

A peer's host name comes from bmx7 (its originators). A full reconcile reads every
node's; a step asks bmx7 once when it adds a peer whose name it does not know yet, so
that a new node has its name with its peer. A name is remembered while its node is a
peer: a held peer (bmx7 restarted and forgot it for a while, mesh/grace.py) keeps it.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Mapping

from bmx7_wg.base.nodeid import tunnel_host
from bmx7_wg.config.model import Config
from bmx7_wg.errors import Bmx7WgError
from bmx7_wg.mesh.names import HostNames, host_names
from bmx7_wg.net import hostsfile
from bmx7_wg.plan.actions import Action
from bmx7_wg.plan.planner import plan_host_names
from bmx7_wg.service import events

log = logging.getLogger(__name__)


class MeshNames:
    """What the service needs to keep the names between reconciles."""

    def __init__(self, config: Config) -> None:
        self.path = config.names.hosts_file
        self.domain = config.names.domain
        self.known: dict[str, str] = {}  # node id -> the host name bmx7 last gave, of peers
        self.own: frozenset[str] = frozenset()
        self.logged: set[tuple[str, str]] = set()
        self.table = HostNames((), ())
        self.peers: frozenset[str] = frozenset()  # the peers of the last plan
        # What the last plan that found the block as it should be was given, and the
        # file's identity then: the same again needs no reading or naming (a step of a
        # 10,000-node mesh would spend ~0.1 s on it).
        self.settled: tuple[object, ...] | None = None
        self.problem: str | None = None  # why the file could not be read, as last logged

    @property
    def enabled(self) -> bool:
        return bool(self.path)

    def plan(
        self,
        interface: str,
        peers: Iterable[str],
        names: Mapping[str, str],
        *,
        own_name: str | None = None,
        lookup: Callable[[], Mapping[str, str]] | None = None,
    ) -> list[Action]:
        """The block's change for the mesh peers `peers` (node ids), `names` being the
        host names bmx7 gave; `lookup` asks bmx7 afresh, for peers with no name known."""
        if not self.enabled:
            return []
        if own_name is not None:
            self.own = frozenset({own_name, *_own_host_names()})
        current = frozenset(peers)
        for node_id in current:
            if node_id in names:
                self.known[node_id] = names[node_id]
        # Only a peer new since the last plan is asked for (a held one bmx7 forgot is not).
        missing = current - self.known.keys() - self.peers
        self.peers = current
        if missing and lookup is not None:
            try:
                fresh = lookup()
            except Bmx7WgError:
                fresh = {}
            for node_id in missing & fresh.keys():
                self.known[node_id] = fresh[node_id]
        for node_id in set(self.known) - current:
            del self.known[node_id]
        inputs = (current, frozenset(self.known.items()), self.own, hostsfile.identity(self.path))
        if inputs == self.settled:
            return []
        try:
            hosts = hostsfile.read(self.path)
        except Bmx7WgError as exc:
            if str(exc) != self.problem:  # once, not at every step
                log.warning("%s: mesh names not written: %s", interface, exc)
            self.problem = str(exc)
            return []
        self.problem = None
        # A peer bmx7 has forgotten for now (it restarted) keeps the name our block
        # gives it, after a restart of the service too.
        for node_id, name in _named_in(hosts.block or (), current - self.known.keys(), self.domain).items():
            self.known[node_id] = name
        self.table = host_names(
            {n: self.known.get(n, "") for n in current},
            self.domain,
            own_names=self.own,
            taken=hostsfile.outside_names(hosts),
        )
        self._log_refusals()
        actions = plan_host_names(interface, self.path, self.table.lines(), hosts.block)
        self.settled = None if actions else inputs
        return actions

    def _log_refusals(self) -> None:
        current = {(r.node_id, r.describe()) for r in self.table.refusals}
        for node_id, reason in sorted(current - self.logged):
            events.emit(logging.WARNING, reason, events.NAME_REFUSED, node_id=node_id, reason=reason)
        self.logged = current


def removal(config: Config, interfaces: Iterable[str]) -> list[Action]:
    """`down`: the mesh names go with the mesh interface (and the block with the last of
    them: there is one mesh interface)."""
    from bmx7_wg.mesh.session import mesh_interface

    iface = mesh_interface(config)
    if iface is None or not config.names.hosts_file or iface.name not in set(interfaces):
        return []
    try:
        block = hostsfile.read(config.names.hosts_file).block
    except Bmx7WgError as exc:
        log.warning("%s: mesh names not removed: %s", iface.name, exc)
        return []
    return plan_host_names(iface.name, config.names.hosts_file, (), block)


def _named_in(block: Iterable[str], node_ids: Iterable[str], domain: str) -> dict[str, str]:
    """Node id -> the host name a block's line gives the node's tunnel address."""
    wanted = {tunnel_host(n).removesuffix("/128"): n for n in node_ids}
    found: dict[str, str] = {}
    for line in block:
        fields = line.split()
        node_id = wanted.get(fields[0]) if len(fields) > 2 else None
        if node_id is not None and fields[1].endswith("." + domain):
            found[node_id] = fields[1].removesuffix("." + domain)
    return found


def _own_host_names() -> set[str]:
    """This host's name and its first label ("gw.example.org" and "gw")."""
    name = socket.gethostname()
    return {name, name.split(".", 1)[0]}
