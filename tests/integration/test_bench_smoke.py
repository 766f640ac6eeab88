"""`make bench` at a tiny size, so the benchmark keeps working. It asserts what the
benchmark produces, never how fast anything is: speed is for bench/RESULTS.md."""

from __future__ import annotations

import json
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
        "BENCH_MESH_SIZES": "4",
        "BENCH_MESH_RUNS": "1",
        "BENCH_MESH_EVENTS": "2",
        "BENCH_MESH_IDLE": "0.2",
        "BENCH_WGQUICK_SIZES": "2",
        "BENCH_WGQUICK_RUNS": "1",
    }
    proc = subprocess.run(
        [str(REPO / "bench" / "run")], capture_output=True, text=True, env=env, timeout=600, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert "kept by hand" in text
    for row in ("| 3 | apply from empty |", "| 3 | no-op apply |", "| 3 | one changed peer |", "| 5 |"):
        assert row in text, row
    assert "p50" in text and "Cold start" in text
    # The mesh and wg-quick tables: each header, then a row of the size asked for.
    assert first_row(text, "| mesh nodes | cold start").startswith("| 4 | ")
    assert first_row(text, "| mesh nodes | CPU per event").startswith("| 4 | ")
    assert first_row(text, "| peers | `bmx7-wg apply` from nothing").startswith("| 2 | ")


def test_inprocess_bench_runs_and_reports_each_figure() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bench.inprocess", "--sizes", "3", "--runs", "1"],
        capture_output=True, text=True, env=child_env(), timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)["3"]
    assert set(figures) == {"toml_bytes", "tomllib_loads_ms", "ipaddress_text_ms"}
    assert figures["toml_bytes"] > 0


def first_row(text: str, header: str) -> str:
    """The first row of the table whose header line starts with HEADER."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    assert starts, f"no table {header!r}"
    return lines[starts[0] + 2]  # after the header and the alignment line
