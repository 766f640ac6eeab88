"""Logging: plain lines on stderr; the journal when running under systemd (see journal.py)."""

from __future__ import annotations

import logging
import os
import sys


def under_systemd() -> bool:
    # systemd sets JOURNAL_STREAM to the stderr it connected to the journal.
    return bool(os.environ.get("JOURNAL_STREAM")) and bool(os.environ.get("INVOCATION_ID"))


def setup_logging(level: int, *, service: bool) -> None:
    root = logging.getLogger("bmx7_wg")
    root.handlers.clear()
    root.propagate = False
    if service:
        level = min(level, logging.INFO)
    root.setLevel(level)
    handler: logging.Handler | None = None
    missing = ""
    if service and (under_systemd() or os.environ.get("BMX7_WG_LOG") == "journal"):
        from bmx7_wg.service.journal import journal_handler

        try:
            handler = journal_handler()
        except ImportError as exc:
            # python-systemd is a Debian dependency, but a pip install may lack it. Under
            # systemd stderr goes to the journal anyway, only without the event fields.
            missing = exc.name or "systemd"
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        # BMX7_WG_LOG_TIME=1 puts the wall-clock time (seconds since the epoch, to the
        # microsecond) before each line: bmx7-wg-lab times each change from it.
        stamp = "%(created).6f " if os.environ.get("BMX7_WG_LOG_TIME") == "1" else ""
        handler.setFormatter(logging.Formatter(stamp + "bmx7-wg: %(message)s"))
    root.addHandler(handler)
    if missing:
        root.warning(
            "the Python module %r (python3-systemd) is missing: logging to stderr, "
            "without the journal fields (MESSAGE_ID, BMX7WG_*)",
            missing,
        )


JOURNAL_SOCKET = "/run/systemd/journal/socket"


def events_to_journal() -> None:
    """Send the events (bmx7_wg.service.events) of a one-shot command to the journal too,
    with their fields, if there is a journal: what `apply --confirm` rolls back is in the
    journal, as the service's changes are. The other messages stay on stderr."""
    if not os.path.exists(JOURNAL_SOCKET):
        return
    try:
        from bmx7_wg.service.journal import journal_handler

        handler = journal_handler()
    except ImportError:
        return
    root = logging.getLogger("bmx7_wg")
    for h in root.handlers:
        if h.level == logging.NOTSET:
            h.setLevel(root.level)  # stderr shows what it showed before
    events = logging.getLogger("bmx7_wg.service.events")
    events.setLevel(logging.INFO)
    events.addHandler(handler)
