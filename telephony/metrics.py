"""The SIP side's metrics, next to the calls' (``callbot.metrics``), and the endpoint of
``callbot serve``.

Workers write their values to the supervisor's multiprocess folder (``PROMETHEUS_MULTIPROC_DIR``,
set for them at spawn); the supervisor serves ``/metrics`` on ``[metrics] listen``, adding up
every worker's files, with what only it knows computed at scrape time: worker restarts, and the
transcript operations waiting for the database.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from callbot.metrics import Metrics

ENV = "PROMETHEUS_MULTIPROC_DIR"


class SipMetrics(Metrics):
    """The call metrics plus the SIP responses a worker sends to INVITEs (by code)."""

    def __init__(self, registry=None) -> None:
        super().__init__(registry)
        from prometheus_client import Counter

        self.sip_responses = Counter("callbot_sip_responses", "Final responses of the "
                                     "workers to INVITEs, by SIP code", ["code"],
                                     registry=self.registry)

    def response(self, code: int) -> None:
        self.sip_responses.labels(code=str(code)).inc()


def worker_metrics() -> SipMetrics | None:
    """A worker's metrics when ``callbot serve`` collects them (its folder is set), else
    None: a worker started alone has no endpoint, and counts nothing."""
    return SipMetrics() if os.environ.get(ENV) else None


def fresh_folder(path: Path) -> Path:
    """The multiprocess folder, emptied: values of a previous ``serve`` must not be added to
    this one's (prometheus-client requires it empty at start)."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    return path


def process_gone(folder: Path, pid: int) -> None:
    """A worker exited: its live gauges (calls active) stop counting; its counters stay."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid, str(folder))


def scraped(name: str, doc: str, value: Callable[[], float | None], counter: bool = False):
    """A collector for a value kept elsewhere (restarts, backlog), read at each scrape; a
    ``value`` of None (unknown now) leaves the metric out."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    class Collector:
        def collect(self):
            v = value()
            if v is None:
                return []
            family = CounterMetricFamily if counter else GaugeMetricFamily
            return [family(name, doc, value=v)]

    return Collector()
