"""`callbot serve`: two workers come up, a killed worker is restarted, SIGTERM stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from telephony import probe
from telephony.testing import (ROOT, child_env, first, first_request, free_port, run_caller,
                               start_sipp_uas)


def test_supervisor_restarts_a_dead_worker_and_stops_cleanly(tmp_path, config):
    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    base = free_port()
    while not all(_free(base + i) for i in range(2)):
        base = free_port()
    front = free_port()
    queue_port = free_port("udp")
    cfg = tmp_path / "callbot.toml"
    cfg.write_text(f"""
[paths]
data = "{tmp_path / 'data'}"

[sip]
port = {front}
rtp_port_range = 40

[transfer]
queue_uri = "sip:conseillers@127.0.0.1:{queue_port}"
refer_timeout_s = 8.0

[workers]
count = 2
base_sip_port = {base}
base_rtp_port = {26000 + (os.getpid() % 300) * 100}
health_interval_s = 1.0
drain_timeout_s = 3.0
""")
    proc = subprocess.Popen([sys.executable, "-m", "callbot", "--config", str(cfg), "serve"],
                            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, text=True)
    events: list[dict] = []
    reader = threading.Thread(target=lambda: [events.append(json.loads(line))
                                              for line in proc.stdout], daemon=True)
    reader.start()

    def wait_for(pred, timeout=60.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [e for e in list(events) if pred(e)]
            if found:
                return found
            time.sleep(0.1)
        raise AssertionError(f"not seen; last events: {events[-6:]}")

    try:
        wait_for(lambda e: e["event"] == "ready" and e.get("worker") == 1)
        wait_for(lambda e: e["event"] == "ready" and e.get("worker") == 0)
        assert probe.options("127.0.0.1", base) == 200
        assert probe.options("127.0.0.1", base + 1) == 200
        assert probe.options("127.0.0.1", front) == 200      # Kamailio holds sip.port
        assert (tmp_path / "data/sip/kamailio.cfg").is_file()

        # A transfer through the front: the bot's REFER and the NOTIFYs follow the
        # record-route, the caller's phone calls the queue, the bot's leg is closed.
        time.sleep(2.5)                                       # one dispatcher probe round
        log = tmp_path / "queue.log"
        queue = start_sipp_uas(queue_port, log, tmp_path)
        try:
            time.sleep(0.5)
            rc, calls = run_caller(f"sip:callbot@127.0.0.1:{front}", "--dtmf", "0",
                                   "--timeout", "45", "--transfer-hold", "1")
            assert rc == 0, calls
            refer = first(calls, "transfer_request")
            assert refer["headers"]["X-Callbot-Reason"] == "caller_request"
            first(calls, "answered", leg="transfer")
            first(calls, "hangup", leg="bot", by="bot")
            assert queue.wait(20) == 0
        finally:
            if queue.poll() is None:
                queue.terminate()
                queue.wait(5)
        assert "X-Callbot-Intent: parler_conseiller" in first_request(log, "INVITE sip:conseillers")

        victim = wait_for(lambda e: e["event"] == "worker_started" and e["worker"] == 1)[0]
        os.kill(victim["pid"], signal.SIGKILL)                 # a crash
        wait_for(lambda e: e["event"] == "worker_exited" and e["worker"] == 1)
        again = wait_for(lambda e: e["event"] == "worker_started" and e["worker"] == 1
                         and e["pid"] != victim["pid"])[0]
        assert again["restarts"] == 1
        wait_for(lambda e: e["event"] == "ready" and e.get("worker") == 1
                 and e.get("pid") == again["pid"])
        assert probe.options("127.0.0.1", base + 1) == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(40)
    assert rc == 0
    stopped = wait_for(lambda e: e["event"] == "stopped" and e.get("source") == "supervisor")
    assert stopped[0]["codes"] == {"0": 0, "1": 0}, stopped    # both workers exited cleanly
    assert stopped[0]["front"] == 0, stopped                   # Kamailio too, last


def _free(port: int) -> bool:
    import socket

    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True
