"""Harness for SIP tests and tools: worker subprocesses, the scripted caller, audio checks.

Shared by the pytest modules (tests/test_sip_*.py) and usable from a shell or a benchmark:
it starts ``python -m telephony.worker`` and reads its JSON events, runs ``callbot call``
and parses its events, and scores whether a recording contains a known sentence.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

ROOT = Path(__file__).resolve().parent.parent


def free_port(kind: str = "both") -> int:
    """A port free for UDP and TCP on 127.0.0.1 (pjsua opens both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            if kind == "udp":
                return port
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                    t.bind(("127.0.0.1", port))
                    return port
            except OSError:
                continue
    raise RuntimeError("no free port")


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CALLBOT_") and k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def terminate(proc: subprocess.Popen, stderr, timeout: float) -> int:
    """SIGTERM, then wait; kill only if it does not stop in time. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    stderr.close()
    return proc.returncode


class WorkerProcess:
    """A worker subprocess and the JSON events it printed."""

    def __init__(self, config_path: Path, port: int, rtp_port: int, log_dir: Path) -> None:
        self.port = port
        self.events: list[dict] = []
        self.stderr = open(log_dir / "worker.err", "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "telephony.worker", "--config", str(config_path),
             "--port", str(port), "--rtp-port", str(rtp_port)],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                self.events.append({"event": "non_json", "line": line.rstrip()})

    def wait_for(self, pred, timeout: float = 30.0) -> dict:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ev in list(self.events):
                if pred(ev):
                    return ev
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"worker event not seen; last events: {self.events[-8:]}")

    def of(self, call_id: str, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("call") == call_id and e["event"] == kind]

    def stop(self, timeout: float = 20.0) -> int:
        return terminate(self.proc, self.stderr, timeout)


def serve_config(folder: Path, workers: int = 2, extra: str = "",
                 workers_table: dict | None = None, **sections: dict) -> Path:
    """Write ``folder/callbot.toml`` for ``callbot serve`` on free ports: the front on
    ``sip.port``, ``workers`` workers behind it, data in ``folder/data``. ``sections`` add or
    override keys (``sip={"media_timeout_s": 2}``), ``workers_table`` those of [workers];
    ``extra`` is appended as is. The one serve configuration of the tests and benchmarks."""
    rtp_range = 40
    while True:   # the SIP ports must lie outside every RTP range (settings refuse it)
        front = free_port()
        base = free_port_block(workers)
        rtp = 20000 + (os.getpid() * 7 + base) % 300 * 150
        rtp_top = rtp + max(workers, 1) * rtp_range
        if not any(rtp <= p < rtp_top for p in (front, *range(base, base + workers))):
            break
    tables: dict[str, dict] = {
        "paths": {"data": str(folder / "data")},
        "sip": {"port": front, "rtp_port_range": rtp_range, "rtp_port_start": rtp},
        "workers": {"count": workers, "base_sip_port": base, "base_rtp_port": rtp,
                    "health_interval_s": 1.0, "drain_timeout_s": 3.0},
        # port 0: the system picks a free one when serve binds it (its "metrics" event says
        # which), so tests and benchmarks beside each other and `make run` never collide
        "metrics": {"listen": "127.0.0.1:0"},
    }
    tables["workers"].update(workers_table or {})
    for name, values in sections.items():
        tables.setdefault(name, {}).update(values)
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        lines.append("")
    path = folder / "callbot.toml"
    path.write_text("\n".join(lines) + extra)
    return path


def serve_port(config_path: Path) -> int:
    """The public SIP port (the front's) of a configuration written by serve_config."""
    import tomllib

    return int(tomllib.loads(config_path.read_text())["sip"]["port"])


class ServeProcess:
    """``callbot serve`` as a subprocess (supervisor, workers, Kamailio), its events kept.

    Every event carries ``worker`` (its index) or ``source: supervisor``.
    """

    def __init__(self, config_path: Path, log_dir: Path) -> None:
        self.events: list[dict] = []
        self.port = serve_port(config_path)
        self.stderr_path = log_dir / "serve.err"
        self.stderr = open(self.stderr_path, "a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "callbot", "serve", "--config", str(config_path)],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def uri(self) -> str:
        return f"sip:callbot@127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180.0) -> dict:
        """``serve_ready``: every worker loaded, the front open and answering OPTIONS, the
        dispatcher's first probe round done (every worker marked up)."""
        from . import probe

        ev = self.wait_for(lambda e: e["event"] == "serve_ready", timeout)[0]
        end = time.monotonic() + 10
        while probe.options("127.0.0.1", self.port) != 200 and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(2.5)
        return ev

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                pass

    def wait_for(self, pred, timeout: float = 60.0, count: int = 1) -> list[dict]:
        """The first ``count`` events matching ``pred`` (AssertionError after ``timeout``)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            found = [e for e in list(self.events) if pred(e)]
            if len(found) >= count:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        # what serve said on stderr is the reason when it printed no event at all
        self.stderr.flush()
        tail = self.stderr_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"{count} x event not seen (serve exit code "
                             f"{self.proc.poll()}); last: {self.events[-8:]}; "
                             f"stderr: {tail}")

    def worker_pids(self) -> dict[int, int]:
        """The current pid of each worker slot."""
        return {e["worker"]: e["pid"] for e in list(self.events)
                if e["event"] == "worker_started"}

    def front_pid(self) -> int | None:
        pids = [e["pid"] for e in list(self.events) if e["event"] == "front_started"]
        return pids[-1] if pids else None

    def recognition_pid(self) -> int | None:
        """The machine's recognition service, when the workers share one."""
        pids = [e["pid"] for e in list(self.events) if e["event"] == "recognition_started"]
        return pids[-1] if pids else None

    def stop(self, timeout: float = 40.0) -> int:
        return terminate(self.proc, self.stderr, timeout)


def free_port_block(n: int) -> int:
    """The first of ``n`` consecutive ports free for UDP and TCP (worker SIP ports)."""
    def free(port: int) -> bool:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    return False
        return True

    for _ in range(200):
        base = free_port()
        if base + n < 65535 and all(free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no free port block")


def run_caller(uri: str, *args: str, timeout: float = 60.0) -> tuple[int, list[dict]]:
    cmd = [sys.executable, "-m", "callbot", "call", uri, *args]
    res = subprocess.run(cmd, cwd=ROOT, env=child_env(), capture_output=True, text=True,
                         timeout=timeout + 30)
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    return res.returncode, events


def first(events: list[dict], event: str, **match) -> dict:
    for ev in events:
        if ev["event"] == event and all(ev.get(k) == v for k, v in match.items()):
            return ev
    raise AssertionError(f"no {event} {match} in {events}")


_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def lin2alaw(x: np.ndarray) -> np.ndarray:
    """G.711 A-law encoding (the classic g711.c algorithm), vectorized; audioop is gone in 3.13."""
    v = x.astype(np.int32) >> 3
    mask = np.where(v >= 0, 0xD5, 0x55)
    v = np.where(v >= 0, v, -v - 1)
    seg = np.searchsorted(_SEG_END, v)
    quant = np.where(seg < 2, v >> 1, v >> np.minimum(seg, 7)) & 0x0F
    aval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | quant)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def alaw2lin(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, (t + 0x108) << np.maximum(seg - 1, 0))
    return np.where(a & 0x80, t, -t).astype(np.int16)


def alaw_round_trip(pcm: bytes) -> np.ndarray:
    """What a PCMA call does to 16-bit PCM."""
    return alaw2lin(lin2alaw(np.frombuffer(pcm, dtype="<i2")))


def best_ncc(recording: np.ndarray, reference: np.ndarray) -> float:
    """Max normalized cross-correlation of ``reference`` over every offset in ``recording``."""
    x = recording.astype(np.float64)
    r = reference.astype(np.float64)
    if x.size < r.size:
        x = np.concatenate([x, np.zeros(r.size - x.size)])
    num = fftconvolve(x, r[::-1], mode="valid")
    c = np.concatenate([[0.0], np.cumsum(x * x)])
    win = np.sqrt(np.maximum(c[r.size:] - c[:-r.size], 1e-9))
    return float(np.max(num / (win * np.linalg.norm(r) + 1e-9)))


def start_sipp_uas(port: int, message_log: Path, cwd: Path,
                   timeout_s: int = 60, calls: int | None = 1) -> subprocess.Popen:
    """SIPp's built-in UAS as the advisor queue: answers ``calls`` calls (None: every call,
    until ``timeout_s``), waits for their BYE, exits 0.

    ``-trace_msg`` keeps every message, so a test can read the INVITE's X-Callbot headers.
    """
    limit = ["-m", str(calls)] if calls else []
    return subprocess.Popen(
        ["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(port), "-mi", "127.0.0.1",
         "-mp", str(free_port("udp")), *limit, "-timeout", f"{timeout_s}s", "-nostdin",
         "-trace_msg", "-message_file", str(message_log)],
        cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def first_request(message_log: Path, start: str) -> str:
    """The first message in a SIPp message log that starts with ``start`` (e.g. "INVITE ")."""
    text = message_log.read_text(errors="replace")
    i = text.index(start)
    msg = text[i:]
    return msg[:msg.index("\n\n")] if "\n\n" in msg else msg


def found_fraction(recording: np.ndarray, reference: np.ndarray, chunk_s: float = 0.5,
                   min_ncc: float = 0.6, rate: int = 8000) -> float:
    """Share of the reference's voiced half-seconds found in the recording (NCC > min_ncc).

    A whole-sentence NCC drops to ~0.5 when a single 20 ms frame is lost on the way (the
    rest no longer lines up); chunks keep the check about *what* was heard.
    """
    n = int(chunk_s * rate)
    chunks = [reference[i:i + n] for i in range(0, len(reference) - n + 1, n)]
    voiced = [c for c in chunks if np.abs(c.astype(np.float64)).mean() > 200]
    if not voiced:
        return 0.0
    return sum(best_ncc(recording, c) > min_ncc for c in voiced) / len(voiced)
