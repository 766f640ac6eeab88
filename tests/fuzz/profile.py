"""Hypothesis settings for the fuzz suite, and a count of the cases it ran.

The default profile keeps `make unit` quick; `BMX7_WG_FUZZ=nightly` runs ~100x more
cases per target (a nightly-style job), `BMX7_WG_FUZZ=N` runs N per target.
Each target counts the inputs it was given, so a run can report how many cases held.
"""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

_PROFILES = {"default": 300, "nightly": 30_000}


def _examples() -> int:
    name = os.environ.get("BMX7_WG_FUZZ", "default")
    if name.isdigit():
        return int(name)
    return _PROFILES.get(name, _PROFILES["default"])


EXAMPLES = _examples()

# No deadline: a slow example is not a failure here (speed is for the benchmarks), and a
# loaded CI machine must not turn into flaky fuzz results. Database off: results must not
# depend on what an earlier run left in .hypothesis/.
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

CASES: Counter[str] = Counter()


def count(target: str) -> None:
    CASES[target] += 1
