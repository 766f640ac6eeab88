"""The kernel WireGuard device, read and written over generic netlink.

Two halves, as for every boundary: `KernelWireGuard` does the I/O through pyroute2's
`WireGuard` socket, and two pure functions convert between the netlink messages and
the plain values of `state` and `actions`: `device_from_messages` (a dump, as pyroute2
parses it) and `set_requests` (a DeviceChange, as attribute lists to send).

pyroute2 is imported only when a socket is opened: importing it costs 150-270 ms.

Requests are built here instead of through pyroute2's `WireGuard.set()`: that call
takes one peer per call, and in pyroute2 0.7.2 (Debian bookworm) it sends the wrong
peer flags (its WGPEER_F_* constants are off by one bit, so every peer it sets gets
"replace allowed IPs" and none gets "update only"). The message class and its
attribute encoders are pyroute2's own and are the same in 0.7.2 and 0.9.
"""

from __future__ import annotations

import base64
import errno
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any

from bmx7_wg.errors import ApplyError, BackendUnavailable
from bmx7_wg.keys import KEY_LEN, PresharedKey, PrivateKey, decode_key
from bmx7_wg.plan.actions import DeviceChange
from bmx7_wg.plan.state import Device, Peer, PeerStats

# Flags of a peer in a WG_CMD_SET_DEVICE request (linux/wireguard.h).
WGPEER_F_REMOVE_ME = 1 << 0
WGPEER_F_REPLACE_ALLOWEDIPS = 1 << 1
WGPEER_F_UPDATE_ONLY = 1 << 2

# A request larger than the socket's send buffer fails with EMSGSIZE; wg(8) keeps its
# requests to a page. Peers go out in requests of at most this many bytes (estimated).
MAX_REQUEST_BYTES = 32 * 1024
# A netlink attribute holds at most 64 KiB, so a peer's allowed IPs (40 bytes each)
# go out in parts of at most this many, each part after the first in its own entry.
MAX_ALLOWED_IPS_PER_ENTRY = 500

ZERO_KEY = base64.b64encode(bytes(KEY_LEN)).decode("ascii")

# One netlink attribute as pyroute2's encoder takes it: (name, value).
Attr = tuple[str, Any]


class KernelWireGuardError(ApplyError):
    """A generic netlink request to kernel WireGuard failed.

    Names the interface, what was being done, and the kernel's reason.
    """

    def __init__(
        self, interface: str, operation: str, reason: str, code: int | None = None
    ) -> None:
        super().__init__(f"{interface}: cannot {operation}: {reason}")
        self.interface = interface
        self.reason = reason
        self.errno = code


class KernelWireGuardUnavailable(KernelWireGuardError, BackendUnavailable):
    """The running kernel has no WireGuard (no generic netlink family "wireguard")."""

    exit_code = BackendUnavailable.exit_code


class MalformedMessage(ValueError):
    """A WireGuard netlink message lacks something every kernel sends."""


# --- reading: netlink messages -> state.Device ---------------------------------------


def device_from_messages(messages: Iterable[Any]) -> Device:
    """Convert the messages of one WG_CMD_GET_DEVICE dump into a Device.

    Each message is what pyroute2 parses (or a plain copy of it): a mapping whose
    "attrs" is a sequence of (name, value) pairs; nested peers and allowed IPs are
    mappings with their own "attrs". Keys arrive base64 (pyroute2 encodes them).

    A large device spans several messages: each repeats the device attributes, and a
    peer whose allowed IPs did not fit is continued in the next message by an entry
    with only its public key and the remaining allowed IPs.
    """
    device: dict[str, Any] = {}
    peers: dict[str, dict[str, Any]] = {}
    for message in messages:
        for name, value in _pairs(message):
            if name == "WGDEVICE_A_PEERS":
                for entry in value:
                    _merge_peer(peers, _peer_fields(entry))
            elif name not in device:
                device[name] = value

    raw_private = _set_key(device.get("WGDEVICE_A_PRIVATE_KEY"))
    private_key = PrivateKey(raw_private) if raw_private is not None else None
    return Device(
        private_key=private_key,
        listen_port=int(device.get("WGDEVICE_A_LISTEN_PORT") or 0),
        fwmark=int(device.get("WGDEVICE_A_FWMARK") or 0),
        peers={key: fields["peer"] for key, fields in peers.items()},
        stats={key: fields["stats"] for key, fields in peers.items()},
    )


def _pairs(nla: Any) -> Iterable[tuple[str, Any]]:
    # pyroute2 0.9 holds attributes in slots that index like (name, value) tuples;
    # 0.7.2 holds lists or tuples; captured copies hold lists.
    for item in nla["attrs"]:
        yield item[0], item[1]


def _peer_fields(entry: Any) -> dict[str, Any]:
    attrs = dict(_pairs(entry))
    if "WGPEER_A_PUBLIC_KEY" not in attrs:
        raise MalformedMessage("a peer without a public key")
    return attrs


def _merge_peer(peers: dict[str, dict[str, Any]], attrs: Mapping[str, Any]) -> None:
    public_key = base64.b64encode(_key_bytes(attrs["WGPEER_A_PUBLIC_KEY"])).decode("ascii")
    allowed = frozenset(_allowed_ip(a) for a in attrs.get("WGPEER_A_ALLOWEDIPS") or ())
    known = peers.get(public_key)
    if known is not None:
        # A continuation: only more allowed IPs for a peer already seen.
        old: Peer = known["peer"]
        known["peer"] = Peer(
            public_key=old.public_key,
            allowed_ips=old.allowed_ips | allowed,
            endpoint=old.endpoint,
            persistent_keepalive=old.persistent_keepalive,
            preshared_key=old.preshared_key,
        )
        return
    raw_psk = _set_key(attrs.get("WGPEER_A_PRESHARED_KEY"))
    psk = PresharedKey(raw_psk) if raw_psk is not None else None
    handshake = attrs.get("WGPEER_A_LAST_HANDSHAKE_TIME") or {}
    peers[public_key] = {
        "peer": Peer(
            public_key=public_key,
            allowed_ips=allowed,
            endpoint=_endpoint(attrs.get("WGPEER_A_ENDPOINT")),
            persistent_keepalive=int(attrs.get("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL") or 0),
            preshared_key=psk,
        ),
        "stats": PeerStats(
            last_handshake=int(handshake.get("tv_sec", 0)) + int(handshake.get("tv_nsec", 0)) / 1e9,
            rx_bytes=int(attrs.get("WGPEER_A_RX_BYTES") or 0),
            tx_bytes=int(attrs.get("WGPEER_A_TX_BYTES") or 0),
        ),
    }


def _set_key(value: Any) -> bytes | None:
    """A key attribute's bytes, or None when it is absent or all zeros: a device without
    a private (or preshared) key reports none or zeros, depending on the kernel."""
    if value is None:
        return None
    raw = _key_bytes(value)
    return raw if any(raw) else None


def _key_bytes(value: Any) -> bytes:
    """A key attribute's 32 bytes, from pyroute2's base64 (bytes or str) or raw bytes."""
    if isinstance(value, bytes) and len(value) == KEY_LEN:
        return value
    text = value.decode("ascii") if isinstance(value, bytes) else str(value)
    try:
        return decode_key(text)
    except ValueError as exc:
        raise MalformedMessage(f"a key attribute that is {exc}") from None


def _endpoint(value: Mapping[str, Any] | None) -> str | None:
    if not value or not value.get("addr"):
        return None
    # Through ipaddress, so that the text matches what the planner builds
    # (inet_ntop and ipaddress disagree on some IPv6 spellings).
    ip = ipaddress.ip_address(str(value["addr"]))
    port = int(value["port"])
    return f"[{ip.compressed}]:{port}" if ip.version == 6 else f"{ip}:{port}"


def _allowed_ip(entry: Any) -> str:
    attrs = dict(_pairs(entry))
    family = attrs.get("WGALLOWEDIP_A_FAMILY")
    address = attrs.get("WGALLOWEDIP_A_IPADDR")
    mask = attrs.get("WGALLOWEDIP_A_CIDR_MASK")
    if family is None or address is None or mask is None:
        raise MalformedMessage("an allowed IP without family, address or mask")
    # pyroute2 decodes the address attribute as colon-separated hex ("0a:00:00:00").
    raw = bytes.fromhex(address.replace(":", "")) if isinstance(address, str) else bytes(address)
    ip = ipaddress.ip_address(raw)
    return str(ipaddress.ip_network(f"{ip}/{int(mask)}", strict=False))


# --- writing: actions.DeviceChange -> netlink requests ---------------------------------


def set_requests(change: DeviceChange) -> list[list[Attr]]:
    """The attributes of each WG_CMD_SET_DEVICE request that carries out `change`.

    Device settings go in the first request; then removed, added and updated peers,
    as many per request as fit. Only what changed is sent: an updated peer carries
    only its changed fields, and no request ever replaces all peers.
    The requests contain key material: never log or print them.
    """
    head: list[Attr] = [("WGDEVICE_A_IFNAME", change.interface)]
    if change.private_key is not None:
        head.append(("WGDEVICE_A_PRIVATE_KEY", change.private_key.to_base64()))
    if change.listen_port is not None:
        head.append(("WGDEVICE_A_LISTEN_PORT", change.listen_port))
    if change.fwmark is not None:
        head.append(("WGDEVICE_A_FWMARK", change.fwmark))

    peers: list[list[Attr]] = []
    for public_key in change.remove_peers:
        peers.append([("WGPEER_A_PUBLIC_KEY", public_key), ("WGPEER_A_FLAGS", WGPEER_F_REMOVE_ME)])
    for peer in change.add_peers:
        peers += _peer_entries(peer, ("allowed_ips", "endpoint", "persistent_keepalive",
                                      "preshared_key"), update=False)
    for peer, changed in change.update_peers:
        peers += _peer_entries(peer, changed, update=True)

    if len(head) == 1 and not peers:
        return []  # nothing to change: no write at all
    requests: list[list[Attr]] = []
    current = list(head)
    size = sum(_estimate(a) for a in head)
    batch: list[dict[str, Any]] = []
    for attrs in peers:
        cost = sum(_estimate(a) for a in attrs) + 4
        if batch and size + cost > MAX_REQUEST_BYTES:
            current.append(("WGDEVICE_A_PEERS", batch))
            requests.append(current)
            current, size, batch = [("WGDEVICE_A_IFNAME", change.interface)], 24, []
        batch.append({"attrs": attrs})
        size += cost
    if batch:
        current.append(("WGDEVICE_A_PEERS", batch))
    if len(current) > 1:
        requests.append(current)
    return requests


def _peer_entries(peer: Peer, fields: Sequence[str], *, update: bool) -> list[list[Attr]]:
    """One peer's entries: its settings, then (for many allowed IPs) continuations
    that each add more allowed IPs to the peer the first entry set up."""
    if "allowed_ips" not in fields:
        return [_peer_attrs(peer, fields, (), update=update)]
    cidrs = sorted(peer.allowed_ips)
    step = MAX_ALLOWED_IPS_PER_ENTRY
    entries = [_peer_attrs(peer, fields, cidrs[:step], update=update)]
    for start in range(step, len(cidrs), step):
        entries.append([
            ("WGPEER_A_PUBLIC_KEY", peer.public_key),
            ("WGPEER_A_FLAGS", WGPEER_F_UPDATE_ONLY),
            ("WGPEER_A_ALLOWEDIPS",
             [{"attrs": _allowed_ip_attrs(c)} for c in cidrs[start:start + step]]),
        ])
    return entries


def _peer_attrs(
    peer: Peer, fields: Sequence[str], cidrs: Sequence[str], *, update: bool
) -> list[Attr]:
    attrs: list[Attr] = [("WGPEER_A_PUBLIC_KEY", peer.public_key)]
    flags = WGPEER_F_UPDATE_ONLY if update else 0
    if "allowed_ips" in fields:
        # The allowed IPs are always sent in full and replace the old ones: the kernel
        # can only add to them otherwise. An added peer gets them too, so that a peer
        # that appeared in the meantime ends up exactly as planned.
        flags |= WGPEER_F_REPLACE_ALLOWEDIPS
    attrs.append(("WGPEER_A_FLAGS", flags))
    if "endpoint" in fields and peer.endpoint is not None:
        attrs.append(("WGPEER_A_ENDPOINT", _endpoint_attr(peer.endpoint)))
    if "persistent_keepalive" in fields and (update or peer.persistent_keepalive):
        attrs.append(("WGPEER_A_PERSISTENT_KEEPALIVE_INTERVAL", peer.persistent_keepalive))
    if "preshared_key" in fields and (update or peer.preshared_key is not None):
        # All zeros removes a preshared key.
        psk = ZERO_KEY if peer.preshared_key is None else base64.b64encode(
            peer.preshared_key.raw).decode("ascii")
        attrs.append(("WGPEER_A_PRESHARED_KEY", psk))
    if "allowed_ips" in fields:
        attrs.append(("WGPEER_A_ALLOWEDIPS", [{"attrs": _allowed_ip_attrs(c)} for c in cidrs]))
    return attrs


def _endpoint_attr(endpoint: str) -> dict[str, Any]:
    host, _, port = endpoint.rpartition(":")
    address = ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    # pyroute2 picks the IPv6 layout when the address contains a colon.
    return {"addr": str(address), "port": int(port)}


def _allowed_ip_attrs(cidr: str) -> list[Attr]:
    net = ipaddress.ip_network(cidr, strict=False)
    family = 2 if net.version == 4 else 10  # AF_INET, AF_INET6
    return [
        ("WGALLOWEDIP_A_FAMILY", family),
        ("WGALLOWEDIP_A_IPADDR", net.network_address.packed),
        ("WGALLOWEDIP_A_CIDR_MASK", net.prefixlen),
    ]


def _estimate(attr: Attr) -> int:
    """Upper bound of an attribute's encoded size in bytes."""
    name, value = attr
    if name == "WGDEVICE_A_PEERS":
        return 4 + sum(4 + sum(_estimate(a) for a in p["attrs"]) for p in value)
    if name == "WGPEER_A_ALLOWEDIPS":
        return 4 + 40 * len(value)
    return 48  # keys (4 + 32), endpoints (4 + 28), numbers, names


def _describe_request(attrs: Sequence[Attr]) -> str:
    """What a request does, in words, without any key material."""
    parts = []
    names = {name for name, _ in attrs}
    if "WGDEVICE_A_PRIVATE_KEY" in names:
        parts.append("set the private key")
    if "WGDEVICE_A_LISTEN_PORT" in names:
        parts.append("set the listen port")
    if "WGDEVICE_A_FWMARK" in names:
        parts.append("set the fwmark")
    for name, value in attrs:
        if name != "WGDEVICE_A_PEERS":
            continue
        for entry in value:
            peer = dict(entry["attrs"])
            flags = peer.get("WGPEER_A_FLAGS", 0)
            verb = ("remove" if flags & WGPEER_F_REMOVE_ME
                    else "update" if flags & WGPEER_F_UPDATE_ONLY else "add")
            parts.append(f"{verb} peer {peer['WGPEER_A_PUBLIC_KEY']}")
    if len(parts) > 3:
        parts = [*parts[:2], f"{len(parts) - 2} more change(s)"]
    return ", ".join(parts) or "set the device"


# --- the socket ---------------------------------------------------------------------


class KernelWireGuard:
    """Kernel WireGuard devices of the network namespace the caller runs in.

    Like bmx7_wg.net.netlink.Netlink, it takes no namespace argument: the socket belongs
    to the namespace it is opened in. Not thread-safe.
    """

    def __init__(self) -> None:
        from pyroute2 import WireGuard
        from pyroute2.netlink.exceptions import NetlinkError

        self._netlink_error = NetlinkError
        try:
            self._wg: Any = WireGuard()
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                raise KernelWireGuardUnavailable(
                    "kernel", "open WireGuard's generic netlink family",
                    "this kernel has no WireGuard (module not loaded and not loadable)", exc.code,
                ) from None
            raise KernelWireGuardError(
                "kernel", "open WireGuard's generic netlink family", _reason(exc), exc.code
            ) from None
        except OSError as exc:
            raise KernelWireGuardError(
                "kernel", "open a generic netlink socket", exc.strerror or str(exc), exc.errno
            ) from None
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wg.close()

    def __enter__(self) -> KernelWireGuard:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get(self, name: str) -> Device:
        """Read one WireGuard device: keys, port, fwmark, peers and their statistics."""
        try:
            messages = tuple(self._wg.info(name))
        except (self._netlink_error, OSError) as exc:
            raise KernelWireGuardError(
                name, "read the WireGuard device", _reason(exc), _code(exc)
            ) from None
        try:
            return device_from_messages(messages)
        except (MalformedMessage, KeyError, TypeError, ValueError) as exc:
            raise KernelWireGuardError(
                name, "read the WireGuard device", f"unexpected netlink message: {exc}"
            ) from None

    def apply(self, change: DeviceChange) -> None:
        """Carry out one interface's device changes. Not atomic: on failure, what
        earlier requests did stays done, and the error says what failed."""
        from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
        from pyroute2.netlink.generic.wireguard import (
            WG_CMD_SET_DEVICE,
            WG_GENL_VERSION,
            wgmsg,
        )

        for attrs in set_requests(change):
            msg = wgmsg()
            msg["cmd"] = WG_CMD_SET_DEVICE
            msg["version"] = WG_GENL_VERSION
            msg["attrs"] = [list(a) for a in attrs]
            try:
                # Consumed in full: pyroute2 0.9 returns a generator and only raises
                # the kernel's error while it is read.
                tuple(self._wg.nlm_request(
                    msg, msg_type=self._wg.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK
                ))
            except (self._netlink_error, OSError) as exc:
                raise KernelWireGuardError(
                    change.interface, _describe_request(attrs), _reason(exc), _code(exc)
                ) from None


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return exc.errno if isinstance(exc, OSError) else None


def _reason(exc: BaseException) -> str:
    code = _code(exc)
    if code is not None and code > 0:
        reason = os.strerror(code)
        if code == errno.ENODEV:
            reason += " (no such WireGuard interface)"
        return reason
    return str(exc) or type(exc).__name__
