"""ruff and mypy (strict) as tests: a lint failure fails the suite as any other test does.

The tools are the ones installed beside the Python that runs the tests (the venvs of
`make test` have them both); `make lint` runs the same two commands.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    path = BIN / name
    if not os.access(path, os.X_OK):
        pytest.skip(f"{name} is not installed beside {sys.executable} (make test-setup installs it)")
    return str(path)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


def test_ruff() -> None:
    result = run(tool("ruff"), "check", "--no-cache", "bmx7_wg", "bmx7_wg_lab", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    # The packages and the strictness come from pyproject.toml, as in `make lint`.
    result = run(tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr
