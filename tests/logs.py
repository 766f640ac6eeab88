"""Attaching a handler to one of bmx7_wg's loggers for a test: the package's loggers may not
propagate to the root logger (service/logsetup.py), so pytest's caplog does not see them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

H = TypeVar("H", bound=logging.Handler)


@contextmanager
def attached(logger_name: str, handler: H) -> Iterator[H]:
    """`handler` hears everything the named logger logs, DEBUG and up, within the block."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class Heard(logging.Handler):
    """Keeps every record it hears; `take` hands over (level, message) pairs and forgets them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[tuple[int, str]]:
        taken, self.records = self.records, []
        return [(r.levelno, r.getMessage()) for r in taken]
