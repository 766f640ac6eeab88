"""bmx7-wg's marked block in a hosts file: read it, and replace it without touching a
byte outside it.

The file belongs to the administrator (and to other tools, and to editors that save by
renaming a new file into place). bmx7-wg owns the lines between its two marker lines
and nothing else: a new block goes at the end of the file, an empty one is removed
with its markers.

Writing: the new text goes to a temporary file in the same directory (mode and owner
of the old file), then is renamed over it, so that a reader sees the old file or the
new one, never half of one. Right before the rename the file is looked at again; if it
changed since it was read (an editor's rename-into-place changes its inode, a write in
place its mtime or size), the new text is made again from the file as it is now.
`/etc/hosts` inside `ip netns exec` is a bind mount of `/etc/netns/NS/hosts`: renaming
over a mount point fails (EBUSY), and so does one across file systems (EXDEV); then the
file is rewritten in place, under an flock of it, as the fallback.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bmx7_wg.errors import ApplyError

BEGIN = "# BEGIN bmx7-wg mesh names: kept by bmx7-wg run, edits between these lines are replaced"
END = "# END bmx7-wg mesh names"
MAX_SIZE = 64 * 2**20  # a hosts file larger than this is not ours to rewrite
ATTEMPTS = 5  # the file changed under us this many times in a row: give up until the next change


class HostsFileError(ApplyError):
    """The hosts file could not be read or written."""


@dataclass(frozen=True)
class HostsText:
    """A hosts file cut around our block: `before` + block + `after` is the file."""

    before: str
    block: tuple[str, ...] | None  # the lines between the markers; None: no block
    after: str

    def with_block(self, lines: Sequence[str]) -> str:
        """The file with `lines` as the block (none: no block, markers and all)."""
        if not lines:
            return self.before + self.after
        before = self.before
        if before and not before.endswith("\n"):
            before += "\n"  # the last line of a file without a final newline gets one
        return before + "\n".join((BEGIN, *lines, END)) + "\n" + self.after


def split(text: str) -> HostsText:
    """Cut `text` around the first BEGIN line followed by an END line; a marker without
    its partner is an ordinary comment line (it stays as it is)."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\r\n") == BEGIN), None)
    if start is not None:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip("\r\n") == END), None)
        if end is not None:
            block = tuple(line.rstrip("\r\n") for line in lines[start + 1 : end])
            return HostsText("".join(lines[:start]), block, "".join(lines[end + 1 :]))
    return HostsText(text, None, "")


def outside_names(hosts: HostsText) -> frozenset[str]:
    """Every host name the file has outside our block, lower-cased."""
    names: set[str] = set()
    for line in (hosts.before + hosts.after).splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(f.lower() for f in fields[1:])
    return frozenset(names)


def block_names(block: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Address -> its names, of the block's lines."""
    out: dict[str, tuple[str, ...]] = {}
    for line in block:
        fields = line.split()
        if len(fields) > 1:
            out[fields[0]] = tuple(fields[1:])
    return out


def identity(path: str) -> tuple[int, int, int, int] | None:
    """What changes when the file is written or replaced (None: no file)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def read(path: str) -> HostsText:
    """The file at `path` (a missing one is empty)."""
    try:
        return split(_read(path)[0])
    except FileNotFoundError:
        return HostsText("", None, "")


def _read(path: str) -> tuple[str, os.stat_result]:
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise HostsFileError(f"{path} is not a regular file")
            data = fh.read(MAX_SIZE + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HostsFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_SIZE:
        raise HostsFileError(f"{path} is larger than {MAX_SIZE // 2**20} MiB")
    # Latin-1 maps every byte to one character and back: bytes outside our block
    # survive whatever their encoding.
    return data.decode("latin-1"), st


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino, a.st_mtime_ns, a.st_size) == (b.st_dev, b.st_ino, b.st_mtime_ns, b.st_size)


def write_block(
    path: str,
    lines: Sequence[str],
    *,
    before_rename: Callable[[], None] = lambda: None,
) -> bool:
    """Make `lines` the block of the hosts file at `path`; False: it already was.

    `before_rename` runs between writing the new file and the last look at the old one
    (tests put an editor's change there)."""
    target = os.path.realpath(path)  # a symlinked /etc/hosts stays a symlink
    if _mount_point(target):
        return _write_in_place(target, lines)  # no temporary file next to a bind mount
    for _ in range(ATTEMPTS):
        try:
            text, st = _read(target)
        except FileNotFoundError:
            if not lines:
                return False
            text, st = "", None
        new = split(text).with_block(lines)
        if new == text:
            return False
        directory = os.path.dirname(target)
        fd, temp = tempfile.mkstemp(prefix=".bmx7-wg.", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(new.encode("latin-1"))
                if st is not None:
                    os.fchmod(fh.fileno(), stat.S_IMODE(st.st_mode))
                    if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                        os.fchown(fh.fileno(), st.st_uid, st.st_gid)
                else:
                    os.fchmod(fh.fileno(), 0o644)
                fh.flush()
                os.fsync(fh.fileno())
            before_rename()
            try:
                now = os.stat(target)
            except FileNotFoundError:
                now = None
            if (now is None) != (st is None) or (now is not None and st is not None and not _same(now, st)):
                continue  # changed since it was read: make the text again
            try:
                os.rename(temp, target)
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EXDEV):
                    raise
                return _write_in_place(target, lines)
            temp = ""
            return True
        except OSError as exc:
            raise HostsFileError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            if temp:
                _remove(temp)
    raise HostsFileError(f"{path} changed {ATTEMPTS} times while bmx7-wg wrote its names: left for now")


def _mount_point(path: str) -> bool:
    """Whether something is mounted on `path` (a file bind-mounted there: `ip netns exec`
    puts /etc/netns/NS/hosts on /etc/hosts). A bind mount of a file of the same file
    system has the same st_dev as its directory: only the mount table tells."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
            for line in fh:
                fields = line.split(" ", 5)
                if len(fields) > 4 and _unescape(fields[4]) == path:
                    return True
    except OSError:
        pass
    return False


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as \040, \011, \012, \134.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _write_in_place(path: str, lines: Sequence[str]) -> bool:
    """The fallback where the file cannot be replaced (a bind mount): rewrite it in place
    under an flock of the file, read again under the lock."""
    with open(path, "r+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        text = fh.read(MAX_SIZE + 1).decode("latin-1")
        new = split(text).with_block(lines)
        if new == text:
            return False
        data = new.encode("latin-1")
        fh.seek(0)
        fh.write(data)
        fh.truncate(len(data))
        fh.flush()
        os.fsync(fh.fileno())
    return True


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
