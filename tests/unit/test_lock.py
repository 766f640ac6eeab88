"""The per-network-namespace lock: a second holder waits, then gives up naming the first."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
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


# -- nobody else can hold it ---------------------------------------------------------------

NOBODY = 65534


@pytest.fixture
def open_run_dir() -> Iterator[Path]:
    """A lock directory any user can enter, as systemd's RuntimeDirectory= made it (0755)
    before bmx7-wg fixed it; under /tmp, so that `nobody` can reach it."""
    base = Path(tempfile.mkdtemp(prefix="bmx7wg-lock-"))
    try:
        base.chmod(0o755)
        run = base / "run"
        run.mkdir(mode=0o755)
        run.chmod(0o755)
        yield run
    finally:
        shutil.rmtree(base)


def _flock_as_nobody(path: Path) -> subprocess.Popen[str]:
    """A process of user nobody holding `path` flocked through a read-only descriptor."""
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def _end(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)


@pytest.mark.root
def test_a_read_only_flock_by_another_user_is_not_honoured(
    open_run_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A lock file left as an earlier version made it (0644), flocked read-only by nobody.
    path = Path(lock.lock_path(str(open_run_dir)))
    path.write_text("1 apply\n")
    path.chmod(0o644)
    squatter = _flock_as_nobody(path)
    try:
        # Before, this waited its 10 s and raised LockBusy.
        with lock.held("apply", wait=10, directory=str(open_run_dir)):
            st = path.lstat()
            assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
            assert path.read_text() == f"{os.getpid()} apply\n"
            assert stat.S_IMODE(open_run_dir.stat().st_mode) == 0o700
            # nobody can no longer reach the directory, let alone the new file.
            assert subprocess.run(
                ["cat", str(path)], user=NOBODY, group=NOBODY, capture_output=True, check=False
            ).returncode != 0
        assert "is not a private file" in caplog.text and "not honoured" in caplog.text
        # The lock works as before: the next holder neither waits nor warns.
        caplog.clear()
        with lock.held("down", wait=10, directory=str(open_run_dir)):
            pass
        assert "not a private file" not in caplog.text
    finally:
        _end(squatter)
    assert [p.name for p in open_run_dir.iterdir()] == []


@pytest.mark.root
def test_the_directory_is_made_private_whoever_made_it(open_run_dir: Path) -> None:
    os.chown(open_run_dir, NOBODY, NOBODY)
    open_run_dir.chmod(0o777)
    with lock.held("apply", directory=str(open_run_dir)):
        st = open_run_dir.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o700)


@pytest.mark.parametrize("kind", ["group-readable", "hard link", "symlink", "foreign owner"])
def test_a_lock_file_that_is_not_private_is_replaced(tmp_path: Path, kind: str) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    path = Path(lock.lock_path(str(run)))
    target = tmp_path / "target"
    target.write_text("untouched\n")
    target.chmod(0o600)
    if kind == "group-readable":
        path.write_text("")
        path.chmod(0o640)
    elif kind == "hard link":
        os.link(target, path)
    elif kind == "symlink":
        path.symlink_to(target)
    else:
        path.write_text("")
        path.chmod(0o600)
        os.chown(path, NOBODY, NOBODY)
    with lock.held("apply", wait=10, directory=str(run)):
        assert lock.is_private(path.lstat())
    assert target.read_text() == "untouched\n"  # neither written nor removed through the link
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "target"]


def test_a_symlink_as_the_directory_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    (tmp_path / "run").symlink_to(elsewhere)
    with pytest.raises(LockBusy, match="cannot use the lock directory"), lock.held(
        "apply", directory=str(tmp_path / "run")
    ):
        pass
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755 and list(elsewhere.iterdir()) == []


def test_replacing_waiters_never_remove_each_others_lock(tmp_path: Path) -> None:
    # Many waiters meet one file that is not private: exactly one holds the lock at a time.
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    path = Path(lock.lock_path(str(run)))
    inside = 0
    most = 0
    guard = threading.Lock()
    errors: list[BaseException] = []

    def worker() -> None:
        nonlocal inside, most
        try:
            for _ in range(20):
                with lock.held("apply", wait=60, directory=str(run)):
                    with guard:
                        inside += 1
                        most = max(most, inside)
                    time.sleep(0.001)
                    with guard:
                        inside -= 1
                # Leave a file that is not private behind, now and then.
                with contextlib.suppress(FileExistsError):
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                    os.fchmod(fd, 0o644)
                    os.close(fd)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert most == 1
