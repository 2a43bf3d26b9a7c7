"""Prometheus metrics: what a caller waits, measured on a real call paced at 20 ms a frame,
and the endpoint of `callbot serve` scraped after real SIP calls."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from callbot.audio import read_wav, split_frames
from callbot.errors import CallbotError
from callbot.events import AnswerStarted, CallAudio, TurnDecided
from callbot.metrics import Metrics, MetricsServer, parse_listen, registry_for
from callbot.session import CallSession, Engines

SOUNDS = "/usr/share/asterisk/sounds/fr"
GOODBYE = f"{SOUNDS}/vm-goodbye.wav"       # "Au revoir."
SILENCE = b"\x00" * 320


class Events(list):
    def on_event(self, event):
        if not isinstance(event, CallAudio):
            self.append(event)


def sample(registry, name: str, labels: dict | None = None) -> float | None:
    return registry.get_sample_value(name, labels or {})


@pytest.fixture(scope="module")
def engines(config):
    return Engines.load(config)


def paced_call(session: CallSession, frames: list[bytes], seconds_after: float) -> None:
    """Push caller frames and pull bot frames at the line's pace (20 ms), as a call port does."""
    frames = list(frames) + [SILENCE] * int(seconds_after * 50)
    t0 = time.monotonic()
    for i, frame in enumerate(frames):
        session.push(frame)
        session.pull()
        delay = t0 + (i + 1) * 0.02 - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def test_the_caller_wait_is_measured_from_the_last_word_to_the_first_answer_frame(engines,
                                                                                   config,
                                                                                   tmp_path):
    import dataclasses

    from callbot.transcripts import CallInfo, CallRecorder, open_store

    metrics = Metrics(CollectorRegistry())
    events = Events()
    call = metrics.call()
    store = open_store(dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path / "data"),
        transcripts=dataclasses.replace(config.transcripts, url="")))
    recorder = CallRecorder(store, CallInfo("latency"))
    session = CallSession(engines, "latency", observers=[events, call, recorder])
    session.start()
    session.playback.flush()          # no greeting: the answer is the next thing played
    assert sample(metrics.registry, "callbot_calls_active") == 1
    speech = split_frames(read_wav(GOODBYE).tobytes(), 8000, 20)
    paced_call(session, speech, seconds_after=2.0)

    answered = [e for e in events if isinstance(e, AnswerStarted)]
    assert len(answered) == 1, events
    a = answered[0]
    # the parts add up to the whole, and the turn ended on a real pause, not at once
    assert a.waited_ms == pytest.approx(a.end_of_turn_ms + a.recognition_ms + a.answer_ms,
                                        abs=1.0)
    assert config.endpointing.quick_end_ms - 60 <= a.end_of_turn_ms \
        <= config.endpointing.end_silence_ms + 200
    assert a.recognition_ms > 0
    decided = next(e for e in events if isinstance(e, TurnDecided) and e.turn.caller)
    assert decided.nlu_ms is not None and decided.nlu_ms > 0
    assert a.recognition_ms >= decided.decode_ms - 1.0

    r = metrics.registry
    assert sample(r, "callbot_turn_latency_seconds_count") == 1
    assert sample(r, "callbot_turn_latency_seconds_sum") == pytest.approx(a.waited_ms / 1000)
    assert sample(r, "callbot_asr_seconds_count") == 1
    assert sample(r, "callbot_nlu_seconds_count") == 1
    assert sample(r, "callbot_not_understood_total") == 0
    for _ in range(1000):             # the goodbye played to its end
        if session.ended.is_set():
            break
        session.push(SILENCE)
        session.pull()
    assert session.ended.is_set()
    call.close()
    call.close()                      # closed once, counted once
    assert sample(r, "callbot_calls_active") == 0
    assert sample(r, "callbot_calls_total", {"outcome": "resolved"}) == 1
    # the transcript keeps the measured parts: their sum is what the caller waited
    recorder.close()
    assert store.flush()
    turn = next(t for t in store.turns("latency") if t["kind"] == "speech")
    assert turn["endpoint_ms"] + turn["decode_ms"] + turn["latency_ms"] == pytest.approx(
        a.waited_ms, abs=0.05)
    store.close()


def test_words_not_understood_are_counted_and_an_answer_cut_by_barge_in_is_not_timed(
        engines):
    metrics = Metrics(CollectorRegistry())
    events = Events()
    session = CallSession(engines, "nu", observers=[events, metrics.call()])
    session.start()
    session.playback.flush()
    session.hear("le chat de ma voisine aime les croquettes au saumon")
    # text turns have no end of speech: no wait is invented for them
    assert sample(metrics.registry, "callbot_not_understood_total") == 1
    assert sample(metrics.registry, "callbot_turn_latency_seconds_count") == 0
    assert not [e for e in events if isinstance(e, AnswerStarted)]


def test_listen_is_checked():
    assert parse_listen("") is None
    assert parse_listen("127.0.0.1:9464").port == 9464
    assert parse_listen("[::1]:9100").host == "::1"
    for bad in ("9464", "localhost:", "host:99999", "host:http"):
        with pytest.raises(CallbotError, match="HOST:PORT"):
            parse_listen(bad)
    with pytest.raises(CallbotError, match="must start with /"):
        parse_listen("127.0.0.1:9464", "metrics")


def test_the_endpoint_serves_its_path_only_and_a_taken_port_is_a_clear_error():
    metrics = Metrics(CollectorRegistry())
    metrics.calls.labels(outcome="resolved").inc()
    server = MetricsServer(parse_listen("127.0.0.1:0"), registry_for(None, metrics))
    try:
        host, port = server.address[:2]
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()
        assert b'callbot_calls_total{outcome="resolved"} 1.0' in body
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://{host}:{port}/", timeout=5)
        assert err.value.code == 404
        with pytest.raises(CallbotError, match="set \\[metrics\\] listen"):
            MetricsServer(parse_listen(f"127.0.0.1:{port}"), registry_for(None, metrics))
    finally:
        server.close()


# --- `callbot serve`, real SIP ------------------------------------------------------------------
def _scrape(url: str) -> dict[str, float]:
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    values: dict[str, float] = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def test_serve_exposes_the_calls_of_every_worker(tmp_path):
    """Two workers, real calls through the front: the scrape adds up both workers' values,
    the restarts the supervisor counts, and no label holds a call id or a number."""
    import os
    import signal

    from telephony.testing import ServeProcess, free_port, run_caller, serve_config

    port = free_port()
    cfg = serve_config(tmp_path, workers=2, metrics={"listen": f"127.0.0.1:{port}"})
    serve = ServeProcess(cfg, tmp_path)
    try:
        serve.wait_ready()
        url = serve.wait_for(lambda e: e["event"] == "metrics")[0]["url"]
        assert url == f"http://127.0.0.1:{port}/metrics"
        for _ in range(3):
            rc, events = run_caller(serve.uri, "--wav", GOODBYE, "--timeout", "40")
            assert rc == 0, events
        workers_used = {e["worker"] for e in serve.events if e["event"] == "answered"}
        deadline = time.monotonic() + 20
        while True:
            m = _scrape(url)
            if m.get('callbot_calls_total{outcome="resolved"}', 0) >= 3 \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert m['callbot_calls_total{outcome="resolved"}'] == 3
        assert m["callbot_calls_active"] == 0
        assert m['callbot_sip_responses_total{code="200"}'] == 3
        assert m["callbot_turn_latency_seconds_count"] == 3
        assert 0 < m["callbot_turn_latency_seconds_sum"] / 3 < 5
        assert m["callbot_asr_seconds_count"] >= 3
        assert m["callbot_worker_restarts_total"] == 0
        assert m["callbot_transcript_backlog"] == 0       # every turn reached the database
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        for e in serve.events:
            if e["event"] == "answered":
                assert e["call"] not in body
        assert not re.search(r'"\+?\d{6,}"', body)

        # a worker killed: its calls stay counted, the restart is counted
        victim = serve.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        serve.wait_for(lambda e: e["event"] == "worker_started" and e["pid"] != victim
                       and e["worker"] == 0, 30)
        m = _scrape(url)
        assert m["callbot_worker_restarts_total"] == 1
        assert m['callbot_calls_total{outcome="resolved"}'] == 3
        assert len(workers_used) >= 1
    finally:
        serve.stop()
