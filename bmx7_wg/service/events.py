"""The events bmx7-wg logs, each with a journald MESSAGE_ID and structured fields.

A log call passes `extra={"fields": {...}}`; the journal handler sends the fields as
journal fields (BMX7WG_INTERFACE=wg0 ...), stderr shows only the message. The catalog
(systemd/bmx7-wg.catalog) explains each MESSAGE_ID for `journalctl -x`.
"""

from __future__ import annotations

import logging
from typing import Any

from bmx7_wg.errors import ConfigError
from bmx7_wg.plan.actions import Action, AddPeer, RemovePeer, UpdatePeer
from bmx7_wg.plan.execute import Failure

log = logging.getLogger("bmx7_wg.service.events")

PEER_ADDED = "49434b7b69a9485fbbc2a1c0536b1b0c"
PEER_REMOVED = "9189faab9a274123b1ff87f963a06b30"
ANNOUNCEMENT_REFUSED = "c483c3f7a4c44d5c9af5b7a06e2c298b"
HANDSHAKE_STALE = "9fc329ccd71b4d54b64ef28a3c0157b8"
CONFIG_REJECTED = "a3ca36f7f43343eaa62fcf5268f70155"
APPLY_FAILED = "f7b815d8c55346288f81540c55112381"
CHANGE_APPLIED = "bc82df85e058499fb7030ebf29e7de8b"
SERVICE_STARTED = "9c0969dcc25f44ad888cc1c18de8a023"
PEER_HELD = "457f3ec7497b43cfb8291ecc34030d91"
BMX7_UNAVAILABLE = "aaa7505173154461b9c6f8eff1fd168c"
BMX7_AVAILABLE = "78f0771a0c3244cfaeb4c1dba052116e"
NAME_REFUSED = "5d1f0c7e3b8a4e2f9c6a1b7d4e8f2a39"


def emit(level: int, message: str, message_id: str, **fields: Any) -> None:
    """Log one event. Field names are given without the BMX7WG_ prefix, lower case."""
    journal_fields = {f"BMX7WG_{k.upper()}": str(v) for k, v in fields.items() if v is not None}
    journal_fields["MESSAGE_ID"] = message_id
    log.log(level, "%s", message, extra={"fields": journal_fields})


def config_rejected(config_path: str, error: ConfigError) -> None:
    """One CONFIG_REJECTED entry per problem, each with its file and line."""
    for d in error.diagnostics:
        emit(logging.ERROR, f"configuration rejected: {d}", CONFIG_REJECTED, config=config_path, line=d.line)


def action_failed(failure: Failure, *, why: str = "") -> None:
    """Log a change that failed (or was skipped, or clashed with something not ours)."""
    emit(
        logging.ERROR,
        f"{failure.describe()}" + (f" ({why})" if why else ""),
        APPLY_FAILED,
        interface=failure.action.interface,
        action=failure.action.kind,
        resource=failure.resource,
        status=failure.status,
    )


def action_done(action: Action, *, why: str = "") -> None:
    """Log a change that was made, with the reason, as the right kind of event."""
    text = action.describe() + (f" ({why})" if why else "")
    fields: dict[str, Any] = {"interface": action.interface, "action": action.kind}
    if isinstance(action, AddPeer | UpdatePeer):
        fields.update(peer=action.peer.public_key, node_id=action.peer.node_id, node_name=action.peer.name)
        if action.peer.node_id:
            text += f" [mesh node {action.peer.node_id[:8]}]"
    if isinstance(action, AddPeer):
        emit(logging.INFO, text, PEER_ADDED, **fields)
    elif isinstance(action, RemovePeer):
        emit(logging.INFO, text, PEER_REMOVED, peer=action.public_key, **fields)
    else:
        emit(logging.INFO, text, CHANGE_APPLIED, **fields)
