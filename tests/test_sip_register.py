"""Registration mode: the worker registers with a registrar using digest authentication.

SIPp plays the registrar (tests/sipp/registrar.xml): it challenges with 401, then accepts the
right credentials (200) or refuses wrong ones (403). The worker must answer the challenge and
report the outcome clearly.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from telephony.testing import WorkerProcess, free_port

SCENARIO = Path(__file__).parent / "sipp" / "registrar.xml"


def registrar(port: int, cwd: Path, user: str, password: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["sipp", "-sf", str(SCENARIO), "-set", "user", user, "-set", "password", password,
         "-i", "127.0.0.1", "-p", str(port), "-m", "1", "-timeout", "30s", "-nostdin",
         "-trace_msg", "-message_file", str(cwd / "registrar.log")],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.parametrize("password, code", [("s3cret", 200), ("wrong", 403)])
def test_registration_with_digest(tmp_path, password, code):
    port = free_port("udp")
    sipp = registrar(port, tmp_path, "bot", "s3cret")
    w = _worker(tmp_path, f"sip:127.0.0.1:{port}", password)
    try:
        w.wait_for(lambda e: e["event"] == "ready", timeout=60)
        reg = w.wait_for(lambda e: e["event"] == "registration" and e.get("code") != 401,
                         timeout=30)
        assert reg["code"] == code, reg
        if code != 200:
            assert "refused the credentials" in reg["error"], reg
        else:
            assert "error" not in reg
        log = (tmp_path / "registrar.log").read_text(errors="replace")
        assert "Authorization: Digest" in log and 'username="bot"' in log
        # The worker still serves (OPTIONS) whatever the registration gave.
        from telephony import probe

        assert probe.options("127.0.0.1", w.port) == 200
    finally:
        w.stop()
        if sipp.poll() is None:
            sipp.kill()


def _worker(d: Path, registrar: str, password: str, extra: str = "") -> WorkerProcess:
    cfg = d / "callbot.toml"
    cfg.write_text(f"""
[paths]
data = "{d / 'data'}"

[sip]
rtp_port_range = 20
{extra}
[[sip.accounts]]
registrar = "{registrar}"
user = "bot"
password = "{password}"
domain = "callbot.test"
""")
    return WorkerProcess(cfg, free_port(), 30000 + (os.getpid() % 300) * 100 + 20, d)


def _sipp(scenario: str, d: Path, ip: str, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["sipp", "-sf", str(Path(__file__).parent / "sipp" / scenario), "-set", "user", "bot",
         "-set", "password", "s3cret", "-i", ip, "-p", str(port), "-m", "1",
         "-timeout", "40s", "-nostdin", "-trace_msg", "-message_file",
         str(d / f"{scenario}.log"), *args],
        cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_wrong_password_answered_with_401_is_one_clear_error(tmp_path):
    port = free_port("udp")
    sipp = _sipp("registrar_401.xml", tmp_path, "127.0.0.1", port)
    w = _worker(tmp_path, f"sip:127.0.0.1:{port}", "wrong")
    try:
        reg = w.wait_for(lambda e: e["event"] == "registration", timeout=60)
        assert reg["code"] == 401, reg
        assert "refused the credentials" in reg["error"] and "password" in reg["error"]
        assert len([e for e in w.events if e["event"] == "registration"]) == 1
    finally:
        w.stop()
        if sipp.poll() is None:
            sipp.kill()


def test_unreachable_registrar_is_one_clear_error(tmp_path):
    port = free_port("udp")              # nothing listens there
    w = _worker(tmp_path, f"sip:127.0.0.1:{port}", "s3cret")
    try:
        reg = w.wait_for(lambda e: e["event"] == "registration", timeout=60)
        assert reg["code"] != 200 and "did not answer" in reg["error"], reg
    finally:
        w.stop()


def test_registration_is_refreshed_and_the_registrar_calls_in_directly(tmp_path):
    """Behind a front (front_secret set), the worker still takes the INVITEs of the registrar
    it registered with (a PBX calls the contact directly) and refuses anyone else's; the
    registration is renewed before it expires (10 s granted)."""
    port = free_port("udp")
    sipp = _sipp("registrar_refresh.xml", tmp_path, "127.0.0.2", port)
    w = _worker(tmp_path, f"sip:127.0.0.2:{port}", "s3cret",
                extra='\n[workers]\nfront_secret = "a-secret-shared-with-the-front"\n')
    try:
        w.wait_for(lambda e: e["event"] == "registration" and e.get("code") == 200, timeout=60)
        assert sipp.wait(20) == 0          # the second REGISTER came within the 10 s
        regs = [e for e in w.events if e["event"] == "registration" and e["code"] == 200]
        assert len(regs) >= 2 and regs[1]["t"] - regs[0]["t"] < 10, regs
        from telephony import probe

        # the registrar's address may call the worker; another address may not
        assert probe.exchange("INVITE", "127.0.0.1", w.port, bind="127.0.0.2",
                              timeout=3) == 200
        assert probe.exchange("INVITE", "127.0.0.1", w.port, timeout=3) == 403
        refused = w.wait_for(lambda e: e["event"] == "rejected")
        assert refused["why"] == "not_from_front"
    finally:
        w.stop()
        if sipp.poll() is None:
            sipp.kill()
