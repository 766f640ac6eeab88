"""The journal boundary: a logging handler that sends structured fields to journald."""

from __future__ import annotations

import logging
from typing import Any

_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalHandler(logging.Handler):
    """Like python-systemd's JournalHandler, plus the event fields from events.emit."""

    def __init__(self, identifier: str = "bmx7-wg") -> None:
        super().__init__()
        from systemd import journal  # type: ignore[attr-defined]

        self._send = journal.send
        self._identifier = identifier

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = dict(getattr(record, "fields", {}) or {})
            priority = _PRIORITY.get(record.levelno, 6)
            self._send(
                self.format(record),
                PRIORITY=str(priority),
                SYSLOG_IDENTIFIER=self._identifier,
                CODE_FILE=record.pathname,
                CODE_LINE=record.lineno,
                CODE_FUNC=record.funcName,
                **fields,
            )
        except OSError:
            self.handleError(record)


def journal_handler() -> logging.Handler:
    handler = JournalHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    return handler
