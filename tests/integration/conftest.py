from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netns import Lab


@pytest.fixture
def lab2(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, 2)
    lab.make_keys()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab3(tmp_path: Path) -> Iterator[Lab]:
    lab = Lab(tmp_path, 3)
    lab.make_keys()
    try:
        yield lab
    finally:
        lab.close()
