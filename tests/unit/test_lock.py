"""The per-network-namespace lock: a second holder waits, then gives up naming the first."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bmx7_wg import lock
from bmx7_wg.errors import LockBusy


def test_the_lock_file_is_named_after_the_network_namespace(tmp_path: Path) -> None:
    inode = os.stat("/proc/self/ns/net").st_ino
    assert lock.lock_path(str(tmp_path)) == str(tmp_path / f"netns-{inode}.lock")
    assert lock.lock_path().startswith("/run/bmx7-wg/")


def test_a_second_holder_gives_up_naming_the_first(tmp_path: Path, no_hang: None) -> None:
    with lock.held("apply", directory=str(tmp_path)):
        started = time.monotonic()
        with pytest.raises(LockBusy) as caught, lock.held("down", wait=0.3, directory=str(tmp_path)):
            pass
        assert time.monotonic() - started >= 0.3
    assert f"pid {os.getpid()}, apply" in str(caught.value)
    assert "nothing was changed" in str(caught.value)
    assert LockBusy.exit_code == 7
    assert list(tmp_path.iterdir()) == []  # released: no file left behind


def test_a_waiter_gets_the_lock_when_it_is_released(tmp_path: Path) -> None:
    order: list[str] = []
    first_has_it = threading.Event()

    def first() -> None:
        with lock.held("apply", directory=str(tmp_path)):
            first_has_it.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_has_it.wait(5)
    with lock.held("run", wait=5, directory=str(tmp_path)):
        order.append("second in")
        # The file the first removed is not the one the second holds: it made a new one.
        path = Path(lock.lock_path(str(tmp_path)))
        assert path.read_text() == f"{os.getpid()} run\n"
    thread.join()
    assert order == ["first done", "second in"]
