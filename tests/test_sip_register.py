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


def worker_with_account(d: Path, registrar_port: int, password: str) -> WorkerProcess:
    cfg = d / "callbot.toml"
    cfg.write_text(f"""
[paths]
data = "{d / 'data'}"

[sip]
rtp_port_range = 20

[[sip.accounts]]
registrar = "sip:127.0.0.1:{registrar_port}"
user = "bot"
password = "{password}"
domain = "callbot.test"
""")
    rtp = 30000 + (os.getpid() % 300) * 100 + (50 if password == "s3cret" else 0)
    return WorkerProcess(cfg, free_port(), rtp, d)


@pytest.mark.parametrize("password, code", [("s3cret", 200), ("wrong", 403)])
def test_registration_with_digest(tmp_path, password, code):
    port = free_port("udp")
    sipp = registrar(port, tmp_path, "bot", "s3cret")
    w = worker_with_account(tmp_path, port, password)
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
