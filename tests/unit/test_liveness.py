"""bmx7 liveness: decided by the control socket, restarts by the start time (mesh/liveness.py)."""

from __future__ import annotations

from bmx7_wg.mesh.liveness import Bmx7Watch, Liveness, compare, parse_uptime

SOCK = "/run/bmx7/sock"
N1 = "A" * 56


def up(started: float, node_id: str = N1) -> Liveness:
    return Liveness(SOCK, True, started, node_id)


DOWN = Liveness(SOCK, False, reason="Connection refused")


def test_parse_uptime() -> None:
    assert parse_uptime("0:00:01:50") == 110
    assert parse_uptime("2:03:04:05") == ((2 * 24 + 3) * 60 + 4) * 60 + 5
    assert parse_uptime("") is None and parse_uptime("1:2:3") is None and parse_uptime("a:b:c:d") is None


def test_changes() -> None:
    assert compare(None, DOWN) == "down"  # not answering at the first look is news
    assert compare(None, up(10)) is None
    assert compare(up(10), DOWN) == "down"
    assert compare(DOWN, DOWN) is None
    assert compare(DOWN, up(10)) == "back"
    assert compare(up(10), up(11.5)) is None  # the uptime is in whole seconds
    assert compare(up(10), up(20)) == "restarted"
    assert compare(up(10), up(10, "B" * 56)) == "restarted"


def test_watch_follows_successive_looks() -> None:
    watch = Bmx7Watch()
    assert [watch.update(x) for x in (up(10), up(10.4), DOWN, DOWN, up(50), up(90))] == [
        None, None, "down", None, "back", "restarted",
    ]
    assert DOWN.describe() == "bmx7 is not running (no answer on /run/bmx7/sock: Connection refused)"
