"""Mesh mode glue: what BMX7 contributes to one reconcile.

Reads (through bmx7.py) this node's id, the received announcements, bmx7's trust and
what this node publishes now; turns them into peers (mesh/view.py) and the inputs of the
desired state. Publishing is planned (plan/planner.py) and carried out by system.py like
any other change. Without `mesh = true` interfaces it does nothing at all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bmx7_wg.base.nodeid import MESH_NETWORK, tunnel_address
from bmx7_wg.config.model import Bmx7Config, Config, InterfaceConfig
from bmx7_wg.errors import Bmx7WgError
from bmx7_wg.mesh.announce import MAX_SIZE as ANNOUNCEMENT_MAX_SIZE
from bmx7_wg.mesh.announce import AnnouncementError, parse_announcement
from bmx7_wg.mesh.bmx7 import (
    Bmx7Runtime,
    Bmx7Unavailable,
    NodeInfo,
    Parameter,
    ReceivedCache,
    ReceivedFile,
    parse_parameters_text,
    read_trusted_nodes,
)
from bmx7_wg.mesh.grace import HoldEvent, MeshGrace
from bmx7_wg.mesh.liveness import Liveness
from bmx7_wg.mesh.view import MeshView, Refusal, TrustPolicy, mesh_peers
from bmx7_wg.plan.desired import MeshInputs, Publication
from bmx7_wg.plan.state import Announcement, DesiredState, ObservedAnnouncement

log = logging.getLogger(__name__)


@dataclass
class MeshSession:
    """The mesh's part of one reconcile."""

    bmx7: Bmx7Config | None = None
    interface: InterfaceConfig | None = None
    node: NodeInfo | None = None
    inputs: dict[str, MeshInputs] = field(default_factory=dict)
    refusals: list[tuple[str, str]] = field(default_factory=list)  # (node id, message)
    trust_dir: str | None = None  # the trusted-nodes directory in force, to watch
    # bmx7's configured options, asked once per reconcile (trust and SMS registration both
    # need them; each ask is a control-socket round trip).
    parameters: tuple[Parameter, ...] | None = None
    liveness: Liveness | None = None  # whether bmx7 answered (None: no mesh interface)
    holds: list[HoldEvent] = field(default_factory=list)  # grace periods started or ended now
    # What this node publishes now (the planner compares it with what it should publish).
    published: ObservedAnnouncement | None = None
    # What the mesh's rules were given and gave (the service's step between full
    # reconciles starts from them, service/incremental.py).
    policy: TrustPolicy | None = None
    names: dict[str, str] = field(default_factory=dict)
    received: list[ReceivedFile] = field(default_factory=list)
    view: MeshView | None = None
    # Files written a moment before they were read whose content does not parse: a writer
    # may not be done, so they count as vanished now and are read again soon.
    unsettled: list[str] = field(default_factory=list)

    def add_refusals(self, refusals: Iterable[Refusal]) -> None:
        """Refusals decided later in the reconcile (mesh.view.Clearance, in the engine)."""
        self.refusals.extend((r.node_id, r.describe()) for r in refusals)

    def refusals_json(self) -> list[dict[str, Any]]:
        return [{"node_id": n, "reason": r} for n, r in self.refusals]

    def describe_refusals(self) -> list[str]:
        return [r for _, r in self.refusals]

    def kept_peers(self, desired: DesiredState) -> dict[str, list[str]]:
        """Interface -> public keys of the mesh peers kept as they are because bmx7 does
        not answer (the engine takes them from the device)."""
        held = {name for name, m in self.inputs.items() if m.hold}
        return {
            d.name: sorted(k for k, p in d.peers.items() if p.source == "mesh")
            for d in desired.interfaces
            if d.name in held
        }

    def describe_bmx7(self, desired: DesiredState) -> list[str]:
        """What a user must know when bmx7 does not answer: that, and what is kept."""
        if self.liveness is None or self.liveness.answering:
            return []
        return [
            f"{name}: {self.liveness.describe()}; its {len(keys)} mesh peer(s) and its mesh "
            "address are kept as they are until bmx7 answers"
            for name, keys in self.kept_peers(desired).items()
        ]

    def bmx7_json(self, desired: DesiredState) -> dict[str, Any] | None:
        if self.liveness is None:
            return None
        out: dict[str, Any] = {"running": self.liveness.answering, "socket": self.liveness.socket}
        if not self.liveness.answering:
            out["reason"] = self.liveness.reason
            out["kept_peers"] = self.kept_peers(desired)
        return out


def _published(
    runtime: Bmx7Runtime, name: str, parameters: tuple[Parameter, ...] | None
) -> ObservedAnnouncement:
    """This node's announcement as bmx7 has it: the sendSms file (parsed) and whether the
    name is registered (None: bmx7's options could not be read). What cannot be read
    counts as absent: apply then writes it."""
    announcement = None
    try:
        # Never through a symlink: sendSms/ is bmx7's directory, not a way to read others.
        data = runtime.sent(name, ANNOUNCEMENT_MAX_SIZE)
        parsed = parse_announcement(data)
        announcement = Announcement(parsed.public_key, parsed.port, parsed.networks)
    except (ValueError, AnnouncementError):
        pass
    registered = None if parameters is None else name in runtime.registered_sms(parameters)
    exists = os.path.lexists(os.path.join(runtime.send_dir, name))
    return ObservedAnnouncement(name, announcement, registered, exists)


def unsettled(f: ReceivedFile, policy: TrustPolicy) -> bool:
    """Whether a received file is no verdict yet: written a moment before it was read
    (`fresh`), from a node the trust policy accepts, and not parsing. bmx7 rewrites a file
    in place, so its writer may not be done: it counts as vanished now (its peer is held,
    mesh/grace.py) and is read again soon. (A node the policy refuses is refused whatever
    its file holds.) The full reconcile and the service's step both ask this."""
    if not (f.fresh and f.ok and policy.refusal(f.node_id or "") is None):
        return False
    try:
        parse_announcement(f.data or b"")
    except AnnouncementError:
        return True
    return False


def mesh_interface(config: Config) -> InterfaceConfig | None:
    return next((i for i in config.interfaces if i.mesh), None)


def mesh_inputs(
    config: Config, *, grace: MeshGrace | None = None, cache: ReceivedCache | None = None
) -> MeshSession:
    """Read the mesh: this node's id, the received announcements, the trust policy.

    With `grace` (the service), peers whose announcement vanished a moment ago are kept
    (see grace.py); one-shot commands take the announcements as they are. With `cache`
    (the service), an announcement file unchanged since the last read is not read again."""
    iface = mesh_interface(config)
    if grace is not None:
        grace.keep_only(iface.name if iface is not None and config.bmx7 is not None else None)
    if iface is None or config.bmx7 is None:
        return MeshSession()
    session = MeshSession(bmx7=config.bmx7, interface=iface)
    runtime = Bmx7Runtime(config.bmx7.runtime_dir)
    try:
        session.node = runtime.own_node()
    except Bmx7WgError as exc:
        # Not fatal: static peers still get applied, the mesh peers and address the
        # device has stay as they are (bmx7's files may be stale: a killed bmx7 leaves
        # them behind), and the mesh is read again when bmx7 answers.
        reason = exc.reason if isinstance(exc, Bmx7Unavailable) else str(exc)
        session.liveness = Liveness(runtime.socket_path, False, reason=reason)
        session.inputs[iface.name] = MeshInputs(hold=True)
        if grace is not None:
            grace.pause(iface.name)
        return session
    session.liveness = runtime.liveness_of(session.node)
    own = session.node.node_id
    try:
        session.parameters = runtime.parameters()
    except Bmx7WgError as exc:
        parameters_error: Bmx7WgError | None = exc
    else:
        parameters_error = None
    levels = None
    if config.bmx7.trust == "bmx7":
        levels, session.trust_dir = _bmx7_trust(session.parameters, parameters_error, config.bmx7, iface.name)
    policy = TrustPolicy(
        config.bmx7.trust, frozenset(config.bmx7.trusted), frozenset(config.bmx7.denied), levels
    )
    try:
        received = runtime.received(config.bmx7.announce, cache=cache)
    except Bmx7Unavailable as exc:
        log.warning("%s: %s", iface.name, exc)
        received = []
    if grace is not None:
        # (the service only: a one-shot command has nothing to hold and no later read)
        session.unsettled = [f.file_name for f in received if unsettled(f, policy)]
    if session.unsettled:
        settling = set(session.unsettled)
        received = [f for f in received if f.file_name not in settling]
    for f in received:
        if not f.ok:
            session.refusals.append((f.node_id or f.file_name, f"refused {f.file_name}: {f.refusal}"))
    names = runtime.node_names()
    # A node with a file now, good or refused, is decided by that file; one whose file
    # vanished a moment ago has its announcement held (grace.py).
    held = grace.begin(iface.name, {f.node_id for f in received if f.node_id}) if grace is not None else None
    view = mesh_peers(
        own,
        [(f.node_id, f.data) for f in received if f.ok and f.node_id and f.data is not None],
        policy,
        iface.accept_networks,
        names,
        held=held,
    )
    for r in view.refusals:
        session.refusals.append((r.node_id, r.describe()))
    session.policy, session.names, session.received, session.view = policy, names, received, view
    session.inputs[iface.name] = MeshInputs(
        peers=view.peers,
        address=f"{tunnel_address(own)}/128",
        routes=(MESH_NETWORK,),
        publish=Publication(config.bmx7.runtime_dir, config.bmx7.announce),
    )
    session.published = _published(runtime, config.bmx7.announce, session.parameters)
    if grace is not None:
        session.holds = grace.settle(iface.name, view, policy.refusal)
    return session


def _bmx7_trust(
    parameters: tuple[Parameter, ...] | None, error: Bmx7WgError | None, cfg: Bmx7Config, ifname: str
) -> tuple[Mapping[str, int] | None, str | None]:
    """bmx7's trust levels (None: bmx7 trusts every node) and the directory they come from.

    bmx7's own trustedNodesDir setting wins; the configured `trusted_nodes_dir` is used
    only when bmx7 cannot be asked (`parameters` is None, `error` says why)."""
    if parameters is not None:
        directory = Bmx7Runtime.trusted_nodes_dir_of(parameters)
    else:
        if not os.path.isdir(cfg.trusted_nodes_dir):
            log.warning(
                "%s: cannot ask bmx7 for its trusted nodes (%s); no mesh node is trusted", ifname, error
            )
            return {}, None
        directory = cfg.trusted_nodes_dir
    if directory is None:
        return None, None
    return read_trusted_nodes(directory), directory


def mesh_labels(config: Config) -> dict[str, dict[str, str]]:
    """Public key -> "name|node id" for the mesh peers `show` lists."""
    iface = mesh_interface(config)
    if iface is None or config.bmx7 is None:
        return {}
    runtime = Bmx7Runtime(config.bmx7.runtime_dir)
    labels: dict[str, str] = {}
    try:
        names = runtime.node_names()
        for f in runtime.received(config.bmx7.announce):
            if not f.ok or f.node_id is None or f.data is None:
                continue
            try:
                ann = parse_announcement(f.data)
            except AnnouncementError:
                continue
            labels[ann.public_key] = f"{names.get(f.node_id, '')}|{f.node_id}"
    except Bmx7WgError:
        return {}
    return {iface.name: labels}


def bmx7_liveness(config: Config) -> Liveness | None:
    """Whether the bmx7 of the mesh interface answers; None without a mesh interface."""
    if mesh_interface(config) is None or config.bmx7 is None:
        return None
    return Bmx7Runtime(config.bmx7.runtime_dir).liveness()


def publication(config: Config) -> tuple[str, Publication, ObservedAnnouncement] | None:
    """The mesh interface, where its announcement is published, and what is published
    there now (for `down` and `apply --confirm`); None without a mesh interface."""
    iface = mesh_interface(config)
    if iface is None or config.bmx7 is None:
        return None
    where = Publication(config.bmx7.runtime_dir, config.bmx7.announce)
    return iface.name, where, published_at(where)


def published_at(where: Publication) -> ObservedAnnouncement:
    """What is published at `where` now, and whether bmx7 is told to publish it."""
    runtime = Bmx7Runtime(where.runtime_dir)
    try:
        # From bmx7 itself, not json/parameters: that file outlives a stopped bmx7, which
        # forgets the name (so `down` would try to unregister it from a daemon not there).
        parameters: tuple[Parameter, ...] | None = parse_parameters_text(runtime.command("parameters"))
    except Bmx7WgError:
        parameters = None  # bmx7 does not answer: it publishes nothing it could be told to stop
    return _published(runtime, where.sms, parameters)


def watch_directories(config: Config, trust_dir: str | None = None) -> list[str]:
    """Directories whose changes mean the mesh view may have changed."""
    iface = mesh_interface(config)
    if iface is None or config.bmx7 is None:
        return []
    dirs = [os.path.join(config.bmx7.runtime_dir, "sms", "rcvdSms")]
    if config.bmx7.trust == "bmx7":
        dirs.append(trust_dir or config.bmx7.trusted_nodes_dir)
    return dirs
