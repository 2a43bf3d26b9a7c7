"""Prometheus metrics of the calls: one set per process, fed by call events, scraped over HTTP.

A worker (or ``callbot run``) makes one :class:`Metrics` and gives each call a
:class:`CallMetrics`, one more observer of its :class:`~callbot.session.CallSession` beside
the transcript recorder and the log. Nothing polls: a turn's latency is counted when the
session says the answer's first frame left (:class:`~callbot.events.AnswerStarted`).

Several processes (``callbot serve``: the workers, the supervisor) share one endpoint through
prometheus-client's multiprocess mode: each process writes its values to memory-mapped files
in ``PROMETHEUS_MULTIPROC_DIR`` and the process serving ``/metrics`` adds them up. The mode is
chosen by that variable when prometheus-client is imported, so the supervisor sets it for its
workers before they start. Labels never carry a call id, a number or words of a caller:
only outcomes, reasons and SIP codes (a bounded set).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import CallbotError
from .events import AnswerStarted, CallEvent, Ended, Failed, Final, HangUp, Transfer, TurnDecided

log = logging.getLogger("callbot.metrics")

# Caller-perceived latency (end of speech -> first answer audio): the targets are 0.4-1.3 s,
# the holding prompt comes at 1.2 s, and anything past 5 s is a failure whatever its size.
LATENCY_BUCKETS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 8.0)
ASR_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
NLU_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5)
NOT_UNDERSTOOD = "reject"     # callbot.intents.REJECT: the decision for words not understood


class Metrics:
    """The call metrics of this process, registered in their own registry (no global state:
    tests and a process's single endpoint each make their own)."""

    def __init__(self, registry=None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.calls_active = Gauge("callbot_calls_active", "Calls being handled by the bot now",
                                  registry=r, multiprocess_mode="livesum")
        self.calls = Counter("callbot_calls", "Calls ended, by outcome", ["outcome"],
                             registry=r)
        self.transfers = Counter("callbot_transfers", "Transfers to the advisors' queue, by "
                                 "reason and result", ["reason", "result"], registry=r)
        self.turn_latency = Histogram(
            "callbot_turn_latency_seconds", "What a caller waits: end of their speech to the "
            "first frame of the answer", registry=r, buckets=LATENCY_BUCKETS)
        self.asr = Histogram("callbot_asr_seconds", "Speech recognition of one utterance, "
                             "after its end", registry=r, buckets=ASR_BUCKETS)
        self.nlu = Histogram("callbot_nlu_seconds", "Understanding one utterance (intent and "
                             "dialogue decision)", registry=r, buckets=NLU_BUCKETS)
        self.not_understood = Counter("callbot_not_understood", "Caller utterances the bot "
                                      "did not understand", registry=r)
        self.callbacks = Counter("callbot_callback_requests", "Callback requests left by "
                                 "callers", registry=r)

    def call(self) -> "CallMetrics":
        """The observer of one new call (counted active until it is closed)."""
        return CallMetrics(self)


class CallMetrics:
    """One call's contribution: an observer of its session, closed once by its carrier."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics
        self.decided: Transfer | HangUp | None = None   # the ending the dialogue chose
        self.played: Transfer | HangUp | None = None    # ...and played to the end
        self.failed = False
        self.closed = False
        metrics.calls_active.inc()

    def on_event(self, event: CallEvent) -> None:
        m = self.m
        if isinstance(event, AnswerStarted):
            m.turn_latency.observe(event.waited_ms / 1000)
        elif isinstance(event, Final):
            if event.text:
                m.asr.observe(event.decode_ms / 1000)
        elif isinstance(event, TurnDecided):
            turn = event.turn
            if turn.ending is not None:
                self.decided = turn.ending
            if turn.caller is not None and event.nlu_ms is not None:
                m.nlu.observe(event.nlu_ms / 1000)
                if turn.decision == NOT_UNDERSTOOD:
                    m.not_understood.inc()
        elif isinstance(event, Ended):
            self.played = event.ending
        elif isinstance(event, Failed):
            self.failed = True

    def transfer(self, reason: str, result: str) -> None:
        """The carrier's word on a transfer: ``result`` accepted | failed | bridged | ..."""
        self.m.transfers.labels(reason=reason or "unknown", result=result).inc()

    def close(self, outcome: str | None = None) -> None:
        """The call is over; ``outcome`` None: taken from the call's events (as the
        transcript's)."""
        if self.closed:
            return
        self.closed = True
        self.m.calls_active.dec()
        if outcome is None:
            from .transcripts.recorder import outcome_of
            outcome = "error" if self.failed else outcome_of(self.played or self.decided,
                                                             played=self.played is not None)
        self.m.calls.labels(outcome=outcome).inc()


# --- the endpoint -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    path: str


def parse_listen(listen: str, path: str = "/metrics") -> Listen | None:
    """``[metrics] listen`` as host and port; "" = no endpoint."""
    listen = listen.strip()
    if not listen:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise CallbotError(f"[metrics] listen = {listen!r}: expected HOST:PORT, e.g. "
                           "127.0.0.1:9464 (or \"\" for no metrics endpoint)")
    if not path.startswith("/"):
        raise CallbotError(f"[metrics] path = {path!r}: must start with /, e.g. /metrics")
    return Listen(host.strip("[]") or "127.0.0.1", int(port), path)


def registry_for(multiprocess_dir: str | None, metrics: Metrics | None = None,
                 extra: Iterable[object] = ()):
    """What ``/metrics`` shows: the multiprocess files of ``multiprocess_dir`` (every
    process's values added up), or the single process's own ``metrics``; plus ``extra``
    collectors computed at scrape time (restarts, backlog)."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    if multiprocess_dir:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=multiprocess_dir)
    elif metrics is not None:
        registry = metrics.registry
    else:
        registry = CollectorRegistry()
    for collector in extra:
        registry.register(collector)
    return registry


class MetricsServer:
    """``GET <path>`` in the Prometheus text format, from a daemon thread; 404 elsewhere."""

    def __init__(self, listen: Listen, registry) -> None:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        path = listen.path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:    # noqa: N802 - http.server's name
                if self.path.split("?", 1)[0] != path:
                    self.send_error(404, f"metrics are at {path}")
                    return
                try:
                    body = generate_latest(registry)
                except Exception as exc:   # noqa: BLE001 - a scrape must not kill the server
                    log.exception("metrics: scrape failed")
                    self.send_error(500, f"{type(exc).__name__}")
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE_LATEST)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args) -> None:   # noqa: A002
                pass      # scrapes every 15 s are not news

        try:
            self.httpd = ThreadingHTTPServer((listen.host, listen.port), Handler)
        except OSError as exc:
            raise CallbotError(
                f"metrics: cannot listen on {listen.host}:{listen.port} ({exc.strerror}). "
                "Another process holds the port: set [metrics] listen to a free HOST:PORT, "
                "or \"\" for no endpoint.") from exc
        self.httpd.daemon_threads = True
        self.address = self.httpd.server_address
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics",
                                       daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
