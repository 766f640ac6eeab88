"""The service's mesh state file (service/state.py): round trip, modes, refusal of bad files."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bmx7_wg.mesh.grace import Remembered
from bmx7_wg.plan.state import Peer
from bmx7_wg.service.state import MAX_SIZE, MeshMemory, format_state

B = "B" * 56
KEY = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE="


def remembered() -> dict[str, Remembered]:
    peer = Peer(
        public_key=KEY,
        allowed_ips=frozenset({"fd77:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb/128", "10.9.0.0/24"}),
        endpoint="[fd70:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb:bbbb]:40456",
        name="node2",
        source="mesh",
        node_id=B,
    )
    return {B: Remembered(peer, 1_700_000_000.5)}


def test_round_trip_and_modes(tmp_path: Path) -> None:
    memory = MeshMemory(str(tmp_path / "run"))
    memory.save("wm0", remembered())
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700
    path = Path(memory.path("wm0"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = memory.load("wm0")
    assert loaded == remembered()
    assert loaded[B].peer.node_id == B and loaded[B].peer.source == "mesh" and loaded[B].peer.name == "node2"
    assert memory.load("other") == {}  # no file: nothing remembered
    # systemd makes /run/bmx7-wg 0755 (one RuntimeDirectoryMode= for all): made 0700.
    (tmp_path / "run").chmod(0o755)
    memory.save("wm0", remembered())
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.update(format=2),
        lambda d: d.update(interface="wm1"),
        lambda d: d["peers"][0].update(node_id="../x"),
        lambda d: d["peers"][0].update(public_key="not a key"),
        lambda d: d["peers"][0].update(allowed_ips=["10.9.0.1/24"]),
        lambda d: d["peers"][0].update(last_seen="yesterday"),
        lambda d: d["peers"][0].pop("endpoint"),
    ],
)
def test_a_bad_file_is_ignored_with_a_warning(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], caplog: pytest.LogCaptureFixture
) -> None:
    memory = MeshMemory(str(tmp_path))
    memory.save("wm0", remembered())
    path = Path(memory.path("wm0"))
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    assert memory.load("wm0") == {}
    assert "ignoring the mesh state file" in caplog.text


def test_garbage_is_ignored(tmp_path: Path) -> None:
    memory = MeshMemory(str(tmp_path))
    Path(memory.path("wm0")).write_bytes(b"\x00\xff{")
    assert memory.load("wm0") == {}


@pytest.mark.parametrize("count", [0, 1, 3])
def test_the_file_is_the_json_of_format_state(tmp_path: Path, count: int) -> None:
    """Written peer by peer, the file still holds exactly format_state's object."""
    memory = MeshMemory(str(tmp_path))
    (one,) = remembered().values()
    some = {
        f"{i:056X}": Remembered(replace(one.peer, node_id=f"{i:056X}"), one.last_seen + i)
        for i in range(count)
    }
    memory.save("wgmesh", some)
    assert json.loads(Path(memory.path("wgmesh")).read_text()) == format_state("wgmesh", some)


@pytest.mark.parametrize("kind", ["fifo", "symlink", "too large", "group-readable", "directory"])
def test_a_state_file_that_could_block_or_lead_elsewhere_is_ignored(
    tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    run = tmp_path / "run"
    memory = MeshMemory(str(run))
    memory.save("wm0", remembered())
    path = Path(memory.path("wm0"))
    target = tmp_path / "elsewhere.json"
    target.write_bytes(path.read_bytes())
    target.chmod(0o600)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path, 0o600)  # no writer: a blocking open would wait for ever
    elif kind == "symlink":
        path.symlink_to(target)  # a valid state file, but not here
    elif kind == "too large":
        with path.open("wb") as fh:
            fh.truncate(MAX_SIZE + 1)
        path.chmod(0o600)
    elif kind == "group-readable":
        path.write_bytes(target.read_bytes())
        path.chmod(0o640)
    else:
        path.mkdir()
    # A subprocess with a timeout: a FIFO opened the blocking way would never return.
    code = (
        "import json, sys\nfrom bmx7_wg.service.state import MeshMemory\n"
        f"print(json.dumps(sorted(MeshMemory({str(run)!r}).load('wm0'))))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []
    assert "ignoring the mesh state file" in proc.stderr or "cannot read the mesh state file" in proc.stderr
    assert target.read_bytes() != b""  # never written through


def test_the_state_file_is_written_over_a_symlink_not_through_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    memory = MeshMemory(str(run))
    memory.save("wm0", remembered())
    path = Path(memory.path("wm0"))
    target = tmp_path / "target"
    target.write_text("untouched")
    path.unlink()
    path.symlink_to(target)
    memory.save("wm0", remembered())
    assert target.read_text() == "untouched"
    assert not path.is_symlink() and memory.load("wm0") == remembered()


def test_loading_makes_the_directory_private(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    run.chmod(0o755)
    assert MeshMemory(str(run)).load("wm0") == {}
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
