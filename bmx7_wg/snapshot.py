"""The state before an `apply --confirm`, kept to roll back to: what the rollback plans from.

A snapshot is the observed state of the interfaces the apply may touch (links, private
keys, ports, peers with their preshared keys, addresses, routes), this node's published
mesh announcement, and the configuration file's bytes. It is written to the pending
claim's directory (bmx7_wg/pending.py: under /run/bmx7-wg, mode 0700) as files of mode
0600, root's alone: it holds private keys. It is never logged; no repr shows a key.
`desired()` turns it into the desired state of the rollback's one planned reconcile.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from bmx7_wg.base.atomicfile import write_atomically
from bmx7_wg.errors import StateReadError
from bmx7_wg.keys import PresharedKey, PrivateKey, decode_key, encode_key
from bmx7_wg.plan.desired import Publication
from bmx7_wg.plan.state import (
    Announcement,
    DesiredAnnouncement,
    DesiredInterface,
    DesiredState,
    ObservedAnnouncement,
    ObservedState,
    Peer,
)

FORMAT = 1
STATE_FILE = "before.json"
CONFIG_FILE = "config"
MAX_SIZE = 64 * 1024 * 1024  # 10,000 peers take 1.9 MB (written in 0.12 s, read in 0.12 s)


@dataclass(frozen=True)
class ConfigFile:
    """The configuration file as it was: its bytes (None: there was none), mode and owner."""

    path: str
    data: bytes | None = field(repr=False)
    mode: int = 0o644
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True)
class Snapshot:
    state: DesiredState  # the interfaces as they were, as a desired state
    published: ObservedAnnouncement | None  # the announcement as it was (None: no mesh)
    mesh: tuple[str, Publication] | None  # the mesh interface and where it publishes
    config: ConfigFile


def take(
    observed: ObservedState, mesh: tuple[str, Publication, ObservedAnnouncement] | None, config: ConfigFile
) -> Snapshot:
    """The snapshot of a state just read. Every WireGuard interface of `observed` is kept
    as it is (a managed one the apply would delete comes back; a link it creates goes)."""
    interfaces = []
    for name in sorted(observed.interfaces):
        have = observed.interfaces[name]
        if have.implementation is None:
            continue  # not WireGuard: bmx7-wg never touches it
        if have.device is None:
            raise StateReadError(f"{name}: its WireGuard device cannot be read; nothing was changed")
        interfaces.append(
            DesiredInterface(
                name=name,
                implementation=have.implementation,
                private_key=have.device.private_key,
                listen_port=have.device.listen_port or None,
                fwmark=have.device.fwmark,
                mtu=have.mtu,
                addresses=have.addresses,
                routes=have.routes,
                peers=dict(have.device.peers),
            )
        )
    announcement = None
    published = None
    where = None
    if mesh is not None:
        iface, publication, published = mesh
        where = (iface, publication)
        if published.announcement is not None:
            announcement = DesiredAnnouncement(
                iface, publication.runtime_dir, publication.sms, published.announcement
            )
    return Snapshot(DesiredState(tuple(interfaces), announcement), published, where, config)


def read_config(path: str) -> ConfigFile:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return ConfigFile(path, None)
    try:
        st = os.fstat(fd)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return ConfigFile(path, b"".join(chunks), st.st_mode & 0o7777, st.st_uid, st.st_gid)


def restore_config(config: ConfigFile) -> bool:
    """Put the configuration file back as it was (atomically: a running service reads the
    old file or the restored one, never a half-written one); False if it already is."""
    if read_config(config.path).data == config.data:
        return False
    if config.data is None:
        os.unlink(config.path)
        return True
    write_atomically(config.path, config.data, config.mode, config.uid, config.gid)
    return True


# -- the files ----------------------------------------------------------------------


def save(snapshot: Snapshot, directory: str) -> None:
    """Write the snapshot into `directory` (the pending claim's): files of mode 0600."""
    if snapshot.config.data is not None:
        write_atomically(os.path.join(directory, CONFIG_FILE), snapshot.config.data, 0o600)
    data = json.dumps(_to_json(snapshot), separators=(",", ":")).encode()
    write_atomically(os.path.join(directory, STATE_FILE), data, 0o600)


def load(directory: str) -> Snapshot:
    """The snapshot `save` wrote; StateReadError if it cannot be read."""
    path = os.path.join(directory, STATE_FILE)
    try:
        with open(path, "rb") as fh:
            obj = json.loads(fh.read(MAX_SIZE))
        config_data = None
        if obj["config"]["existed"]:
            with open(os.path.join(directory, CONFIG_FILE), "rb") as fh:
                config_data = fh.read()
        return _from_json(obj, config_data)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StateReadError(f"cannot read the snapshot {path}: {exc}") from None


def _to_json(s: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {
        "format": FORMAT,
        "config": {
            "path": s.config.path,
            "existed": s.config.data is not None,
            "mode": s.config.mode,
            "uid": s.config.uid,
            "gid": s.config.gid,
        },
        "interfaces": [
            {
                "name": d.name,
                "implementation": d.implementation,
                "private_key": d.private_key.to_base64() if d.private_key is not None else None,
                "listen_port": d.listen_port,
                "fwmark": d.fwmark,
                "mtu": d.mtu,
                "addresses": sorted(d.addresses),
                "routes": sorted(d.routes),
                "peers": [_peer_json(p) for _, p in sorted(d.peers.items())],
            }
            for d in s.state.interfaces
        ],
    }
    if s.mesh is not None and s.published is not None:
        iface, where = s.mesh
        a = s.published.announcement
        out["mesh"] = {
            "interface": iface,
            "runtime_dir": where.runtime_dir,
            "sms": where.sms,
            "registered": s.published.registered,
            "file_exists": s.published.file_exists,
            "announcement": None
            if a is None
            else {"public_key": a.public_key, "listen_port": a.listen_port, "networks": list(a.networks)},
        }
    return out


def _peer_json(p: Peer) -> dict[str, Any]:
    return {
        "public_key": p.public_key,
        "allowed_ips": sorted(p.allowed_ips),
        "endpoint": p.endpoint,
        "persistent_keepalive": p.persistent_keepalive,
        "preshared_key": encode_key(p.preshared_key.raw) if p.preshared_key is not None else None,
    }


def _from_json(obj: dict[str, Any], config_data: bytes | None) -> Snapshot:
    if obj.get("format") != FORMAT:
        raise ValueError(f"unknown format {obj.get('format')!r}")
    interfaces = []
    for i in obj["interfaces"]:
        peers = {}
        for p in i["peers"]:
            psk = p["preshared_key"]
            peers[p["public_key"]] = Peer(
                public_key=p["public_key"],
                allowed_ips=frozenset(p["allowed_ips"]),
                endpoint=p["endpoint"],
                persistent_keepalive=int(p["persistent_keepalive"]),
                preshared_key=PresharedKey(decode_key(psk)) if psk else None,
            )
        key = i["private_key"]
        if i["implementation"] not in ("kernel", "userspace"):
            raise ValueError(f"unknown implementation {i['implementation']!r}")
        interfaces.append(
            DesiredInterface(
                name=i["name"],
                implementation=i["implementation"],
                private_key=PrivateKey.from_base64(key) if key else None,
                listen_port=i["listen_port"],
                fwmark=int(i["fwmark"]),
                mtu=int(i["mtu"]),
                addresses=frozenset(i["addresses"]),
                routes=frozenset(i["routes"]),
                peers=peers,
            )
        )
    c = obj["config"]
    config = ConfigFile(c["path"], config_data, int(c["mode"]), int(c["uid"]), int(c["gid"]))
    m = obj.get("mesh")
    published = mesh = desired_announcement = None
    if m is not None:
        a = m["announcement"]
        announcement = (
            None if a is None else Announcement(a["public_key"], int(a["listen_port"]), tuple(a["networks"]))
        )
        published = ObservedAnnouncement(m["sms"], announcement, m["registered"], bool(m["file_exists"]))
        mesh = (m["interface"], Publication(m["runtime_dir"], m["sms"]))
        if announcement is not None:
            desired_announcement = DesiredAnnouncement(
                m["interface"], m["runtime_dir"], m["sms"], announcement
            )
    return Snapshot(DesiredState(tuple(interfaces), desired_announcement), published, mesh, config)
