"""`down` as a planned change: `--check` shows it and changes nothing; a change that
cannot be made (the announcement in a read-only directory) fails loudly, the rest is
done, and the next `down` finishes it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import bmx7_wg_command, child_env
from tests.integration.netns import Host
from tests.integration.test_attacks import FakeBmx7, one_mesh_node

pytestmark = pytest.mark.root


@pytest.fixture
def mesh_node(tmp_path: Path) -> Iterator[tuple[Host, FakeBmx7]]:
    with one_mesh_node(tmp_path) as node:
        yield node


def test_down_check_shows_the_plan_and_changes_nothing(mesh_node: tuple[Host, FakeBmx7]) -> None:
    host, bmx7 = mesh_node
    sms = bmx7.root / "sms" / "sendSms" / "wg-bmx7"
    assert sms.exists() and "wg-bmx7" in bmx7.sim.live_sms
    before = host.snapshot()
    result = host.run_json("down", "--check")
    assert result == {
        "changed": True,
        "check": True,
        "actions": [
            {"interface": host.ifname, "action": "withdraw_announcement", "sms": "wg-bmx7"},
            {"interface": host.ifname, "action": "unregister_sms", "sms": "wg-bmx7"},
            {"interface": host.ifname, "action": "delete_link", "reason": "bmx7-wg down"},
        ],
    }
    text = host.run("down", "--check").stdout
    assert f"{host.ifname}: delete link (bmx7-wg down)" in text
    assert "3 change(s) pending (check mode: nothing was changed)" in text
    assert host.snapshot() == before
    assert sms.exists() and "wg-bmx7" in bmx7.sim.live_sms

    assert [a["action"] for a in host.run_json("down")["actions"]] == [
        "withdraw_announcement",
        "unregister_sms",
        "delete_link",
    ]
    assert host.ifname not in host.links()
    assert not sms.exists() and "wg-bmx7" not in bmx7.sim.live_sms
    assert host.run_json("down") == {"changed": False, "check": False, "actions": []}


def test_down_fails_loudly_when_the_announcement_cannot_be_withdrawn(
    mesh_node: tuple[Host, FakeBmx7],
) -> None:
    host, bmx7 = mesh_node
    send_dir = bmx7.root / "sms" / "sendSms"
    # sendSms/ read-only for this one command (a bind mount in a mount namespace of its own).
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"'
    down = ["ip", "netns", "exec", host.ns, *bmx7_wg_command(), "-c", str(host.config_path), "down"]
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(send_dir), *down]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), timeout=120)
    assert proc.returncode == 5, proc.stderr
    assert "withdraw announcement" in proc.stderr and "Read-only file system" in proc.stderr
    assert "1 change(s) failed, 2 applied" in proc.stderr
    # What did not need the file was done: the link is gone, bmx7 no longer carries the name.
    assert host.ifname not in host.links()
    assert "wg-bmx7" not in bmx7.sim.live_sms
    assert (send_dir / "wg-bmx7").exists()
    # The next down finishes it, though the interface is gone already.
    result = host.run_json("down")
    assert [a["action"] for a in result["actions"]] == ["withdraw_announcement"]
    assert not (send_dir / "wg-bmx7").exists()


def test_down_with_bmx7_stopped_withdraws_what_is_there(mesh_node: tuple[Host, FakeBmx7]) -> None:
    # A stopped bmx7 leaves json/parameters naming the SMS it published, but publishes nothing:
    # there is no name to unregister, and down finishes (before: exit 5, "bmx7 does not answer").
    host, bmx7 = mesh_node
    bmx7.stop()
    (bmx7.root / "json").mkdir(exist_ok=True)
    (bmx7.root / "json" / "parameters").write_text(
        '{ "OPTIONS": [ { "name": "syncSms", "INSTANCES": [ { "value": "wg-bmx7" } ] } ] }\n'
    )
    result = host.run_json("down")
    assert [a["action"] for a in result["actions"]] == ["withdraw_announcement", "delete_link"]
    assert host.ifname not in host.links()
    assert not (bmx7.root / "sms" / "sendSms" / "wg-bmx7").exists()
