"""The service's metrics textfile (service/metricsfile.py): a file that cannot be written
is said once, as a warning unless it is the default where node_exporter is missing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bmx7_wg.plan.state import ObservedState
from bmx7_wg.service import metricsfile
from bmx7_wg.service.metricsfile import MetricsFile
from tests.logs import Heard, attached


@pytest.fixture
def heard() -> Iterator[Heard]:
    with attached("bmx7_wg.service.metricsfile", Heard()) as handler:
        yield handler


def test_a_textfile_that_cannot_be_written_is_said_once_until_it_can(tmp_path: Path, heard: Heard) -> None:
    directory = tmp_path / "textfile_collector"
    path = str(directory / "bmx7-wg.prom")
    file = MetricsFile()
    file.numbers.failed_changes = 3
    file.write(path, ObservedState({}))
    file.write(path, ObservedState({}))
    assert heard.take() == [
        (
            logging.WARNING,
            f"cannot write the metrics file {path}: No such file or directory; tried again in 30 s",
        )
    ]
    directory.mkdir()
    file.write(path, ObservedState({}))
    assert "bmx7_wg_failed_changes_total 3" in Path(path).read_text()
    for child in directory.iterdir():
        child.unlink()
    directory.rmdir()
    file.write(path, ObservedState({}))
    assert [level for level, _ in heard.take()] == [logging.WARNING]  # again, after it ended


def test_the_default_textfile_without_node_exporter_is_no_warning(
    tmp_path: Path, heard: Heard, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default, where prometheus-node-exporter (which makes its directory) is missing.
    default = str(tmp_path / "node-exporter" / "bmx7-wg.prom")
    monkeypatch.setattr(metricsfile, "DEFAULT_METRICS_TEXTFILE", default)
    metricsfile.MetricsFile().write(default, ObservedState({}))
    assert [level for level, _ in heard.take()] == [logging.DEBUG]
