"""`callbot serve` at scale, real SIP over loopback: Kamailio in front of 3 workers.

12 pjsua2 callers at once (3 workers x 4 calls) all answered and hearing the greeting; a
13th INVITE meanwhile gets 503 + Retry-After from the front; a SIGKILLed worker loses only
its own calls and comes back (a new pid answers OPTIONS) and new calls succeed through the
front's failover; SIGTERM of the supervisor leaves no Kamailio or worker process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib

import pytest

from telephony import probe
from telephony.testing import ROOT, ServeProcess, child_env, serve_config, serve_port

WORKERS = 3
CALLS = 12


def _caller(uri: str, timeout_s: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "callbot", "call", uri, "--timeout",
                             str(timeout_s)], cwd=ROOT, env=child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def _events(proc: subprocess.Popen, timeout: float) -> list[dict]:
    out, _ = proc.communicate(timeout=timeout)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def _pids_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(") ", 1)[1][0] != "Z":
                    alive.append(pid)
        except (FileNotFoundError, IndexError):
            pass
    return alive


def test_every_worker_sits_behind_the_front():
    """Even one worker: the front holds sip.port and its limits; workers listen on
    workers.bind (loopback) with limits derived from what they can take."""
    from telephony.settings import load_settings
    from telephony.supervisor import Supervisor

    s = load_settings(env={"CALLBOT_WORKERS_COUNT": "1", "CALLBOT_SIP_PORT": "5999",
                           "CALLBOT_SIP_BIND": "10.1.2.3"})
    sup = Supervisor(s, None)
    assert sup.front.plan.port == 5999 and sup.front.plan.listen == "10.1.2.3"
    assert [x.port for x in sup.slots] == [5070]
    assert sup.front.plan.workers == ("sip:127.0.0.1:5070",)
    assert sup.front.plan.setups_per_s == s.sip.max_setups_per_s
    assert len(sup.front.plan.secret) == 32 and sup.worker_env()[
        "CALLBOT_WORKERS_FRONT_SECRET"] == sup.front.plan.secret
    s = load_settings(env={"CALLBOT_WORKERS_COUNT": "3", "CALLBOT_SIP_MAX_SETUPS_PER_S": "4"})
    sup = Supervisor(s, None)
    assert sup.front.plan.port == 5060        # the default
    assert sup.front.plan.workers == ("sip:127.0.0.1:5070", "sip:127.0.0.1:5071",
                                      "sip:127.0.0.1:5072")
    assert sup.front.plan.setups_per_s == 12
    s = load_settings(env={"CALLBOT_TRANSFER_ON_FAILURE": "bridge"})
    assert s.inbound_calls == s.sip.max_calls - 1        # a slot kept for the bridged leg


def test_caller_number_from_the_from_uri():
    from telephony.transcript import caller_number

    assert caller_number('"Bob" <sip:0612345678@10.0.0.1>;tag=x') == "0612345678"
    assert caller_number("<tel:+33123456789;phone-context=x>") == "+33123456789"
    assert caller_number("<sip:10.0.0.1>") is None


def test_twelve_calls_through_kamailio_then_a_worker_crash(tmp_path, config):
    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    cfg = serve_config(tmp_path, workers=WORKERS)
    front = serve_port(cfg)
    base = tomllib.loads(cfg.read_text())["workers"]["base_sip_port"]
    serve = ServeProcess(cfg, tmp_path)
    callers: list[subprocess.Popen] = []
    try:
        serve.wait_for(lambda e: e["event"] == "ready", timeout=90, count=WORKERS)
        kam = serve.wait_for(lambda e: e["event"] == "front_started")[0]["pid"]
        end = time.monotonic() + 10
        while probe.options("127.0.0.1", front) != 200 and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(2.5)          # one dispatcher probe round: every worker marked up

        # 12 callers at once, silent: the bot greets, prompts twice, then says goodbye.
        uri = f"sip:callbot@127.0.0.1:{front}"
        callers = [_caller(uri, 50) for _ in range(CALLS)]
        answered = serve.wait_for(lambda e: e["event"] == "answered", timeout=40, count=CALLS)
        per_worker = {w: sum(1 for e in answered if e["worker"] == w) for w in range(WORKERS)}
        assert sorted(per_worker.values()) == [4, 4, 4], per_worker

        # A 13th while all 12 are up: every worker says 486, the front says 503 + Retry-After.
        reply = probe.final_response("INVITE", "127.0.0.1", front, timeout=8)
        assert probe.status_of(reply) == 503, reply[:300]
        assert b"\r\nRetry-After: " in reply, reply
        # Trunk mode through the front: a source outside sip.allowed_sources gets 403 there.
        foreign = probe.final_response("INVITE", "127.0.0.1", front, bind="127.0.0.2",
                                       timeout=8)
        assert probe.status_of(foreign) == 403, foreign[:300]

        # Let every caller hear a good part of the greeting before the crash.
        time.sleep(max(0.0, answered[-1]["t"] + 5.0 - time.time()))

        # SIGKILL worker 0: only its 4 calls are lost.
        started = serve.wait_for(lambda e: e["event"] == "worker_started" and e["worker"] == 0)
        victim = started[0]["pid"]
        lost = {e["call"] for e in answered if e["worker"] == 0}
        os.kill(victim, signal.SIGKILL)
        again = serve.wait_for(lambda e: e["event"] == "worker_started" and e["worker"] == 0
                               and e["pid"] != victim, timeout=15)[0]
        serve.wait_for(lambda e: e["event"] == "ready" and e.get("pid") == again["pid"],
                       timeout=60)
        assert probe.options("127.0.0.1", base) == 200          # the new pid answers
        time.sleep(2.5)                                          # the front probes it up

        # New calls succeed (workers 1 and 2 are still full: the front fails over to 0).
        fresh = [_caller(uri, 14) for _ in range(2)]
        for proc in fresh:
            ev = _events(proc, 60)
            done = next(e for e in ev if e["event"] == "done")
            assert done["answered"] and done["bot_voice_ms"] >= 2000, ev
        # Every caller heard the greeting; the 8 survivors were hung up by the bot.
        results = [_events(p, 90) for p in callers]
        for ev in results:
            done = next(e for e in ev if e["event"] == "done")
            assert done["answered"] and done["bot_voice_ms"] >= 2000, ev
        survivors = [e for e in serve.events if e["event"] == "hangup" and e.get("worker")
                     in (1, 2) and e.get("call") not in lost]
        assert len(survivors) >= 8, survivors
        assert all(e["by"] == "bot" for e in survivors), survivors
        by_bot = sum(next(e for e in ev if e["event"] == "done")["hung_up_by"] == "bot"
                     for ev in results)
        assert by_bot == CALLS - len(lost), [r[-1] for r in results]
        workers = [e["pid"] for e in serve.events if e["event"] == "worker_started"]
    finally:
        for p in callers:
            if p.poll() is None:
                p.kill()
        rc = serve.stop()
    assert rc == 0
    stopped = serve.wait_for(lambda e: e["event"] == "stopped" and e.get("source")
                             == "supervisor")[0]
    assert stopped["front"] == 0, stopped
    assert _pids_alive([kam, *workers]) == [], "a Kamailio or worker process was left"
    kids = subprocess.run(["pgrep", "-f", str(tmp_path / "data" / "sip")],
                          capture_output=True, text=True).stdout.split()
    assert kids == [], f"Kamailio children left: {kids}"
