from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.netns import Lab


def _lab(tmp_path: Path, hosts: int) -> Iterator[Lab]:
    lab = Lab(tmp_path, hosts)
    lab.make_keys()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def lab1(tmp_path: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path, 1)


@pytest.fixture
def lab2(tmp_path: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path, 2)


@pytest.fixture
def lab3(tmp_path: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path, 3)
