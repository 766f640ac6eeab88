"""What wakes the service: rtnetlink notifications reduced to interface indexes (net/rtnl.py),
and logging that works without python-systemd (service/logsetup.py)."""

from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from bmx7_wg.net import rtnl
from bmx7_wg.service.logsetup import setup_logging
from bmx7_wg.service.watch import Inotify


def _message(kind: int, body: bytes) -> bytes:
    data = struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body
    return data + b"\0" * (-len(data) & 3)


def _attr(kind: int, payload: bytes) -> bytes:
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) & 3)


def test_notified_indexes() -> None:
    ifinfo = struct.pack("=BxHiII", 0, 0, 7, 0, 0)
    link = _message(rtnl.RTM_NEWLINK, ifinfo + _attr(rtnl.IFLA_IFNAME, b"wg0\0"))
    addr = _message(rtnl.RTM_DELADDR, struct.pack("=BBBBI", socket.AF_INET6, 128, 0, 0, 9))
    route = _message(
        rtnl.RTM_NEWROUTE,
        struct.pack("=BBBBBBBBI", socket.AF_INET6, 16, 0, 0, 254, 77, 0, 1, 0)
        + _attr(rtnl.RTA_DST, bytes(16))
        + _attr(rtnl.RTA_OIF, struct.pack("=I", 11)),
    )
    no_oif = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, 254, 3, 0, 6, 0)  # a blackhole route
    blackhole = _message(rtnl.RTM_NEWROUTE, no_oif)
    other = _message(rtnl.NLMSG_DONE, b"\0" * 4)
    assert rtnl.notified_indexes(link + addr + route + blackhole + other) == {7, 9, 11}
    # A cut or malformed datagram yields what precedes the damage, never an exception.
    assert rtnl.notified_indexes(link + addr[:10]) == {7}
    assert rtnl.notified_indexes(struct.pack("=IHHII", 3, rtnl.RTM_NEWLINK, 0, 0, 0)) == set()


def test_journal_without_python_systemd_logs_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "systemd", None)  # `import systemd` now fails as if missing
    monkeypatch.setenv("BMX7_WG_LOG", "journal")
    setup_logging(logging.INFO, service=True)
    try:
        logging.getLogger("bmx7_wg.test").info("wg0: add peer X")
    finally:
        logging.getLogger("bmx7_wg").handlers.clear()
    err = capsys.readouterr().err
    assert "the Python module 'systemd' (python3-systemd) is missing: logging to stderr" in err
    assert "bmx7-wg: wg0: add peer X" in err


def test_a_symlinked_directory_is_watched_only_when_it_may_be_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "rcvdSms").symlink_to(target)
    inotify = Inotify()
    try:
        assert not inotify.watch(str(tmp_path / "rcvdSms"), follow=False)
        (target / "x").write_text("")
        assert inotify.read() == []  # nothing of the target's is seen
        assert inotify.watch(str(tmp_path / "rcvdSms"))
    finally:
        inotify.close()


def test_no_inotify_instance_left_is_a_clear_error_not_a_traceback() -> None:
    # The kernel's EMFILE, as a host whose inotify instances other services used up gives it; here
    # through the process's open-file limit, which the same errno reports (the user limit is global).
    script = (
        "import ctypes.util, os, resource\n"
        "from bmx7_wg.errors import WatchLimit\n"
        "from bmx7_wg.service.watch import Inotify\n"
        "ctypes.util.find_library = lambda name: 'libc.so.6'  # it needs files of its own\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir('/proc/self/fd')) - 1, hard))\n"
        "try:\n"
        "    Inotify()\n"
        "except WatchLimit as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert "cannot watch files for changes: too many open files" in out.stdout, out
    assert "fs.inotify.max_user_instances" in out.stdout and out.returncode == 0, out
