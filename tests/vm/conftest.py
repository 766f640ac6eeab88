"""Tests that need Debian's kernel (kernel WireGuard): they run only inside vm/run.

vm/run sets BMX7_WG_IN_VM=1; anywhere else these tests are skipped with the reason.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

IN_VM = os.environ.get("BMX7_WG_IN_VM") == "1"
CLONE_NEWNET = 0x40000000


def pytest_report_header() -> str:
    where = "inside the VM" if IN_VM else "not in the VM: tests/vm are skipped"
    return f"bmx7-wg vm tests: {where}; pyroute2 {importlib.metadata.version('pyroute2')}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if IN_VM:
        return
    skip = pytest.mark.skip(
        reason="needs kernel WireGuard: runs only inside the VM "
        "(vm/run -- .venvs/debian/bin/python -m pytest -m vm tests/vm)"
    )
    for item in items:
        if "vm" in item.keywords:
            item.add_marker(skip)


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@contextmanager
def in_netns(name: str) -> Iterator[None]:
    """Run the block (this thread) in network namespace `name`, then come back.

    Python 3.11 has no os.setns; libc's is called directly. Sockets opened inside
    stay in that namespace after the block.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(target, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
        try:
            yield
        finally:
            if libc.setns(home, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back to the original namespace")
    finally:
        os.close(target)
        os.close(home)


@pytest.fixture
def token() -> str:
    """A short random token for names: interfaces, namespaces, sockets."""
    return secrets.token_hex(3)


@pytest.fixture
def netns(token: str) -> Iterator[list[str]]:
    """Two fresh network namespaces, removed afterwards with all they hold."""
    names = [f"bwk{token}a", f"bwk{token}b"]
    for name in names:
        sh("ip", "netns", "add", name)
    try:
        yield names
    finally:
        for name in names:
            sh("ip", "netns", "del", name, check=False)
