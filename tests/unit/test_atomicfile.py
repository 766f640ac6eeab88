"""base/atomicfile.py: a file's content replaced whole, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bmx7_wg.base.atomicfile import write_atomically


def test_the_file_gets_the_data_and_the_mode_and_nothing_is_left_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "f.prom"
    path.write_text("old\n")
    write_atomically(str(path), b"new\n", 0o644, durable=False)
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f.prom"]


def test_a_short_write_is_continued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write may take less than it is given: the rest is written, not lost."""
    real_write = os.write

    def short(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data[:3]))

    monkeypatch.setattr(os, "write", short)
    path = tmp_path / "state"
    write_atomically(str(path), b"0123456789", 0o600)
    assert path.read_bytes() == b"0123456789"


def test_a_failure_keeps_the_old_file_and_removes_the_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "bmx7-wg.toml"
    path.write_text("old\n")

    def fail(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_atomically(str(path), b"new\n", 0o600)
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["bmx7-wg.toml"]


def test_the_temporary_name_never_ends_in_the_file_s_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher of `bmx7-wg.toml` or a reader of `*.prom` must see only the rename."""
    seen: list[str] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_atomically(str(tmp_path / "bmx7-wg.prom"), b"x", 0o644, durable=False)
    [tmp] = seen
    assert tmp.startswith(".") and tmp.endswith(".tmp") and not tmp.endswith(".prom")
