"""Shared test helpers: run bmx7-wg as a user would, inside network namespaces."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A mesh configuration without [names] writes its peers' names to /etc/hosts. Tests never
# touch the machine's: each test that checks names names its own hosts file, every other
# mesh service (and what it starts) writes none.
os.environ.setdefault("BMX7_WG_HOSTS_FILE", "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked root need root, network namespaces and the WireGuard tools. CI runs as
    # root and installs them; elsewhere they are reported as skipped with the reason.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces); CI runs these as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


# A test that guards against a hang (a read that could block on a FIFO, a parser that
# could loop) takes this fixture: past the deadline it fails with TimeoutError instead of
# hanging the suite. SIGALRM interrupts a blocking system call (which then raises) as well
# as a loop in Python code; the test runs in pytest's main thread, where signals arrive.
NO_HANG_SECONDS = 20


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail, rather than hang the suite, if the test takes more than NO_HANG_SECONDS."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {NO_HANG_SECONDS} s: it hangs")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(NO_HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def bmx7_wg_command() -> list[str]:
    return [sys.executable, "-m", "bmx7_wg"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
