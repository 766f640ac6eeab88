"""What wakes the service, and which timer each wake-up sets. Pure: which file event means
what (the configuration written or removed, an announcement changed, trust changed, bmx7
started) is decided here from the event's directory, name and mask, without inotify.

The loop (service/loop.py) reads inotify and rtnetlink and sets the timers this module
names; service/due.py says what the timers mean once they are due.
"""

from __future__ import annotations

import os
from collections.abc import Set
from dataclasses import dataclass

from bmx7_wg.config.model import Config
from bmx7_wg.mesh.bmx7 import SOCKET_NAME
from bmx7_wg.mesh.session import mesh_interface, watch_directories
from bmx7_wg.service.schedule import EVENTS, LINKS, MESH, RELOAD
from bmx7_wg.service.watch import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    FileEvent,
)

DEBOUNCE = 0.01  # seconds: let a burst of events settle before acting on it
# seconds: the same for announcement files, which a step handles in proportion to the
# change (a file renamed into place is one event; bmx7 refilling rcvdSms/ is a burst)
MESH_DEBOUNCE = 0.002
VANISHED_CHECK = 1.0  # seconds after the configuration file was removed, see whether it is back


@dataclass(frozen=True)
class Timer:
    """A timer a wake-up sets: `key` in `delay` seconds at the latest, for `reason`."""

    key: str
    delay: float
    reason: str


RESOLVED = Timer(EVENTS, DEBOUNCE, "an endpoint name resolved to a new address")
SIGHUP = Timer(RELOAD, 0, "SIGHUP")
LINK_CHANGED = Timer(LINKS, DEBOUNCE, "a managed interface changed")


@dataclass(frozen=True)
class FileEventMeaning:
    """What one file event tells the service."""

    timers: tuple[Timer, ...] = ()
    # A file of bmx7's rcvdSms/ whose content is complete and new (or gone): a step reads it.
    changed_announcement: str | None = None
    # bmx7 made its control socket: it started, even if too quickly for its uptime to tell.
    bmx7_started: bool = False


NOTHING = FileEventMeaning()


def bmx7_runtime_dir(config: Config) -> str | None:
    """bmx7's runtime directory, where the configuration has a mesh interface."""
    if config.bmx7 is None or mesh_interface(config) is None:
        return None
    return config.bmx7.runtime_dir


@dataclass(frozen=True)
class Watched:
    """The files and directories whose events mean something to the service."""

    config_path: str
    mesh_dirs: frozenset[str]  # rcvdSms/, and the trusted-nodes directory where trust is bmx7's
    bmx7_dir: str | None

    @classmethod
    def of(cls, config_path: str, config: Config, trust_dir: str | None) -> Watched:
        return cls(config_path, frozenset(watch_directories(config, trust_dir)), bmx7_runtime_dir(config))

    @property
    def received_dir(self) -> str | None:
        return os.path.join(self.bmx7_dir, "sms", "rcvdSms") if self.bmx7_dir else None

    def directories(self) -> list[tuple[str, bool]]:
        """Each directory to watch, and whether to follow it if it is a symbolic link:
        rcvdSms/ is never read through a symlink (mesh/bmx7.py), nor watched through one."""
        received = self.received_dir
        dirs = [(os.path.dirname(self.config_path), True)]
        dirs += [(d, d != received) for d in sorted(self.mesh_dirs)]
        if self.bmx7_dir:
            dirs.append((self.bmx7_dir, True))
        return dirs

    def all_watched(self, watched: Set[str]) -> bool:
        """Whether `watched` (the directories inotify watches) covers every one of these
        (one may have been made or replaced since)."""
        return watched >= {d for d, _ in self.directories()}


def file_event_meaning(ev: FileEvent, watched: Watched) -> FileEventMeaning:
    """What inotify's event `ev` means, given what is watched."""
    config_dir, config_name = os.path.split(watched.config_path)
    if ev.mask & IN_Q_OVERFLOW:
        lost = "file events overflowed"
        return FileEventMeaning((Timer(EVENTS, DEBOUNCE, lost), Timer(RELOAD, DEBOUNCE, lost)))
    if ev.directory == config_dir and ev.name == config_name:
        # Only a complete file: written and closed, or renamed into place. Its creation,
        # truncation or removal says nothing about its new content.
        if ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
            return FileEventMeaning((Timer(RELOAD, DEBOUNCE, "configuration file written"),))
        if ev.mask & (IN_DELETE | IN_MOVED_FROM):
            # Editors move the file away and write a new one: look again in a moment
            # (sooner if the new file is complete), and warn if it is missing.
            return FileEventMeaning((Timer(RELOAD, VANISHED_CHECK, "configuration file removed"),))
        return NOTHING
    if ev.directory == watched.received_dir and ev.name:
        # A file's content is complete when it is closed after writing or renamed into
        # place; its creation (IN_CREATE, then the writes) or a chmod says nothing.
        if ev.mask & (IN_CLOSE_WRITE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM):
            return FileEventMeaning(
                (Timer(MESH, MESH_DEBOUNCE, "mesh announcements changed"),), changed_announcement=ev.name
            )
        return NOTHING
    if ev.directory in watched.mesh_dirs:
        return FileEventMeaning((Timer(EVENTS, DEBOUNCE, "mesh announcements or trust changed"),))
    if ev.directory == watched.bmx7_dir and ev.name == SOCKET_NAME and ev.mask & (IN_CREATE | IN_MOVED_TO):
        made = Timer(EVENTS, DEBOUNCE, "bmx7 created its control socket")
        return FileEventMeaning((made,), bmx7_started=True)
    return NOTHING


def link_events_matter(touched: Set[int], overflow: bool, managed: Set[int]) -> bool:
    """Whether rtnetlink's events (the interface indexes they touched; `overflow`: some
    were lost) may concern a managed interface. Most are the echo of our own changes (some
    arrive late, as a link comes up): the links are read first (LINKS), and only a
    difference costs a full reconcile."""
    return overflow or bool(touched & managed)
