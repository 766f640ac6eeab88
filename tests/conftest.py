"""Shared test helpers: run bmx7-wg as a user would, inside network namespaces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Tests marked root need root, network namespaces and the WireGuard tools. CI runs as
    # root and installs them; elsewhere they are reported as skipped with the reason.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces); CI runs these as root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


def bmx7_wg_command() -> list[str]:
    return [sys.executable, "-m", "bmx7_wg"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env
