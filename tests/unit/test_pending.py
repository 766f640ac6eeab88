"""The claim of a waiting apply --confirm: one per network namespace, a dead holder's
claim is taken over, a recycled pid is not taken for the holder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg import pending
from bmx7_wg.errors import ConfirmPending


@pytest.fixture(autouse=True)
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("BMX7_WG_RUN_DIR", str(tmp_path))
    yield tmp_path


def _claim_as(pid: int, started: int | None) -> None:
    os.makedirs(pending.directory(), mode=0o700)
    claim = {"pid": pid, "started": started, "deadline": 1e10, "config": "/etc/bmx7-wg.toml"}
    Path(pending.directory(), "pending").write_text(json.dumps(claim))


def test_a_live_holder_is_refused_with_its_pid() -> None:
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _claim_as(holder.pid, pending.process_start(holder.pid))
        with pytest.raises(ConfirmPending, match=rf"pid {holder.pid}\) waits for `bmx7-wg confirm`"):
            pending.claim("/etc/bmx7-wg.toml")
        with pytest.raises(ConfirmPending, match=r"^apply: apply --confirm"):
            pending.refuse_while_pending("apply")
    finally:
        holder.kill()
        holder.wait()


def test_a_dead_or_recycled_holder_is_taken_over(run_dir: Path) -> None:
    _claim_as(os.getpid(), 1)  # our pid, but another start time: not us, and not alive
    assert pending.holder() is None
    mine = pending.claim("/etc/bmx7-wg.toml")
    assert mine.pid == os.getpid() and pending.read() == mine
    assert oct(os.stat(pending.directory()).st_mode & 0o777) == "0o700"
    pending.release("rolled back", "not confirmed in time")
    assert not os.path.exists(pending.directory())
    last = pending.last()
    assert last is not None and (last.pid, last.outcome) == (os.getpid(), "rolled back")
    # A new claim forgets how the last one ended: `confirm` answers for the new one.
    pending.claim("/etc/bmx7-wg.toml")
    assert pending.last() is None
