"""The packaged unit's hardening, scored on the host by systemd-analyze (no systemd as PID 1
needed: --offline). Under real systemd, tests/systemd checks the same unit runs."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "bmx7-wg.service"


def _setting(name: str) -> list[str]:
    return [line.split("=", 1)[1] for line in UNIT.read_text().splitlines() if line.startswith(f"{name}=")]


def test_exposure_is_at_most_2_0() -> None:
    # systemd-analyze scores a unit it cannot find as well: make sure it reads this one.
    assert UNIT.is_file(), UNIT
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True, text=True, check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", proc.stdout)
    assert found, proc.stdout + proc.stderr
    assert float(found.group(1)) <= 2.0, proc.stdout


def test_only_the_capabilities_it_uses() -> None:
    # CAP_NET_RAW is not among them: tests/integration/test_attacks.py runs a 300-peer
    # apply, a tunnel and `down` with exactly this bounding set.
    assert _setting("CapabilityBoundingSet") == ["CAP_NET_ADMIN CAP_NET_BIND_SERVICE"]
    assert not _setting("AmbientCapabilities")
