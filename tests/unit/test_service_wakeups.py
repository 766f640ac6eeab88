"""Which file event wakes the service for what (service/wakeups.py), without inotify."""

from __future__ import annotations

import pytest

from bmx7_wg.service.schedule import EVENTS, MESH, RELOAD
from bmx7_wg.service.wakeups import (
    DEBOUNCE,
    MESH_DEBOUNCE,
    VANISHED_CHECK,
    Timer,
    Watched,
    file_event_meaning,
    link_events_matter,
)
from bmx7_wg.service.watch import (
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DELETE_SELF,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    FileEvent,
)

RUNTIME = "/run/bmx7"
RECEIVED = "/run/bmx7/sms/rcvdSms"
TRUSTED = "/etc/bmx7/trustedNodes"
MESH_WATCHED = Watched("/etc/bmx7-wg/bmx7-wg.toml", frozenset({RECEIVED, TRUSTED}), RUNTIME)
STATIC_WATCHED = Watched("/etc/bmx7-wg/bmx7-wg.toml", frozenset(), None)
NODE_FILE = "A1B2C3D4" * 7 + ":wg-bmx7"


def timers(directory: str, name: str, mask: int, watched: Watched = MESH_WATCHED) -> list[Timer]:
    return list(file_event_meaning(FileEvent(directory, name, mask), watched).timers)


@pytest.mark.parametrize("mask", [IN_CLOSE_WRITE, IN_MOVED_TO])
def test_a_complete_configuration_file_reloads_it_after_the_debounce(mask: int) -> None:
    written = Timer(RELOAD, DEBOUNCE, "configuration file written")
    assert timers("/etc/bmx7-wg", "bmx7-wg.toml", mask) == [written]


@pytest.mark.parametrize("mask", [IN_DELETE, IN_MOVED_FROM])
def test_a_removed_configuration_file_is_looked_at_again_a_moment_later(mask: int) -> None:
    assert timers("/etc/bmx7-wg", "bmx7-wg.toml", mask) == [
        Timer(RELOAD, VANISHED_CHECK, "configuration file removed")
    ]
    assert VANISHED_CHECK > DEBOUNCE  # an editor's new file, written meanwhile, comes first


@pytest.mark.parametrize("mask", [IN_CREATE, IN_ATTRIB])
def test_a_configuration_file_being_made_or_chmodded_means_nothing_yet(mask: int) -> None:
    assert timers("/etc/bmx7-wg", "bmx7-wg.toml", mask) == []


def test_another_file_beside_the_configuration_means_nothing() -> None:
    assert timers("/etc/bmx7-wg", "bmx7-wg.toml.swp", IN_CLOSE_WRITE) == []
    assert timers("/etc/bmx7-wg", "other.toml", IN_CLOSE_WRITE, STATIC_WATCHED) == []


@pytest.mark.parametrize("mask", [IN_CLOSE_WRITE, IN_MOVED_TO, IN_DELETE, IN_MOVED_FROM])
def test_an_announcement_file_written_or_gone_is_a_step_on_that_file(mask: int) -> None:
    meaning = file_event_meaning(FileEvent(RECEIVED, NODE_FILE, mask), MESH_WATCHED)
    assert meaning.timers == (Timer(MESH, MESH_DEBOUNCE, "mesh announcements changed"),)
    assert meaning.changed_announcement == NODE_FILE
    assert not meaning.bmx7_started


@pytest.mark.parametrize("mask", [IN_CREATE, IN_ATTRIB])
def test_an_announcement_file_being_written_means_nothing_until_it_is_closed(mask: int) -> None:
    meaning = file_event_meaning(FileEvent(RECEIVED, NODE_FILE, mask), MESH_WATCHED)
    assert meaning.timers == () and meaning.changed_announcement is None


def test_rcvdsms_itself_going_away_is_a_full_reconcile() -> None:
    # No file name: the directory itself (bmx7 wiped it); no step can tell what changed.
    meaning = file_event_meaning(FileEvent(RECEIVED, "", IN_DELETE_SELF), MESH_WATCHED)
    assert meaning.timers == (Timer(EVENTS, DEBOUNCE, "mesh announcements or trust changed"),)
    assert meaning.changed_announcement is None


def test_a_trust_change_is_a_full_reconcile() -> None:
    assert timers(TRUSTED, "0123ABCD" * 7, IN_CREATE) == [
        Timer(EVENTS, DEBOUNCE, "mesh announcements or trust changed")
    ]


@pytest.mark.parametrize("mask", [IN_CREATE, IN_MOVED_TO])
def test_bmx7_making_its_control_socket_is_a_start(mask: int) -> None:
    meaning = file_event_meaning(FileEvent(RUNTIME, "sock", mask), MESH_WATCHED)
    assert meaning.timers == (Timer(EVENTS, DEBOUNCE, "bmx7 created its control socket"),)
    assert meaning.bmx7_started


def test_other_files_of_bmx7s_runtime_directory_mean_nothing() -> None:
    assert file_event_meaning(FileEvent(RUNTIME, "sock", IN_DELETE), MESH_WATCHED).timers == ()
    assert file_event_meaning(FileEvent(RUNTIME, "json", IN_CREATE), MESH_WATCHED).timers == ()
    # Without a mesh interface bmx7's directory is nobody's business.
    assert file_event_meaning(FileEvent(RUNTIME, "sock", IN_CREATE), STATIC_WATCHED) == file_event_meaning(
        FileEvent("/elsewhere", "x", IN_CREATE), STATIC_WATCHED
    )
    assert not file_event_meaning(FileEvent(RUNTIME, "sock", IN_CREATE), STATIC_WATCHED).bmx7_started


def test_lost_file_events_reload_and_reconcile() -> None:
    assert set(timers("", "", IN_Q_OVERFLOW)) == {
        Timer(RELOAD, DEBOUNCE, "file events overflowed"),
        Timer(EVENTS, DEBOUNCE, "file events overflowed"),
    }


def test_what_is_watched_and_how() -> None:
    assert set(MESH_WATCHED.directories()) == {
        ("/etc/bmx7-wg", True),
        (RECEIVED, False),  # never through a symbolic link
        (TRUSTED, True),
        (RUNTIME, True),
    }
    assert STATIC_WATCHED.directories() == [("/etc/bmx7-wg", True)]
    assert MESH_WATCHED.all_watched({"/etc/bmx7-wg", RECEIVED, TRUSTED, RUNTIME, "/more"})
    assert not MESH_WATCHED.all_watched({"/etc/bmx7-wg", RUNTIME, TRUSTED})  # rcvdSms/ was remade


def test_link_events_matter_only_on_managed_interfaces_or_when_lost() -> None:
    assert link_events_matter({3, 7}, False, {7})
    assert not link_events_matter({3}, False, {7})
    assert link_events_matter(set(), True, set())
