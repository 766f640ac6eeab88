"""The service's step between full reconciles (bmx7_wg/service/incremental.py) against
the full reconcile, its reference: random sequences of announcement changes, and after
each the device and the refusals must be what a full reconcile makes of the same files
(tests/integration/incremental_driver.py does the driving, inside a namespace)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest

from tests.conftest import REPO, child_env

pytestmark = pytest.mark.root


# A run is the same for a seed (node ids and keys come from it). 100 and 125 send a node's
# first file and a second file for it (another case) in one batch: the step must leave
# that to a full reconcile ("announced twice").
# "held": the grace periods on the driver's clock, with overlapping claims (held mixes).
@pytest.mark.parametrize(
    ("seed", "grace", "held"),
    [(11, 0, False), (12, 30, False), (13, 0, False), (14, 30, False), (100, 0, False), (125, 30, False),
     (21, 30, True), (22, 30, True), (23, 10, True)],
)
def test_steps_end_where_a_full_reconcile_ends(seed: int, grace: int, held: bool) -> None:
    token = secrets.token_hex(3)
    netns = f"bmx7wg-inc-{token}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        driver = str(REPO / "tests" / "integration" / "incremental_driver.py")
        proc = subprocess.run(
            ["ip", "netns", "exec", netns, sys.executable, driver, "--seed", str(seed),
             "--grace", str(grace), "--rounds", "120", "--ifname", f"bminc{token}",
             *(["--held-mix"] if held else [])],
            capture_output=True, text=True, env=child_env(), timeout=600, cwd=REPO,
        )
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    counts = json.loads(proc.stdout)
    # Most rounds must have been steps, or the comparison says little about them; the
    # rare kinds of change (networks, a second file for a node) are full reconciles, and
    # in held mixes networks are common (a held claim is a full reconcile's to weigh).
    share = 0.2 if held else 0.5
    assert counts["steps"] >= share * (counts["steps"] + counts["full"]), counts
    assert counts["full"] >= 1, counts
