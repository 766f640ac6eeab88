"""bmx7-wg-lab's errors: a clear message and exit code, never a traceback, nothing created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def lab(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PYTHONPATH": str(REPO),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "BMX7_WG_LAB_DIR": str(tmp_path / "labs"),
    }
    return subprocess.run(
        [sys.executable, "-m", "bmx7_wg_lab", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["up", "--nodes", "4", "--topology", "star"], 2, "--topology 'star'"),
        (["up", "--nodes", "1", "--topology", "line"], 2, "--nodes 1"),
        (["up", "--nodes", "4", "--topology", "line", "--loss", "120"], 2, "--loss"),
        (["up", "--nodes", "4", "--topology", "line", "--name", "Bad-Name"], 2, "--name 'Bad-Name'"),
        (
            ["up", "--nodes", "4", "--topology", "line", "--bmx7", "/nonexistent/bmx7"],
            3,
            "scripts/build-bmx7",
        ),
        (["status", "--name", "nolab"], 6, "no lab named 'nolab'"),
        (["down", "--name", "nolab"], 6, "no lab named 'nolab'"),
        (["fault", "--name", "nolab", "cut", "n1", "n2"], 6, "no lab named 'nolab'"),
        (["fault", "--name", "nolab", "kill", "x1", "bmx7"], 2, "not a node"),
    ],
)
def test_errors_are_messages_with_their_exit_code(
    tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    out = lab(tmp_path, *args)
    assert out.returncode == code, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "labs").exists() or not any(
        p.name.endswith(".json") for p in (tmp_path / "labs").rglob("*")
    )


def test_help_names_every_verb_and_exit_code(tmp_path: Path) -> None:
    out = lab(tmp_path, "--help")
    assert out.returncode == 0
    for verb in ("up", "status", "fault", "measure", "down"):
        assert f"    {verb} " in out.stdout
    for code in range(9):
        assert f"\n  {code}  " in out.stdout
