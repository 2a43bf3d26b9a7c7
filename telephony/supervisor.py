"""`callbot serve`: N worker processes, the Kamailio front, restarts and a clean stop.

A pjsua2 process carries four calls and can be brought down by a burst of call churn, so
calls are spread over worker processes that the supervisor restarts when one dies: a dead
worker loses only its own calls. With more than one worker, Kamailio holds the public SIP
port and dispatches to the workers (see :mod:`telephony.dispatcher`); with one worker, the
worker listens on the public port itself.

SIGTERM (or Ctrl-C): workers are asked to stop (they let calls finish or transfer them
within ``workers.drain_timeout_s``), then Kamailio is stopped.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .dispatcher import DispatcherPlan, check_command, command, write_config
from .settings import TelephonySettings

RESTART_BACKOFF_S = (0.2, 1.0, 3.0, 10.0)   # a worker that keeps dying is not respawned in a loop
HEALTHY_AFTER_S = 30.0                       # alive this long: its restart count starts over


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    next_start: float = 0.0


class Supervisor:
    """Starts, watches and stops the SIP side of one machine."""

    def __init__(self, settings: TelephonySettings, config_path: str | None,
                 log: Callable[[str], None] | None = None):
        self.settings = settings
        self.config_path = config_path
        self.log = log or (lambda line: print(line, flush=True))
        self.stopping = threading.Event()
        self.children: list[Child] = []
        self.front: Child | None = None
        self.state_dir = settings.core.paths.data / "sip"
        n = settings.workers.count
        for i in range(n):
            port = settings.sip.port if n == 1 else settings.workers.sip_port(i)
            argv = [sys.executable, "-m", "telephony.worker", "--port", str(port),
                    "--rtp-port", str(settings.rtp_port_for(i))]
            if config_path:
                argv += ["--config", str(config_path)]
            self.children.append(Child(f"worker-{i}", argv))
        if n > 1:
            self.plan = DispatcherPlan(
                listen=settings.sip.bind, port=settings.sip.port,
                transports=settings.sip.transports,
                workers=tuple(f"sip:{settings.sip.bind}:{settings.workers.sip_port(i)}"
                              for i in range(n)))
            cfg = write_config(self.plan, self.state_dir)
            self.front = Child("kamailio", command(cfg, self.state_dir))
            self.kamailio_cfg = cfg

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        if self.front is not None:
            check = subprocess.run(check_command(self.kamailio_cfg), capture_output=True,
                                   text=True)
            if check.returncode != 0:
                raise RuntimeError(f"generated Kamailio configuration {self.kamailio_cfg} is "
                                   f"invalid: {check.stderr.strip().splitlines()[-1:]}")
        for child in self.children:
            self._spawn(child)
        if self.front is not None:
            self._spawn(self.front)
            self.log(f"SIP front: Kamailio on {self.plan.listen}:{self.plan.port} "
                     f"({'/'.join(self.plan.transports)}) -> {len(self.children)} workers; "
                     f"configuration {self.kamailio_cfg}")

    def wait_ready(self, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        for child in self.children:
            if not child.ready.wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def run(self) -> int:
        """Watch the children until stopped; returns the exit code."""
        while not self.stopping.is_set():
            now = time.monotonic()
            for child in self.children + ([self.front] if self.front else []):
                proc = child.proc
                if proc is not None and proc.poll() is not None:
                    self.log(f"{child.name} (pid {proc.pid}) exited with {proc.returncode}: "
                             f"restarting")
                    child.proc = None
                    child.ready.clear()
                    if now - child.started > HEALTHY_AFTER_S:
                        child.restarts = 0
                    delay = RESTART_BACKOFF_S[min(child.restarts, len(RESTART_BACKOFF_S) - 1)]
                    child.next_start = now + delay
                    child.restarts += 1
                if child.proc is None and now >= child.next_start:
                    self._spawn(child)
            self.stopping.wait(0.2)
        return self.stop()

    def stop(self) -> int:
        self.stopping.set()
        drain = self.settings.workers.drain_timeout_s
        for child in self.children:
            if child.proc and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + drain + 5
        for child in self.children:
            if child.proc:
                try:
                    child.proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    self.log(f"{child.name} did not stop in time: killed")
                    child.proc.kill()
                    child.proc.wait()
        if self.front and self.front.proc and self.front.proc.poll() is None:
            self.front.proc.terminate()
            try:
                self.front.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.front.proc.kill()
                self.front.proc.wait()
        self.log("stopped")
        return 0

    # --- internals -------------------------------------------------------------------------
    def _spawn(self, child: Child) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        child.proc = subprocess.Popen(child.argv, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True, env=env,
                                      start_new_session=True)
        child.started = time.monotonic()
        threading.Thread(target=self._forward, args=(child, child.proc), daemon=True,
                         name=f"log-{child.name}").start()

    def _forward(self, child: Child, proc: subprocess.Popen) -> None:
        """Prefix each line of the child's output with its name; notice "ready"."""
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            if child is not self.front and not child.ready.is_set():
                try:
                    if json.loads(line).get("event") == "ready":
                        child.ready.set()
                except (ValueError, AttributeError):
                    pass
            self.log(f"[{child.name}] {line}")

    def pids(self) -> dict[str, int]:
        return {c.name: c.proc.pid for c in self.children + ([self.front] if self.front else [])
                if c.proc is not None and c.proc.poll() is None}


def serve(settings: TelephonySettings, config_path: str | None) -> int:
    """Run until SIGTERM/SIGINT."""
    sup = Supervisor(settings, config_path)

    def on_signal(signum, frame):
        sup.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Path(sup.state_dir).mkdir(parents=True, exist_ok=True)
    sup.start()
    if sup.wait_ready(120):
        sip = settings.sip
        sup.log(f"callbot answering on sip:{sip.user}@{sip.bind}:{sip.port} "
                f"({len(sup.children)} worker(s), {sip.max_calls} calls each)")
    return sup.run()
