"""Run ``workers.count`` worker processes and keep them alive: ``callbot serve``.

One pjsua2 process carries at most 4 calls (the wheel's PJSUA_MAX_CALLS), so capacity comes
from processes behind a dispatcher. Kamailio holds the public ``sip.port``
(:mod:`telephony.front`, configuration from :mod:`telephony.dispatcher` written into
``paths.data/sip`` and checked with ``kamailio -c`` before anything starts), even for one
worker, so that every call meets the same limits; worker i listens on ``workers.bind:
workers.base_sip_port + i`` with RTP from ``workers.base_rtp_port + i * sip.rtp_port_range``
and refuses INVITEs that do not carry the front's secret. The supervisor

- stops what a killed supervisor left behind (``serve.json``) and refuses a public port
  held by another process, naming it; its children die with it (:mod:`telephony.lifecycle`);
- starts the front once every worker has loaded its models (calls meet ready workers), and
  says so once (``serve_ready``, with the start-up time);
- restarts a worker that exits (crash, or a planned recycle after
  ``workers.recycle_after_calls``), with a back-off that doubles up to 30 s and resets only
  after the worker has been ready for a minute;
- probes each ready worker, and the front, with OPTIONS every ``workers.health_interval_s``
  and kills (then restarts) one that misses 3 probes in a row: a wedged process answers
  nothing;
- forwards every worker's JSON events to its stdout with ``"worker": i`` added;
- serves ``/metrics`` on ``[metrics] listen`` for every worker together
  (:mod:`telephony.metrics`);
- runs the transcripts' retention (``callbot.transcripts.purge``) at start and every 24 h;
- on SIGTERM, passes it on (the workers drain), waits ``drain_timeout_s`` + 10 s, kills
  what is left, stops Kamailio last (draining calls still send their BYEs through it), and
  exits 0. A second SIGTERM or Ctrl-C shortens the wait.

The supervisor never loads pjsua2 or the models: it stays small and cannot be taken down
by what takes a worker down.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from callbot.errors import CallbotError
from callbot.metrics import MetricsServer, parse_listen, registry_for

from . import lifecycle, metrics, probe
from .front import Front
from .jsonlog import JsonLog
from .priority import recognition_nice
from .settings import TelephonySettings, load_settings

MAX_BACKOFF_S = 30.0
HEALTHY_AFTER_S = 60.0     # a worker ready this long gets its back-off reset
READY_WAIT_S = 300.0       # the front opens by then even if some workers are not ready
MISSES_BEFORE_KILL = 3
PURGE_EVERY_S = 24 * 3600.0


@dataclass
class Slot:
    """One worker position: its ports, its current process, its restart history."""

    index: int
    port: int
    rtp_port: int
    role: str = "worker"           # or "recognition": the machine's recognition service
    proc: subprocess.Popen | None = None
    started: float = 0.0
    ready: bool = False
    ready_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 1.0
    next_start: float = 0.0
    misses: int = 0
    next_probe: float = 0.0
    reader: threading.Thread | None = field(default=None, repr=False)


JEMALLOC = ("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
            "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2", "/usr/lib64/libjemalloc.so.2")


def allocator_library(choice: str) -> str | None:
    """The jemalloc library to preload into workers, or None for glibc's allocator."""
    if choice == "glibc":
        return None
    found = next((p for p in JEMALLOC if os.path.exists(p)), None)
    if found is None:
        raise CallbotError("workers.allocator = \"jemalloc\" but libjemalloc2 is not installed: "
                           "run `make setup` (or apt-get install libjemalloc2), or set "
                           "workers.allocator = \"glibc\"")
    return found


class Supervisor:
    def __init__(self, settings: TelephonySettings, config_path: str | None,
                 out=None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.log = JsonLog(out, source="supervisor")
        w = settings.workers
        self.slots = [Slot(i, w.base_sip_port + i, settings.rtp_port_for(i))
                      for i in range(w.count)]
        # One recognition service for the machine, unless the workers load their own models
        # or the configuration points them at a service of its own.
        self.recognition: Slot | None = None
        self.recognition_socket = settings.core.recognition.socket
        if w.recognition == "shared" and not self.recognition_socket and w.count > 0:
            self.recognition = Slot(-1, 0, 0, role="recognition")
            self.recognition_socket = str(Path(settings.core.paths.data) / "sip"
                                          / "recognition.sock")
            if len(self.recognition_socket.encode()) > 100:     # Unix sockets: 107 bytes
                digest = hashlib.sha1(self.recognition_socket.encode()).hexdigest()[:12]
                self.recognition_socket = f"/tmp/callbot-recognition-{digest}.sock"
        self.secret = w.front_secret or secrets.token_hex(16)
        self.jemalloc = allocator_library(w.allocator)     # refused now, not at a spawn
        self.pids = lifecycle.PidFile(Path(settings.core.paths.data) / "sip" / "serve.json")
        # A worker host behind another host's front has no front of its own.
        self.front = Front(settings, self.log, self.secret, self.pids) \
            if w.front == "local" else None
        # Prometheus: the workers write to this folder, this process serves the sum.
        self.metrics_dir = Path(settings.core.paths.data) / "sip" / "metrics"
        self.metrics_server: MetricsServer | None = None
        self.t0 = time.monotonic()
        self.announced = False
        self.stopping = False
        self.force = False
        self.next_purge = 0.0

    # --- output ---------------------------------------------------------------------------
    def _forward(self, slot: Slot, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = {"event": "worker_output", "line": line.rstrip()}
            if slot.role == "worker":
                record["worker"] = slot.index
            else:
                record["service"] = slot.role
            if record.get("event") == "ready":
                slot.ready, slot.ready_at = True, time.monotonic()
            self.log.write(record)

    # --- processes --------------------------------------------------------------------------
    def command(self, slot: Slot) -> list[str]:
        if slot.role == "recognition":
            cmd = [sys.executable, "-m", "callbot.recognition", "--socket",
                   self.recognition_socket]
            return cmd + (["--config", self.config_path] if self.config_path else [])
        cmd = [sys.executable, "-m", "telephony.worker", "--port", str(slot.port),
               "--rtp-port", str(slot.rtp_port)]
        if self.config_path:
            cmd[3:3] = ["--config", self.config_path]
        return cmd

    def worker_env(self) -> dict[str, str]:
        """The front's secret (a worker refuses INVITEs without it), and its share of the
        cores."""
        env = dict(os.environ)
        env["CALLBOT_WORKERS_FRONT_SECRET"] = self.secret
        if self.metrics_server is not None:
            env[metrics.ENV] = str(self.metrics_dir)
        if self.recognition_socket:
            env["CALLBOT_RECOGNITION_SOCKET"] = self.recognition_socket
        if self.jemalloc:
            env["LD_PRELOAD"] = " ".join(filter(None, [env.get("LD_PRELOAD", ""),
                                                       self.jemalloc]))
        else:
            # glibc gives every thread that allocates its own heap arena; decodes on the
            # call threads then leave one arena each of freed-but-kept memory. Two arenas
            # serve a worker's threads as fast.
            env.setdefault("MALLOC_ARENA_MAX", "2")
        if self.settings.core.asr.threads == 0:
            # auto: the cores shared out; 4 workers x 2 threads on 2 cores measured decodes
            # 10x slower under load than one decode alone (threads waiting on each other).
            env["CALLBOT_ASR_THREADS"] = str(max(1, (os.cpu_count() or 1)
                                                 // self.settings.workers.count))
        return env

    def recognition_env(self) -> dict[str, str]:
        """Every core for the one decode at a time (the workers' media clocks run at a
        higher priority than the whole service, see ``spawn``)."""
        env = dict(os.environ)
        env.setdefault("MALLOC_ARENA_MAX", "2")
        if self.settings.core.asr.threads == 0:
            env["CALLBOT_ASR_THREADS"] = str(os.cpu_count() or 1)
        return env

    def spawn(self, slot: Slot) -> None:
        if slot.role == "recognition":
            nice = recognition_nice(self.settings.workers.media_priority)

            def start() -> None:
                lifecycle.die_with_parent()()
                try:
                    os.nice(nice)
                except OSError:     # no CAP_SYS_NICE: normal priority
                    pass

            slot.proc = subprocess.Popen(self.command(slot), stdout=subprocess.PIPE,
                                         text=True, env=self.recognition_env(),
                                         preexec_fn=start)
            self.pids.add("recognition", slot.proc.pid, "callbot.recognition")
        else:
            slot.proc = subprocess.Popen(self.command(slot), stdout=subprocess.PIPE,
                                         text=True, env=self.worker_env(),
                                         preexec_fn=lifecycle.die_with_parent())
            self.pids.add(f"worker-{slot.index}", slot.proc.pid, "telephony.worker")
        slot.started = time.monotonic()
        slot.ready = False
        slot.misses = 0
        slot.next_probe = slot.started + self.settings.workers.health_interval_s
        slot.reader = threading.Thread(target=self._forward, args=(slot, slot.proc),
                                       name=f"{slot.role}-{slot.index}-out", daemon=True)
        slot.reader.start()
        if slot.role == "recognition":
            self.log("recognition_started", pid=slot.proc.pid, socket=self.recognition_socket,
                      restarts=slot.restarts)
        else:
            self.log("worker_started", worker=slot.index, pid=slot.proc.pid, port=slot.port,
                      rtp_port=slot.rtp_port, restarts=slot.restarts)

    def check(self, slot: Slot, now: float) -> None:
        proc = slot.proc
        if proc is None:
            if now >= slot.next_start and not self.stopping:
                self.spawn(slot)
            return
        code = proc.poll()
        if code is not None:
            if slot.reader is not None:
                slot.reader.join(2)
            uptime = now - slot.started
            if slot.ready and now - slot.ready_at >= HEALTHY_AFTER_S:
                slot.backoff_s = 1.0
            who = {"worker": slot.index} if slot.role == "worker" else {}
            self.log(f"{slot.role}_exited", **who, pid=proc.pid, code=code,
                      uptime_s=round(uptime, 1), restart_in_s=slot.backoff_s)
            if slot.role == "worker" and self.metrics_server is not None:
                metrics.process_gone(self.metrics_dir, proc.pid)
            slot.proc = None
            slot.restarts += 1
            slot.next_start = now + slot.backoff_s
            slot.backoff_s = min(MAX_BACKOFF_S, slot.backoff_s * 2)
            return
        if slot.ready and now >= slot.next_probe and not self.stopping:
            slot.next_probe = now + self.settings.workers.health_interval_s
            if slot.role == "recognition":
                healthy = probe.recognition(self.recognition_socket, timeout=2.0)
            else:
                bind = self.settings.workers.bind
                healthy = probe.options(bind, slot.port, bind=bind, timeout=2.0) == 200
            slot.misses = 0 if healthy else slot.misses + 1
            if slot.misses >= MISSES_BEFORE_KILL:
                who = {"worker": slot.index} if slot.role == "worker" else {}
                self.log(f"{slot.role}_unhealthy", **who, pid=proc.pid, misses=slot.misses)
                proc.kill()

    def purge(self) -> None:
        """Transcript retention, in a thread: a slow database must not stall supervision."""
        def run() -> None:
            from callbot.transcripts import purge

            try:
                report = purge(self.settings.core)
                self.log("purged", calls=report.calls, turns=report.turns,
                          recordings=report.recordings, closed=report.closed)
            except Exception as exc:   # the store may be down: calls go on, retry tomorrow
                self.log("purge_failed", error=f"{type(exc).__name__}: {exc}")

        threading.Thread(target=run, name="purge", daemon=True).start()

    def run(self) -> int:
        for what in self.pids.claim():
            self.log("stale_stopped", process=what)
        if self.front is not None:
            self.front.prepare()      # refuse to start on a front Kamailio rejects
        self.serve_metrics()
        if self.recognition is not None:
            self.spawn(self.recognition)   # loads its models while the workers load theirs
        for slot in self.slots:
            self.spawn(slot)
        while not self.stopping:
            now = time.monotonic()
            if now >= self.next_purge:
                self.next_purge = now + PURGE_EVERY_S
                self.purge()
            if self.recognition is not None:
                self.check(self.recognition, now)
            for slot in self.slots:
                self.check(slot, now)
            self._open_front(now)
            time.sleep(0.2)
        return self.shutdown()

    def serve_metrics(self) -> None:
        """The /metrics endpoint of every worker together (nothing if [metrics] listen is
        empty); a port already taken stops ``serve`` with what to change."""
        m = self.settings.core.metrics
        listen = parse_listen(m.listen, m.path)
        if listen is None:
            return
        metrics.fresh_folder(self.metrics_dir)
        restarts = metrics.scraped(
            "callbot_worker_restarts", "Workers restarted by callbot serve (crash, hang, "
            "recycle)", lambda: sum(s.restarts for s in self.slots), counter=True)
        backlog = metrics.scraped(
            "callbot_transcript_backlog", "Transcript operations waiting for the database",
            self.transcript_backlog)
        registry = registry_for(str(self.metrics_dir), extra=[restarts, backlog])
        self.metrics_server = MetricsServer(listen, registry)
        host, port = self.metrics_server.address[:2]
        self.log("metrics", url=f"http://{host}:{port}{listen.path}")

    def transcript_backlog(self) -> float | None:
        """Operations waiting for the database in the workers' journals (None: unknown)."""
        if not self.settings.core.transcripts.enabled:
            return None
        from callbot.transcripts import journal_backlog

        try:
            return journal_backlog(self.settings.core)
        except OSError:
            return None

    def _open_front(self, now: float) -> None:
        """The front once every worker is ready (then kept alive); said once."""
        ready = sum(s.ready for s in self.slots)
        if not self.announced and ready < len(self.slots) and now - self.t0 < READY_WAIT_S:
            return
        if self.front is not None:
            if self.front.proc is None and not self.announced:
                self.front.spawn()
            self.front.check(now, self.stopping)
        if not self.announced:
            self.announced = True
            w = self.settings.workers
            capacity = (len(self.slots) + len(w.remote)) * self.settings.inbound_calls
            self.log("serve_ready", workers=ready, of=len(self.slots), calls=capacity,
                      port=self.settings.sip.port if self.front else None,
                      remote=len(w.remote), front=w.front, start_s=round(now - self.t0, 1))

    def shutdown(self) -> int:
        self.log("stopping", workers=sum(s.proc is not None for s in self.slots))
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.workers.drain_timeout_s + 10.0
        while time.monotonic() < deadline and not self.force:
            if all(s.proc is None or s.proc.poll() is not None for s in self.slots):
                break
            time.sleep(0.1)
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                if self.force:
                    slot.proc.send_signal(signal.SIGTERM)   # workers skip the drain on a 2nd
                    try:
                        slot.proc.wait(5)
                    except subprocess.TimeoutExpired:
                        pass
                if slot.proc.poll() is None:
                    slot.proc.kill()
                    self.log("worker_killed", worker=slot.index, pid=slot.proc.pid)
            if slot.proc is not None:
                slot.proc.wait()
                if slot.reader is not None:
                    slot.reader.join(2)
        # The recognition service once no worker can ask it anything.
        rec = self.recognition
        if rec is not None and rec.proc is not None:
            if rec.proc.poll() is None:
                rec.proc.send_signal(signal.SIGTERM)
                try:
                    rec.proc.wait(5)
                except subprocess.TimeoutExpired:
                    rec.proc.kill()
                    rec.proc.wait()
            if rec.reader is not None:
                rec.reader.join(2)
        # Last: draining calls sent their BYEs (record-routed) through the front.
        front = self.front.stop() if self.front is not None else None
        if self.metrics_server is not None:
            self.metrics_server.close()
        self.pids.release()
        self.log("stopped", codes={s.index: (s.proc.returncode if s.proc else None)
                                    for s in self.slots}, front=front)
        return 0


def main(config_path: str | None = None) -> int:
    try:
        settings = load_settings(config_path)
    except CallbotError as exc:
        print(f"callbot serve: {exc}", file=sys.stderr)
        return exc.exit_code
    sup = Supervisor(settings, config_path or os.environ.get("CALLBOT_CONFIG"))

    def stop(signum, frame) -> None:
        if sup.stopping or signum == signal.SIGINT:
            sup.force = True
        sup.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        return sup.run()
    except (CallbotError, RuntimeError) as exc:
        print(f"callbot serve: {exc}", file=sys.stderr)
        sup.stopping = True
        sup.shutdown()
        return getattr(exc, "exit_code", 2)
