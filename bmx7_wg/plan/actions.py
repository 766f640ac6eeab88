"""The changes the planner asks for: small typed values, printable and JSON-able.

No action carries key material in its repr or its JSON: a private key travels in a
field excluded from both.

Each action names the resource it changes (`resource`) and the resources it needs
(`needs`): when an action fails, the executor skips only the actions that need what
failed (a peer's route needs its link, not another peer), and applies the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bmx7_wg.keys import PrivateKey
from bmx7_wg.plan.state import Implementation, Peer


@dataclass(frozen=True)
class Action:
    interface: str
    kind: ClassVar[str] = "action"
    # True for actions that write to the WireGuard device (batched into one transaction).
    device: ClassVar[bool] = False

    def details(self) -> dict[str, Any]:
        return {}

    @property
    def resource(self) -> str:
        """What this action changes, in words ("wg0 route 10.9.1.0/24")."""
        return f"{self.interface} {self.kind.split('_', 1)[-1].replace('_', ' ')}"

    # False for actions outside the interface (bmx7's files, the hosts file): they are
    # tried whatever failed on the interface.
    needs_interface: ClassVar[bool] = True

    @property
    def needs(self) -> tuple[str, ...]:
        """Resources that must not have failed for this action to be tried."""
        return (self.interface,) if self.needs_interface else ()

    def to_json(self) -> dict[str, Any]:
        return {"interface": self.interface, "action": self.kind, **self.details()}

    def describe(self) -> str:
        details = self.details()
        if len(details) == 1:
            # "wg0: set mtu 1420" rather than "wg0: set mtu mtu=1420"
            extra = _text(next(iter(details.values())))
        else:
            extra = " ".join(f"{k}={_text(v)}" for k, v in details.items())
        return f"{self.interface}: {self.kind.replace('_', ' ')}" + (f" {extra}" if extra else "")


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value) or "(none)"
    return str(value)


@dataclass(frozen=True)
class CreateLink(Action):
    implementation: Implementation = "userspace"
    kind: ClassVar[str] = "create_link"

    def details(self) -> dict[str, Any]:
        return {"backend": self.implementation}

    @property
    def resource(self) -> str:
        return self.interface

    def describe(self) -> str:
        return f"{self.interface}: create link ({self.implementation} WireGuard)"


@dataclass(frozen=True)
class AdoptLink(Action):
    """Mark an existing, declared but unmarked WireGuard interface as ours."""

    kind: ClassVar[str] = "adopt_link"

    @property
    def resource(self) -> str:
        return self.interface


@dataclass(frozen=True)
class DeleteLink(Action):
    reason: str = ""
    kind: ClassVar[str] = "delete_link"
    needs_interface: ClassVar[bool] = False

    @property
    def resource(self) -> str:
        return self.interface


    def details(self) -> dict[str, Any]:
        return {"reason": self.reason} if self.reason else {}

    def describe(self) -> str:
        return f"{self.interface}: delete link" + (f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class SetMtu(Action):
    mtu: int = 0
    kind: ClassVar[str] = "set_mtu"

    def details(self) -> dict[str, Any]:
        return {"mtu": self.mtu}


@dataclass(frozen=True)
class SetUp(Action):
    kind: ClassVar[str] = "set_up"


@dataclass(frozen=True)
class SetPrivateKey(Action):
    # None (and public_key "") while `key_file` is still to be created: the executor
    # takes the key that CreateKeyFile made.
    private_key: PrivateKey | None = field(default=None, repr=False)
    public_key: str = ""
    key_file: str | None = None
    kind: ClassVar[str] = "set_private_key"
    device: ClassVar[bool] = True

    @property
    def needs(self) -> tuple[str, ...]:
        return (self.interface, f"key file {self.key_file}") if self.key_file else (self.interface,)

    def details(self) -> dict[str, Any]:
        if self.public_key:
            return {"public_key": self.public_key}
        # A key apply makes: from a key file it creates, or a new session key.
        return {"public_key": None, "key_file": self.key_file} if self.key_file else {"public_key": None}

    def describe(self) -> str:
        if self.public_key:
            return f"{self.interface}: set private key (public key {self.public_key})"
        if self.key_file:
            return f"{self.interface}: set private key (the new key of {self.key_file})"
        return f"{self.interface}: set private key (a new session key)"


@dataclass(frozen=True)
class CreateKeyFile(Action):
    """Write a new private key to a key file that does not exist (mode 0600)."""

    path: str = ""
    kind: ClassVar[str] = "create_key_file"
    needs_interface: ClassVar[bool] = False

    @property
    def resource(self) -> str:
        return f"key file {self.path}"


    def details(self) -> dict[str, Any]:
        return {"path": self.path}

    def describe(self) -> str:
        return f"{self.interface}: create key file {self.path} (a new private key, mode 0600)"


@dataclass(frozen=True)
class SetListenPort(Action):
    listen_port: int = 0
    kind: ClassVar[str] = "set_listen_port"
    device: ClassVar[bool] = True

    def details(self) -> dict[str, Any]:
        return {"listen_port": self.listen_port}


@dataclass(frozen=True)
class SetFwmark(Action):
    fwmark: int = 0
    kind: ClassVar[str] = "set_fwmark"
    device: ClassVar[bool] = True

    def details(self) -> dict[str, Any]:
        return {"fwmark": self.fwmark}


def _peer_json(peer: Peer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "public_key": peer.public_key,
        "allowed_ips": sorted(peer.allowed_ips),
        "source": peer.source,
    }
    if peer.endpoint is not None:
        out["endpoint"] = peer.endpoint
    if peer.persistent_keepalive:
        out["persistent_keepalive"] = peer.persistent_keepalive
    if peer.preshared_key is not None:
        out["preshared_key"] = "(set)"
    if peer.name:
        out["name"] = peer.name
    if peer.node_id:
        out["node_id"] = peer.node_id
    return out


@dataclass(frozen=True)
class AddPeer(Action):
    peer: Peer = field(default_factory=lambda: Peer(public_key=""))
    kind: ClassVar[str] = "add_peer"
    device: ClassVar[bool] = True

    @property
    def resource(self) -> str:
        return f"{self.interface} peer {self.peer.public_key}"

    def details(self) -> dict[str, Any]:
        return {"peer": _peer_json(self.peer)}

    def describe(self) -> str:
        return f"{self.interface}: add peer {_peer_label(self.peer)}"


@dataclass(frozen=True)
class UpdatePeer(Action):
    peer: Peer = field(default_factory=lambda: Peer(public_key=""))
    changed: tuple[str, ...] = ()  # names of the Peer fields that differ
    kind: ClassVar[str] = "update_peer"
    device: ClassVar[bool] = True

    @property
    def resource(self) -> str:
        return f"{self.interface} peer {self.peer.public_key}"

    def details(self) -> dict[str, Any]:
        return {"peer": _peer_json(self.peer), "changed": list(self.changed)}

    def describe(self) -> str:
        return f"{self.interface}: update peer {_peer_label(self.peer)} ({', '.join(self.changed)})"


@dataclass(frozen=True)
class RemovePeer(Action):
    public_key: str = ""
    kind: ClassVar[str] = "remove_peer"
    device: ClassVar[bool] = True

    @property
    def resource(self) -> str:
        return f"{self.interface} peer {self.public_key}"

    def details(self) -> dict[str, Any]:
        return {"public_key": self.public_key}


def _peer_label(peer: Peer) -> str:
    label = peer.public_key
    if peer.name:
        label += f" ({peer.name})"
    return label


@dataclass(frozen=True)
class AddAddress(Action):
    address: str = ""
    kind: ClassVar[str] = "add_address"

    @property
    def resource(self) -> str:
        return f"{self.interface} address {self.address}"

    def details(self) -> dict[str, Any]:
        return {"address": self.address}


@dataclass(frozen=True)
class RemoveAddress(Action):
    address: str = ""
    kind: ClassVar[str] = "remove_address"

    @property
    def resource(self) -> str:
        return f"{self.interface} address {self.address}"

    def details(self) -> dict[str, Any]:
        return {"address": self.address}


@dataclass(frozen=True)
class AddRoute(Action):
    network: str = ""
    kind: ClassVar[str] = "add_route"

    @property
    def resource(self) -> str:
        return f"{self.interface} route {self.network}"

    @property
    def needs(self) -> tuple[str, ...]:
        # The kernel refuses a route on a link that is down.
        return (self.interface, f"{self.interface} up")

    def details(self) -> dict[str, Any]:
        return {"network": self.network}


@dataclass(frozen=True)
class RemoveRoute(Action):
    network: str = ""
    kind: ClassVar[str] = "remove_route"

    @property
    def resource(self) -> str:
        return f"{self.interface} route {self.network}"

    def details(self) -> dict[str, Any]:
        return {"network": self.network}


@dataclass(frozen=True)
class PublishAnnouncement(Action):
    """Write this node's announcement to bmx7's sendSms directory."""

    runtime_dir: str = field(default="", compare=True)
    sms: str = ""
    public_key: str | None = None  # None: the key apply creates (see CreateKeyFile)
    listen_port: int = 0
    networks: tuple[str, ...] = ()
    key_file: str | None = None  # where the new key comes from, when public_key is None
    kind: ClassVar[str] = "publish_announcement"

    @property
    def resource(self) -> str:
        return f"sms {self.sms}"

    @property
    def needs(self) -> tuple[str, ...]:
        # Never announce a key or a port the device did not take.
        needs = (self.interface, f"{self.interface} private key", f"{self.interface} listen port")
        return needs + ((f"key file {self.key_file}",) if self.key_file else ())

    def details(self) -> dict[str, Any]:
        return {
            "sms": self.sms,
            "public_key": self.public_key,
            "listen_port": self.listen_port,
            "networks": list(self.networks),
        }

    def describe(self) -> str:
        key = self.public_key or (f"(the new key of {self.key_file})" if self.key_file else "(a new key)")
        networks = ",".join(self.networks) or "(none)"
        return (
            f"{self.interface}: publish announcement sms={self.sms} public_key={key} "
            f"listen_port={self.listen_port} networks={networks}"
        )


@dataclass(frozen=True)
class RegisterSms(Action):
    """Tell bmx7 to publish the announcement's SMS name (`syncSms=NAME`)."""

    runtime_dir: str = ""
    sms: str = ""
    kind: ClassVar[str] = "register_sms"
    needs_interface: ClassVar[bool] = False

    @property
    def resource(self) -> str:
        return f"sms {self.sms} registration"


    def details(self) -> dict[str, Any]:
        return {"sms": self.sms}


@dataclass(frozen=True)
class WriteHostNames(Action):
    """Make `lines` the mesh peers' block of the hosts file `path` (none: no block)."""

    path: str = ""
    lines: tuple[str, ...] = ()
    kind: ClassVar[str] = "write_host_names"
    needs_interface: ClassVar[bool] = False  # names are written for the peers there are, whatever else failed

    @property
    def resource(self) -> str:
        return f"hosts file {self.path}"


    @property
    def name_count(self) -> int:
        """How many names the block gives (each line: an address, then its names)."""
        return sum(len(line.split()) - 1 for line in self.lines)

    def details(self) -> dict[str, Any]:
        return {"path": self.path, "names": self.name_count}

    def describe(self) -> str:
        if not self.lines:
            return f"{self.interface}: remove the mesh names from {self.path}"
        return (
            f"{self.interface}: write {self.name_count} mesh name(s) of {len(self.lines)} peer(s)"
            f" to {self.path}"
        )


@dataclass(frozen=True)
class WithdrawAnnouncement(Action):
    """Remove this node's announcement from bmx7's sendSms directory (`down`, a rollback)."""

    runtime_dir: str = ""
    sms: str = ""
    kind: ClassVar[str] = "withdraw_announcement"
    needs_interface: ClassVar[bool] = False

    @property
    def resource(self) -> str:
        return f"sms {self.sms}"


    def details(self) -> dict[str, Any]:
        return {"sms": self.sms}


@dataclass(frozen=True)
class UnregisterSms(Action):
    """Tell bmx7 to stop publishing the announcement's SMS name (`syncSms=-NAME`)."""

    runtime_dir: str = ""
    sms: str = ""
    kind: ClassVar[str] = "unregister_sms"
    needs_interface: ClassVar[bool] = False

    @property
    def resource(self) -> str:
        return f"sms {self.sms} registration"


    def details(self) -> dict[str, Any]:
        return {"sms": self.sms}


@dataclass(frozen=True)
class DeviceChange:
    """Every device action for one interface, sent to the device in one transaction."""

    interface: str
    private_key: PrivateKey | None = field(default=None, repr=False)
    listen_port: int | None = None
    fwmark: int | None = None
    remove_peers: tuple[str, ...] = ()
    add_peers: tuple[Peer, ...] = ()
    update_peers: tuple[tuple[Peer, tuple[str, ...]], ...] = ()  # (desired peer, changed fields)

    @classmethod
    def collect(cls, interface: str, actions: list[Action]) -> DeviceChange:
        private_key = None
        listen_port = fwmark = None
        remove: list[str] = []
        add: list[Peer] = []
        update: list[tuple[Peer, tuple[str, ...]]] = []
        for a in actions:
            if isinstance(a, SetPrivateKey):
                private_key = a.private_key
            elif isinstance(a, SetListenPort):
                listen_port = a.listen_port
            elif isinstance(a, SetFwmark):
                fwmark = a.fwmark
            elif isinstance(a, RemovePeer):
                remove.append(a.public_key)
            elif isinstance(a, AddPeer):
                add.append(a.peer)
            elif isinstance(a, UpdatePeer):
                update.append((a.peer, a.changed))
        return cls(interface, private_key, listen_port, fwmark, tuple(remove), tuple(add), tuple(update))
