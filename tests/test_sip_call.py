"""Real SIP over loopback with the real models: a worker process, the pjsua2 test caller,
SIPp as the advisor queue, and hand-made datagrams for what no polite user agent sends.

One worker serves the whole module (loading Whisper takes seconds); the last check is
that it stops cleanly on SIGTERM, because an object left alive at libDestroy aborts it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from telephony import probe
from telephony.testing import (WorkerProcess, alaw_round_trip, best_ncc, first, first_request,
                               found_fraction, free_port, run_caller, start_sipp_uas)

GOODBYE_WAV = Path("/usr/share/asterisk/sounds/fr/vm-goodbye.wav")   # "Au revoir."


# --- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def queue_port() -> int:
    return free_port("udp")


@pytest.fixture(scope="module")
def worker(tmp_path_factory, queue_port, config):
    if not GOODBYE_WAV.is_file():
        pytest.fail(f"{GOODBYE_WAV} missing: run `make system` (asterisk-core-sounds-fr-wav)")
    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    d = tmp_path_factory.mktemp("sip")
    cfg = d / "callbot.toml"
    rtp = 20000 + (os.getpid() % 400) * 100
    cfg.write_text(f"""
[paths]
data = "{d / 'data'}"

[sip]
max_calls = 4
rtp_port_range = 40

[transfer]
queue_uri = "sip:conseillers@127.0.0.1:{queue_port}"
refer_timeout_s = 8.0
callback = false          # the failed transfers here end in the spoken fallback text

[workers]
drain_timeout_s = 5.0

[transcripts]
debug_personal_data = true    # these tests read what the bot heard and was typed in its log
""")
    w = WorkerProcess(cfg, free_port(), rtp, d)
    w.data = d / "data"          # the worker's transcript store lives here
    try:
        w.wait_for(lambda e: e["event"] == "ready", timeout=60)
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def speech(config):
    from callbot.tts import SpeechCache, cache_root, load_tts

    return SpeechCache(load_tts(config), cache_root(config))


# --- tests -------------------------------------------------------------------------------------
def test_options_answered(worker):
    assert probe.options("127.0.0.1", worker.port) == 200


def test_foreign_source_gets_403(worker):
    code = probe.exchange("INVITE", "127.0.0.1", worker.port, bind="127.0.0.2", timeout=3)
    assert code == 403
    worker.wait_for(lambda e: e["event"] == "rejected" and e.get("code") == 403)
    assert probe.options("127.0.0.1", worker.port) == 200


def test_malformed_sip_does_not_kill_the_worker(worker):
    port = worker.port
    junk = [
        os.urandom(600),
        b"\r\n\r\n",
        b"INVITE sip:callbot@127.0.0.1 SIP/2.0\r\n\r\n",            # no headers at all
        probe.request("OPTIONS", "127.0.0.1", port, ("127.0.0.1", 9), "x@y")
        .replace(b"Content-Length: 0", b"Content-Length: 99999"),    # lies about its body
        b"OPTIONS sip:x SIP/2.0\r\nVia: " + b"A" * 6000 + b"\r\n\r\n",  # huge header
        probe.request("INVITE", "127.0.0.1", port, ("127.0.0.1", 9), "sdp@y",
                      body="v=0\r\nm=audio notaport RTP/AVP 8\r\n"),  # broken SDP
        b"FOO sip:callbot@127.0.0.1 SIP/2.0\r\nCSeq: x\r\n\r\n",       # unknown method
    ]
    for data in junk:
        probe.send_raw(data, "127.0.0.1", port)
    time.sleep(0.5)
    assert worker.proc.poll() is None, "the worker died on malformed SIP"
    assert probe.options("127.0.0.1", port) == 200


def test_caller_hanging_up_during_the_greeting_over_tcp(worker):
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port};transport=tcp",
                            "--timeout", "3")
    assert rc == 0, events
    first(events, "answered", leg="bot")
    first(events, "hangup", leg="bot", by="caller_timeout")
    worker.wait_for(lambda e: e["event"] == "hangup" and e.get("by") == "caller")
    assert probe.options("127.0.0.1", worker.port) == 200


def test_goodbye_is_answered_and_the_bot_hangs_up(worker, tmp_path, kb, speech):
    # A half-open call first (INVITE answered, never ACKed, no RTP): it holds a slot and
    # must not disturb the real call below.
    assert probe.exchange("INVITE", "127.0.0.1", worker.port, timeout=3) == 200
    record = tmp_path / "reply.wav"
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--wav", str(GOODBYE_WAV),
                            "--record", str(record), "--timeout", "45")
    assert rc == 0, events
    answered = first(events, "answered", leg="bot")
    first(events, "turn", kind="wav")
    hangup = first(events, "hangup", leg="bot")
    assert hangup["by"] == "bot", events
    assert first(events, "media", leg="bot")["codec"] == "PCMA"

    # The worker understood "au revoir" and hung up itself after saying goodbye.
    turn = worker.wait_for(lambda e: e["event"] == "turn" and e.get("intent") == "au_revoir")
    call_id = turn["call"]
    end = worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call_id)
    assert end["by"] == "bot"
    # Frame callbacks come every 20 ms; Whisper's threads compete with the clock thread for
    # the 2 cores here, so a few late ticks happen (the bridge catches up, nothing is lost).
    rx = end["rx"]
    assert rx["frames"] > 500 and rx["gaps_over_30ms"] <= 0.02 * rx["frames"], rx
    assert rx["max_gap_ms"] < 200 and rx["callback_us"] < 1000, rx

    # What the caller heard contains the pre-rendered goodbye (after a G.711 round trip).
    from callbot.audio import read_wav

    heard = read_wav(record)
    reference = alaw_round_trip(speech.get(kb.intents["au_revoir"].answer))
    found = found_fraction(heard, reference)
    assert found >= 0.8, (f"goodbye not found in the recording: {found:.0%} of it "
                          f"(whole-sentence ncc {best_ncc(heard, reference):.3f})")
    assert hangup["t"] > answered["t"]

    # The call left its transcript: the caller's "au revoir" and a resolved outcome.
    call = _transcript(worker, call_id)
    assert call["outcome"] == "resolved", call
    assert call["caller_number"] == "caller", call          # From: sip:caller@...
    assert call["worker"].endswith(f"/worker-{worker.port}"), call
    assert any(t["speaker"] == "caller" and t["intent"] == "au_revoir"
               for t in call["turns"]), call["turns"]


def _transcript(worker, sip_call_id: str, timeout: float = 10.0) -> dict:
    """The worker's transcript of a call, once its ending is written (the writes are queued)."""
    import dataclasses

    from callbot.config import load_config
    from callbot.transcripts import open_store

    base = load_config(env={})
    cfg = dataclasses.replace(base, paths=dataclasses.replace(base.paths, data=worker.data))
    store = open_store(cfg)
    try:
        end = time.monotonic() + timeout
        while True:
            call = store.find_call(sip_call_id)
            if call is not None and call["outcome"] is not None:
                return {**call, "turns": store.turns(call["id"])}
            if time.monotonic() > end:
                raise AssertionError(f"no closed transcript for {sip_call_id}: {call}")
            time.sleep(0.2)
    finally:
        store.close()


@pytest.fixture
def sipp_queue(queue_port, tmp_path):
    if not shutil.which("sipp"):
        pytest.fail("sipp missing: run `make system` (sip-tester)")
    log = tmp_path / "queue-messages.log"
    proc = start_sipp_uas(queue_port, log, tmp_path)
    time.sleep(0.5)
    yield proc, log
    if proc.poll() is None:
        proc.terminate()
        proc.wait(5)


def test_dtmf_zero_transfers_to_the_queue_with_context(worker, sipp_queue):
    proc, log = sipp_queue
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--dtmf", "0",
                            "--timeout", "45", "--transfer-hold", "1")
    assert rc == 0, events
    refer = first(events, "transfer_request")
    assert refer["target"].startswith("sip:conseillers@127.0.0.1")
    assert refer["headers"]["X-Callbot-Reason"] == "caller_request"
    assert refer["headers"]["X-Callbot-Intent"] == "parler_conseiller"
    call_id = refer["headers"]["X-Callbot-Call-Id"]
    first(events, "answered", leg="transfer")
    first(events, "hangup", leg="bot", by="bot")         # the bot closed its own leg

    assert proc.wait(20) == 0                            # SIPp: one successful call
    invite = first_request(log, "INVITE sip:conseillers")
    assert "X-Callbot-Reason: caller_request" in invite
    assert f"X-Callbot-Call-Id: {call_id}" in invite
    assert "X-Callbot-Summary: L'appelant a demande un conseiller" in invite
    assert all(ord(c) < 128 for c in invite)

    worker.wait_for(lambda e: e["event"] == "transferred" and e.get("call") == call_id)
    end = worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call_id)
    assert end["by"] == "bot"
    call = _transcript(worker, call_id)                  # the SIP outcome is in it too
    assert call["outcome"] == "transferred", call
    assert call["transfer_result"] == "accepted", call
    assert call["transfer_target"].startswith("sip:conseillers@127.0.0.1"), call


def test_sipp_caller_presses_0_and_follows_the_refer(worker, tmp_path):
    """Another SIP stack: SIPp's DTMF pcap (RFC 2833), its own REFER handling and NOTIFY."""
    if not shutil.which("sipp"):
        pytest.fail("sipp missing: run `make system` (sip-tester)")
    scenario = Path(__file__).resolve().parent.parent / "telephony/scenarios/dtmf0_refer.xml"
    res = subprocess.run(
        ["sipp", "-sf", str(scenario), "-s", "callbot", f"127.0.0.1:{worker.port}",
         "-i", "127.0.0.1", "-p", str(free_port("udp")), "-mi", "127.0.0.1",
         "-mp", str(free_port("udp")), "-m", "1", "-l", "1", "-timeout", "60s", "-nostdin",
         "-trace_err", "-trace_logs"], cwd=tmp_path, capture_output=True, text=True, timeout=90)
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("*.log"))
    assert res.returncode == 0, logs[-2000:]
    assert "X-Callbot-Reason=caller_request" in logs          # the Refer-To carries them too
    call_id = re.search(r"X-Callbot-Call-Id: (\S+)", logs).group(1)   # SIPp's own Call-ID
    dtmf = worker.wait_for(lambda e: e["event"] == "dtmf" and e.get("call") == call_id)
    assert dtmf["digit"] == "0" and dtmf["method"] == "rfc2833"
    worker.wait_for(lambda e: e["event"] == "transferred" and e.get("call") == call_id)
    end = worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call_id)
    assert end["by"] == "bot"


def test_baresip_caller_says_goodbye(worker, tmp_path):
    """Another SIP stack and its own RTP: baresip plays "au revoir" over the greeting."""
    if not shutil.which("baresip"):
        pytest.fail("baresip missing: run `make system` (baresip-core)")
    import numpy as np

    from callbot.audio import read_wav, write_wav

    speech = read_wav(GOODBYE_WAV)
    silence = np.zeros(8000, dtype=np.int16)
    # baresip hangs up when its audio file ends: leave the bot time to answer.
    write_wav(tmp_path / "caller.wav", np.concatenate([silence, silence, speech] + [silence] * 15))
    rtp = free_port("udp")
    (tmp_path / "config").write_text(f"""sip_listen 127.0.0.1:{free_port()}
audio_source aufile,{tmp_path / "caller.wav"}
audio_player aubridge,dev1
audio_alert aubridge,dev1
module_path /usr/lib/baresip/modules
module stdio.so
module g711.so
module aufile.so
module aubridge.so
module_app account.so
module_app menu.so
rtp_ports {rtp}-{rtp + 20}
""")
    (tmp_path / "accounts").write_text(
        "<sip:bob@127.0.0.1>;regint=0;audio_codecs=PCMA,PCMU;answermode=auto\n")
    seen = len(worker.events)
    res = subprocess.run(["baresip", "-f", str(tmp_path), "-e",
                          f"/dial sip:callbot@127.0.0.1:{worker.port}", "-t", "16"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert "Call established" in res.stdout, res.stdout[-1500:]
    turn = worker.wait_for(lambda e: e["event"] == "turn" and e.get("intent") == "au_revoir"
                           and worker.events.index(e) >= seen)
    end = worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == turn["call"])
    assert end["by"] == "bot"


ASK_ADVISOR_WAV = Path("/usr/share/asterisk/sounds/fr/queue-callswaiting.wav")
# Real human speech: "En attente pour parler à un préposé."


def test_spoken_request_for_an_advisor_transfers_to_the_queue(worker, sipp_queue):
    proc, log = sipp_queue
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--wav",
                            str(ASK_ADVISOR_WAV), "--timeout", "45", "--transfer-hold", "1")
    assert rc == 0, events
    refer = first(events, "transfer_request")
    assert refer["headers"]["X-Callbot-Reason"] == "caller_request"
    assert refer["headers"]["X-Callbot-Intent"] == "parler_conseiller"
    first(events, "answered", leg="transfer")
    first(events, "hangup", leg="bot", by="bot")          # the bot closed its own leg
    assert proc.wait(20) == 0                             # the queue got the call
    invite = first_request(log, "INVITE sip:conseillers")
    assert "X-Callbot-Reason: caller_request" in invite
    call_id = refer["headers"]["X-Callbot-Call-Id"]
    turn = worker.wait_for(lambda e: e["event"] == "turn" and e.get("call") == call_id
                           and e.get("caller"))
    assert "parler" in turn["caller"].lower() and turn["intent"] == "parler_conseiller"


def test_refused_transfer_falls_back_to_the_opening_hours(worker, tmp_path, speech):
    record = tmp_path / "fallback.wav"
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--dtmf", "0",
                            "--dtmf-method", "info", "--refuse-transfer",
                            "--record", str(record), "--timeout", "60")
    assert rc == 0, events
    refer = first(events, "transfer_request")
    assert refer["accepted"] is False
    first(events, "hangup", leg="bot", by="bot")
    call_id = refer["headers"]["X-Callbot-Call-Id"]
    dtmf = worker.wait_for(lambda e: e["event"] == "dtmf" and e.get("call") == call_id)
    assert dtmf["method"] == "sip_info"
    failed = worker.wait_for(lambda e: e["event"] == "transfer_failed"
                             and e.get("call") == call_id)
    assert failed["next"] == "fallback"

    from callbot.audio import read_wav
    from telephony.settings import load_settings

    text = load_settings(env={}).transfer.fallback_text
    found = found_fraction(read_wav(record), alaw_round_trip(speech.get(text)))
    assert found >= 0.8, f"fallback text not heard: {found:.0%} of it"


def _queue(scenario: str, port: int, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["sipp", "-sf", str(Path(__file__).parent / "sipp" / scenario), "-i", "127.0.0.1",
         "-p", str(port), "-m", "1", "-timeout", "60s", "-nostdin"],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _fallback_heard(record: Path, speech) -> float:
    from callbot.audio import read_wav
    from telephony.settings import load_settings

    text = load_settings(env={}).transfer.fallback_text
    return found_fraction(read_wav(record), alaw_round_trip(speech.get(text)))


@pytest.mark.parametrize("scenario, why", [
    ("busy_queue.xml", "486"),          # the queue refused: a failure NOTIFY from the phone
    ("ringing_queue.xml", "timeout"),   # the queue never answers: no final NOTIFY in time
])
def test_failed_transfer_ends_in_the_spoken_fallback(worker, queue_port, tmp_path, speech,
                                                     scenario, why):
    queue = _queue(scenario, queue_port, tmp_path)
    record = tmp_path / "fallback.wav"
    try:
        time.sleep(0.5)
        rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--dtmf", "0",
                                "--record", str(record), "--timeout", "70")
        assert rc == 0, events
        refer = first(events, "transfer_request")
        assert refer["accepted"] is True                  # the phone tried the queue
        first(events, "hangup", leg="bot", by="bot")
        call_id = refer["headers"]["X-Callbot-Call-Id"]
        failed = worker.wait_for(lambda e: e["event"] == "transfer_failed"
                                 and e.get("call") == call_id)
        assert why in failed["why"] and failed["next"] == "fallback"
    finally:
        if queue.poll() is None:
            queue.kill()
    found = _fallback_heard(record, speech)
    assert found >= 0.8, f"fallback text not heard: {found:.0%} of it"


def test_g722_call(worker):
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--codecs", "G722",
                            "--wav", str(GOODBYE_WAV), "--timeout", "40")
    assert rc == 0, events
    assert first(events, "media", leg="bot")["codec"].startswith("G722")
    first(events, "hangup", leg="bot", by="bot")
    call = first(events, "answered")["call"]
    turn = worker.wait_for(lambda e: e["event"] == "turn" and e.get("call") == call
                           and e.get("caller"))
    assert turn["intent"] == "au_revoir"


@pytest.mark.parametrize("other_port", [False, True])
def test_sipp_caller_speaks_over_rtp(worker, tmp_path, other_port):
    """Real speech as RTP from another SIP stack; with ``other_port`` the RTP comes from
    another port than its SDP announced (a NAT): the bot still hears it and answers."""
    wav = tmp_path / "speech_alaw.wav"            # the name speech_caller.xml plays
    subprocess.run(["sox", str(GOODBYE_WAV), "-r", "8000", "-c", "1", "-e", "a-law", "-b", "8",
                    str(wav)], check=True)
    media = free_port("udp")
    announced = free_port("udp") if other_port else media
    r = subprocess.run(
        ["sipp", "-sf", str(Path(__file__).parent / "sipp" / "speech_caller.xml"),
         "-set", "adv_port", str(announced),
         "-s", "callbot", f"127.0.0.1:{worker.port}", "-i", "127.0.0.1",
         "-p", str(free_port("udp")), "-mi", "127.0.0.1", "-mp", str(media), "-m", "1",
         "-timeout", "50s", "-nostdin", "-trace_msg", "-message_file",
         str(tmp_path / "sipp.log")],
        cwd=tmp_path, capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, (tmp_path / "sipp.log").read_text(errors="replace")[-2000:]
    call_id = re.search(r"Call-ID: *(\S+)", (tmp_path / "sipp.log").read_text()).group(1)
    turn = worker.wait_for(lambda e: e["event"] == "turn" and e.get("call") == call_id
                           and e.get("caller"))
    assert turn["intent"] == "au_revoir", turn
    hangup = worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call_id)
    assert hangup["by"] == "bot"


def test_worker_stops_cleanly_on_sigterm(worker):
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    kinds = [e["event"] for e in worker.events]
    assert "stopped" in kinds
    stopped = next(e for e in worker.events if e["event"] == "stopped")
    assert stopped["bridge_ports"] == 1, stopped      # only the null device: no slot leak
    assert "non_json" not in kinds, [e for e in worker.events if e["event"] == "non_json"]
