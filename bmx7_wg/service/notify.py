"""systemd's notify protocol (sd_notify), spoken directly on $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket


class Notifier:
    """Sends READY=1, STATUS=..., WATCHDOG=1 to systemd; does nothing outside systemd."""

    def __init__(self) -> None:
        path = os.environ.get("NOTIFY_SOCKET", "")
        self._address: str | None = None
        if path.startswith("@"):
            self._address = "\0" + path[1:]  # abstract socket
        elif path.startswith("/"):
            self._address = path
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.watchdog_interval: float | None = None
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            # Ping at half the interval systemd expects, as sd_watchdog_enabled(3) advises.
            self.watchdog_interval = int(usec) / 2_000_000

    def send(self, *lines: str) -> None:
        if self._address is None:
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            try:
                sock.sendto("\n".join(lines).encode(), self._address)
            except OSError:
                # systemd went away (or a test's socket closed): nothing to tell.
                pass

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def reloading(self) -> None:
        self.send("RELOADING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1")
