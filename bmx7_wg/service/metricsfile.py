"""The service's metrics textfile (`[metrics] textfile`): its own numbers, what the last
full reconcile knew of the peers, and a problem writing it, logged once while it lasts."""

from __future__ import annotations

import errno
import logging

from bmx7_wg import metrics
from bmx7_wg.config.model import DEFAULT_METRICS_TEXTFILE
from bmx7_wg.plan.state import ObservedState

log = logging.getLogger(__name__)

# seconds: the metrics textfile is written after each full reconcile and this often
# (handshakes and transfer change without one; reading the devices costs ~0.1 s at
# 10,000 peers)
METRICS_INTERVAL = 30.0


class MetricsFile:
    def __init__(self) -> None:
        self.numbers = metrics.ServiceMetrics()
        self.context = metrics.Context()  # names and mesh counts of the last full reconcile
        self.problem: str | None = None  # why the textfile could not be written (logged once)

    def write(self, path: str, observed: ObservedState) -> None:
        """Write the textfile of `observed` to `path`; a failure is logged when it differs
        from the last one, and the file is tried again METRICS_INTERVAL later."""
        try:
            metrics.write_textfile(path, metrics.render(observed, self.context, self.numbers))
        except OSError as exc:
            problem = f"cannot write the metrics file {path}: {exc.strerror or exc}"
            if problem != self.problem:
                # The default's directory is missing where prometheus-node-exporter is not
                # installed: nothing to warn about.
                quiet = path == DEFAULT_METRICS_TEXTFILE and exc.errno == errno.ENOENT
                log.log(logging.DEBUG if quiet else logging.WARNING, "%s; tried again in %.0f s",
                        problem, METRICS_INTERVAL)
                self.problem = problem
            return
        self.problem = None
