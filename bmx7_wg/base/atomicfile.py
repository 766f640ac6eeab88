"""Replacing a file's whole content at once: a temporary file beside it, then a rename.

Whoever reads the file sees the old content or the new one, never a part; a failure
leaves the old file as it was and no temporary file behind. The temporary name starts
with a dot and ends in `.tmp`, never in the file's own name or suffix: a service that
watches a directory for a name (bmx7-wg run, for its configuration) or a collector that
reads `*.prom` (node_exporter) sees only the rename.
"""

from __future__ import annotations

import os


def write_atomically(
    path: str, data: bytes, mode: int, uid: int = -1, gid: int = -1, *, durable: bool = True
) -> None:
    """Make `path` hold `data`, with `mode` and (where given) owner `uid`/`gid`. `durable`:
    the data reaches the disk before the rename, so a crash leaves the old file or the
    new one (a file rewritten every few seconds, such as a metrics textfile, skips it).
    OSError if the directory is missing or not writable; a symlink at the temporary
    name is refused, not followed."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.bmx7-wg-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:  # os.write may write less than it was given
            view = view[os.write(fd, view) :]
        if uid != -1 or gid != -1:
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
