from __future__ import annotations

import pytest

from tests.fuzz.profile import CASES, EXAMPLES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not CASES:
        return
    terminalreporter.write_sep("-", f"fuzz cases run (up to {EXAMPLES} per test)")
    for target, n in sorted(CASES.items()):
        terminalreporter.write_line(f"{target}: {n}")
    terminalreporter.write_line(f"total: {sum(CASES.values())}")
