"""bmx7-wg's block in a hosts file (net/hostsfile.py): every byte outside it stays."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from bmx7_wg.net import hostsfile
from bmx7_wg.net.hostsfile import BEGIN, END, split, write_block

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n# the printer\n10.0.0.9 printer\n"
LINES = ("fd77:8988:8edf:9b64:a255:c3ab:1cd3:ca9a\tnode3.mesh 89888edf.mesh",)


def test_a_block_is_added_at_the_end_and_removed_with_its_markers(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    assert write_block(str(path), LINES)
    assert path.read_text() == HOSTS + f"{BEGIN}\n{LINES[0]}\n{END}\n"
    assert not write_block(str(path), LINES)  # nothing to change: not written
    assert write_block(str(path), ())
    assert path.read_text() == HOSTS


def test_lines_after_the_block_and_odd_bytes_stay(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    after = b"# added later by hand\r\n10.0.0.7 nas\xff\xfe\n\n"
    path.write_bytes(HOSTS.encode() + f"{BEGIN}\nold line\n{END}\n".encode() + after)
    write_block(str(path), LINES)
    assert path.read_bytes() == HOSTS.encode() + f"{BEGIN}\n{LINES[0]}\n{END}\n".encode() + after
    write_block(str(path), ())
    assert path.read_bytes() == HOSTS.encode() + after


def test_mode_and_owner_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    path.chmod(0o640)
    if os.geteuid() == 0:
        os.chown(path, 123, 456)
    write_block(str(path), LINES)
    st = path.stat()
    assert st.st_mode & 0o7777 == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (123, 456)
    assert [p.name for p in tmp_path.iterdir()] == ["hosts"]  # no temporary file left


def test_a_symlinked_hosts_file_stays_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real-hosts"
    real.write_text(HOSTS)
    link = tmp_path / "hosts"
    link.symlink_to(real)
    write_block(str(link), LINES)
    assert link.is_symlink()
    assert LINES[0] in real.read_text()


def test_no_file_and_no_names_makes_no_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    assert not write_block(str(path), ())
    assert not path.exists()
    write_block(str(path), LINES)
    assert path.read_text() == f"{BEGIN}\n{LINES[0]}\n{END}\n"
    assert path.stat().st_mode & 0o777 == 0o644


def test_an_editors_rename_into_place_during_the_write_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    edited = HOSTS + "10.0.0.8 scanner\n"
    edits = iter([edited])

    def editor_saves() -> None:
        # What vim and sed -i do: write a new file, rename it over the old one.
        text = next(edits, None)
        if text is not None:
            new = tmp_path / "hosts.swp"
            new.write_text(text)
            os.rename(new, path)

    assert write_block(str(path), LINES, before_rename=editor_saves)
    assert path.read_text() == edited + f"{BEGIN}\n{LINES[0]}\n{END}\n"


def test_an_editor_that_never_stops_is_given_up_on_without_loss(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    count = 0

    def editor_saves() -> None:
        nonlocal count
        count += 1
        new = tmp_path / "hosts.swp"
        new.write_text(HOSTS + f"10.0.0.{count} edit{count}\n")
        os.rename(new, path)

    try:
        write_block(str(path), LINES, before_rename=editor_saves)
    except hostsfile.HostsFileError as exc:
        assert "changed 5 times" in str(exc)
    else:
        raise AssertionError("expected HostsFileError")
    assert path.read_text() == HOSTS + f"10.0.0.{count} edit{count}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts"]


def test_concurrent_editors_never_lose_bytes_outside_the_block(tmp_path: Path) -> None:
    """An editor renames versions into place while the block is rewritten again and
    again: the file is always one editor version plus a whole block (or none)."""
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    versions = {HOSTS} | {HOSTS + f"10.1.0.{i} edit{i}\n" for i in range(200)}
    stop = threading.Event()

    def editor() -> None:
        try:
            for i in range(200):
                text = path.read_text()
                new = tmp_path / f"edit{i}"
                block = split(text).block or ()
                outside = HOSTS + f"10.1.0.{i} edit{i}\n"
                new.write_text(hostsfile.HostsText(outside, None, "").with_block(block))
                os.rename(new, path)
        finally:
            stop.set()

    thread = threading.Thread(target=editor)
    thread.start()
    n = 0
    while not stop.is_set():
        n += 1
        try:
            write_block(str(path), (f"fd77::{n % 7 + 1}\tnode{n % 7}.mesh",))
        except hostsfile.HostsFileError:
            pass
        cut = split(path.read_text())
        assert cut.before + cut.after in versions
    thread.join()
    cut = split(path.read_text())
    assert cut.before + cut.after in versions


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.characters(max_codepoint=255), max_size=200),
    st.lists(st.text("abc:019.\t ", min_size=1, max_size=20), max_size=4),
)
def test_outside_the_block_is_byte_for_byte_what_it_was(outside: str, lines: list[str]) -> None:
    lines = [line.strip() or "x" for line in lines]
    cut = split(outside)
    text = cut.with_block(lines)
    again = split(text)
    if cut.block is None and BEGIN not in outside:
        assert again.block == (tuple(lines) if lines else None)
        rest = again.before + again.after
        # The only byte ever added outside: a final newline the file lacked.
        assert rest in (outside, outside + "\n")
        assert split(again.with_block(())).before == rest
