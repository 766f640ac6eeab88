"""`make bench` at a tiny size, so the benchmark keeps working. It asserts what the
benchmark produces, never how fast anything is: speed is for bench/RESULTS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, child_env

pytestmark = pytest.mark.root


def test_bench_runs_and_writes_its_tables(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# Benchmarks\n\nkept by hand\n")
    env = child_env() | {
        "PYTHON": sys.executable,
        "BENCH_OUT": str(out),
        "BENCH_SIZES": "3",
        "BENCH_RUNS": "1",
        "BENCH_EVENTS": "3",
        "BENCH_IDLE_SIZES": "5",
        "BENCH_IDLE_WINDOW": "0.5",
    }
    proc = subprocess.run(
        [str(REPO / "bench" / "run")], capture_output=True, text=True, env=env, timeout=300, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "kept by hand" in text
    for row in ("| 3 | apply from empty |", "| 3 | no-op apply |", "| 3 | one changed peer |", "| 5 |"):
        assert row in text, row
    assert "p50" in text and "Cold start" in text
