"""A worker configured for the awkward cases: ``on_failure = "bridge"``, ``max_call_s = 30``.

The caller refuses the REFER, so the bot calls the advisor queue itself and connects the
two calls, which ``max_call_s`` does not cut; a call that is not bridged is cut at
``max_call_s`` after its INVITE; with 4 call slots the worker takes 3 calls (the fourth is
kept for a bridged leg) and answers 486 to the next; SIGTERM with calls still up hangs them
up after the drain time and still exits 0.
"""

from __future__ import annotations

import os
import shutil
import signal
import time

import pytest

from telephony import probe
from telephony.testing import (WorkerProcess, first, first_request, free_port, run_caller,
                               start_sipp_uas)


@pytest.fixture(scope="module")
def queue_port() -> int:
    return free_port("udp")


@pytest.fixture(scope="module")
def worker(tmp_path_factory, queue_port, config):
    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    d = tmp_path_factory.mktemp("sip-bridge")
    cfg = d / "callbot.toml"
    cfg.write_text(f"""
[sip]
max_calls = 4
max_call_s = 30
rtp_port_range = 40

[endpointing]
no_input_ms = 40000       # a silent caller meets max_call_s first

[transfer]
queue_uri = "sip:conseillers@127.0.0.1:{queue_port}"
on_failure = "bridge"
refer_timeout_s = 5.0

[workers]
drain_timeout_s = 2.0
""")
    rtp = 24000 + (os.getpid() % 400) * 100
    w = WorkerProcess(cfg, free_port(), rtp, d)
    try:
        w.wait_for(lambda e: e["event"] == "ready", timeout=60)
        yield w
    finally:
        w.stop()


def test_refused_refer_is_bridged_to_the_queue(worker, queue_port, tmp_path):
    if not shutil.which("sipp"):
        pytest.fail("sipp missing: run `make system` (sip-tester)")
    log = tmp_path / "queue.log"
    queue = start_sipp_uas(queue_port, log, tmp_path)
    try:
        time.sleep(0.5)
        rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--dtmf", "0",
                                "--refuse-transfer", "--hangup-after", "25", "--timeout", "60")
        assert rc == 0, events
        refer = first(events, "transfer_request")
        assert refer["accepted"] is False
        first(events, "hangup", leg="bot", by="caller")   # the caller ended the bridged call
        call_id = refer["headers"]["X-Callbot-Call-Id"]
        worker.wait_for(lambda e: e["event"] == "bridged" and e.get("call") == call_id)
        worker.wait_for(lambda e: e["event"] == "bridge_ended" and e.get("call") == call_id)
        assert queue.wait(20) == 0          # the queue got its BYE from the bot
    finally:
        if queue.poll() is None:
            queue.terminate()
            queue.wait(5)
    invite = first_request(log, "INVITE sip:conseillers")
    assert "X-Callbot-Reason: caller_request" in invite
    assert f"X-Callbot-Call-Id: {call_id}" in invite
    assert "User-Agent: callbot-worker" in invite     # the bot's own call, not the caller's


def test_no_dead_air_while_the_queue_rings(worker, queue_port, tmp_path):
    """The queue rings 6 s before answering the bridged call: the caller hears the hold
    sentence in that time rather than silence."""
    import subprocess
    from pathlib import Path

    from callbot.audio import read_wav
    from callbot.tts import SpeechCache, cache_root, load_tts
    from telephony.settings import load_settings
    from telephony.testing import alaw_round_trip, found_fraction

    scenario = Path(__file__).parent / "sipp" / "slow_queue.xml"
    queue = subprocess.Popen(
        ["sipp", "-sf", str(scenario), "-i", "127.0.0.1", "-p", str(queue_port), "-mi",
         "127.0.0.1", "-mp", str(free_port("udp")), "-m", "1", "-timeout", "60s", "-nostdin"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = tmp_path / "heard.wav"
    try:
        time.sleep(0.5)
        rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--dtmf", "0",
                                "--refuse-transfer", "--hangup-after", "14",
                                "--record", str(record), "--timeout", "45")
        assert rc == 0, events
        assert first(events, "transfer_request")["accepted"] is False
    finally:
        if queue.poll() is None:
            queue.terminate()
            queue.wait(5)
    from callbot.config import load_config

    config = load_config(env={})
    speech = SpeechCache(load_tts(config), cache_root(config))
    hold = load_settings(env={}).transfer.hold_text
    found = found_fraction(read_wav(record), alaw_round_trip(speech.get(hold)))
    assert found >= 0.8, f"hold sentence not heard while the queue rang: {found:.0%}"


def test_a_call_is_cut_at_max_call_s_but_not_a_bridged_one(worker, queue_port, tmp_path):
    """The bridged call above lasted past max_call_s (30 s after its INVITE) and ended by the
    caller; a call that only listens is hung up at max_call_s."""
    bridged = [e for e in worker.events if e["event"] == "bridged"]
    assert bridged
    ends = [e for e in worker.events if e["event"] == "hangup"
            and e.get("call") == bridged[0]["call"]]
    assert ends and ends[0]["by"] == "caller" and ends[0]["duration_s"] > 30, ends
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--timeout", "50")
    assert rc == 0, events
    first(events, "hangup", leg="bot", by="bot")
    call = first(events, "answered")["call"]
    forced = worker.wait_for(lambda e: e["event"] == "hangup_forced" and e.get("call") == call)
    assert forced["why"] == "max_duration"
    end = worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call)
    assert 30 <= end["duration_s"] < 32, end


def test_bridge_keeps_a_slot_and_sigterm_hangs_up_the_calls(worker):
    # Three calls that never ACK nor send RTP take the three incoming slots...
    assert [probe.exchange("INVITE", "127.0.0.1", worker.port, timeout=3)
            for _ in range(3)] == [200, 200, 200]
    # ...so the next caller is told the line is busy: the fourth slot is for a bridged leg.
    assert probe.exchange("INVITE", "127.0.0.1", worker.port, timeout=3) == 486
    worker.wait_for(lambda e: e["event"] == "rejected" and e.get("code") == 486)
    assert probe.options("127.0.0.1", worker.port) == 200

    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    worker.wait_for(lambda e: e["event"] == "stopped", timeout=1)
    ends = [e for e in worker.events if e["event"] == "hangup"]
    assert ends and ends[-1]["by"] in ("shutdown", "bot"), ends
