"""`callbot serve`: two workers come up, a killed worker is restarted, SIGTERM stops all."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib

import pytest

from telephony import probe
from telephony.testing import (ROOT, child_env, first, first_request, free_port, run_caller,
                               serve_config, serve_port, start_sipp_uas)

GOODBYE = "/usr/share/asterisk/sounds/fr/vm-goodbye.wav"


def test_supervisor_restarts_a_dead_worker_and_stops_cleanly(tmp_path, config):
    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    queue_port = free_port("udp")
    cfg = serve_config(tmp_path, workers=2,
                       transfer={"queue_uri": f"sip:conseillers@127.0.0.1:{queue_port}",
                                 "refer_timeout_s": 8.0})
    front = serve_port(cfg)
    base = tomllib.loads(cfg.read_text())["workers"]["base_sip_port"]
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
        # the front opens once every worker is ready, and says so once
        ready = wait_for(lambda e: e["event"] == "serve_ready")
        assert len(ready) == 1 and ready[0]["workers"] == 2 and ready[0]["calls"] == 8
        end = time.monotonic() + 10
        while probe.options("127.0.0.1", front) != 200 and time.monotonic() < end:
            time.sleep(0.2)
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


def _gone(pid: int, timeout: float) -> bool:
    from telephony.lifecycle import group_alive

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not group_alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_a_killed_serve_takes_its_front_and_workers_with_it(tmp_path):
    """SIGKILL of `callbot serve` (OOM, crash): Kamailio and the workers stop too, the public
    port is free, and a new `callbot serve` answers the next call."""
    from telephony.testing import ServeProcess, serve_config

    cfg = serve_config(tmp_path, workers=1)
    first_serve = ServeProcess(cfg, tmp_path)
    first_serve.wait_ready()
    front, worker = first_serve.front_pid(), first_serve.worker_pids()[0]
    os.kill(first_serve.proc.pid, signal.SIGKILL)
    first_serve.proc.wait(10)
    assert _gone(front, 15), "Kamailio outlived its supervisor"
    assert _gone(worker, 40), "the worker outlived its supervisor"
    again = ServeProcess(cfg, tmp_path)
    try:
        again.wait_ready()
        rc, events = run_caller(again.uri, "--wav", GOODBYE, "--timeout", "40")
        assert rc == 0, events
        first(events, "hangup", leg="bot", by="bot")
    finally:
        assert again.stop() == 0


def test_leftovers_of_a_dead_supervisor_are_stopped_at_start(tmp_path):
    """A front that outlived its supervisor (recorded in serve.json) is stopped by the next
    `callbot serve`, which then holds the port itself."""
    from telephony import dispatcher
    from telephony.front import plan_for
    from telephony.settings import load_settings
    from telephony.testing import ServeProcess, serve_config

    cfg = serve_config(tmp_path, workers=1)
    settings = load_settings(str(cfg), env={})
    folder = tmp_path / "data" / "sip"
    conf = dispatcher.write_config(plan_for(settings, "x" * 32), folder)
    stale = subprocess.Popen(dispatcher.command(conf, folder), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (folder / "serve.json").write_text(json.dumps(
        {"supervisor": dead.pid, "children": {"front": [stale.pid, "kamailio"]}}))
    end = time.monotonic() + 10
    while probe.options("127.0.0.1", settings.sip.port) != 200 and time.monotonic() < end:
        time.sleep(0.2)                   # the stale front holds the public port
    serve = ServeProcess(cfg, tmp_path)
    try:
        serve.wait_ready()
        assert any(e["event"] == "stale_stopped" and f"pid {stale.pid}" in e["process"]
                   for e in serve.events)
        assert stale.wait(10) is not None
        rc, events = run_caller(serve.uri, "--wav", GOODBYE, "--timeout", "40")
        assert rc == 0, events
    finally:
        serve.stop()
        if stale.poll() is None:
            os.killpg(stale.pid, signal.SIGKILL)


def test_a_port_held_by_another_program_is_one_clear_error(tmp_path):
    import socket

    from telephony.testing import serve_config, serve_port

    cfg = serve_config(tmp_path, workers=1)
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", serve_port(cfg)))
    try:
        r = subprocess.run([sys.executable, "-m", "callbot", "serve", "--config", str(cfg)],
                           cwd=ROOT, env=child_env(), capture_output=True, text=True,
                           timeout=60)
    finally:
        holder.close()
    assert r.returncode != 0
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(err) == 1, r.stderr
    assert f"sip.port 127.0.0.1:{serve_port(cfg)} is already in use by pid {os.getpid()}" \
        in err[0], err


def test_a_wedged_front_is_restarted(tmp_path):
    """Kamailio stopped dead (SIGSTOP: alive but answering nothing): its OPTIONS probe fails,
    the supervisor kills and restarts it, and calls get through again."""
    from telephony.testing import ServeProcess, serve_config

    serve = ServeProcess(serve_config(tmp_path, workers=1), tmp_path)
    try:
        serve.wait_ready()
        wedged = serve.front_pid()
        os.killpg(wedged, signal.SIGSTOP)
        serve.wait_for(lambda e: e["event"] == "front_unhealthy" and e["pid"] == wedged,
                       timeout=30)
        serve.wait_for(lambda e: e["event"] == "front_started" and e["pid"] != wedged,
                       timeout=30)
        end = time.monotonic() + 15
        while probe.options("127.0.0.1", serve.port) != 200 and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(2.5)
        rc, events = run_caller(serve.uri, "--wav", GOODBYE, "--timeout", "40")
        assert rc == 0, events
        first(events, "hangup", leg="bot", by="bot")
    finally:
        serve.stop()


def test_worker_backoff_resets_only_after_a_minute_of_readiness():
    """A worker that crashes soon after becoming ready is restarted with a growing delay,
    not every second forever (a stand-in process object: the policy alone is tested)."""
    from telephony.settings import load_settings
    from telephony.supervisor import Slot, Supervisor

    class Exited:
        pid, returncode = 4242, 1

        def poll(self):
            return 1

    sup = Supervisor(load_settings(env={"CALLBOT_WORKERS_COUNT": "1"}), None,
                     out=open(os.devnull, "w"))
    slot: Slot = sup.slots[0]
    delays = []
    now = 1000.0
    for _ in range(5):
        slot.proc, slot.started, slot.ready, slot.ready_at = Exited(), now - 70, True, now - 5
        sup.check(slot, now)
        delays.append(slot.next_start - now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0]
    slot.proc, slot.ready, slot.ready_at = Exited(), True, now - 61   # ready long enough
    sup.check(slot, now)
    assert slot.next_start - now == 1.0
