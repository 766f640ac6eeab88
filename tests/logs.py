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
