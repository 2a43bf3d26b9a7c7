"""The Kamailio front of ``callbot serve``: written, checked, started and kept alive.

The public SIP port belongs to Kamailio (a stateful proxy that spreads INVITEs over the
workers and holds the limits, see :mod:`telephony.dispatcher`), even for one worker; the
workers listen on ``workers.bind:workers.base_sip_port + i``. The supervisor owns this
object: it writes the files into ``paths.data/sip`` (the same files an integrator
deploys), refuses to start when ``kamailio -c`` rejects them or when the public port is held
by another process (a broken front must fail loudly at start, not at the first call),
restarts Kamailio if it dies or stops answering its OPTIONS probe (a wedged proxy refuses
every call while looking alive), and stops it last so that calls draining on the workers
can still send their BYEs through it. Kamailio dies with the supervisor
(:mod:`telephony.lifecycle`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from callbot.errors import ConfigError

from . import dispatcher, lifecycle, probe
from .settings import TelephonySettings

MAX_BACKOFF_S = 30.0
MISSES_BEFORE_RESTART = 3
CHECK_TIMEOUT_S = 60         # `kamailio -c` takes 50 ms; only a starved machine gets near


def plan_for(settings: TelephonySettings, secret: str = "") -> dispatcher.DispatcherPlan:
    """The dispatcher plan of ``settings``: public sip.port in front of every worker, with
    limits derived from what the workers can take."""
    sip, w = settings.sip, settings.workers
    host = f"[{w.bind}]" if ":" in w.bind else w.bind
    return dispatcher.DispatcherPlan(
        listen=sip.bind, port=sip.port, transports=sip.transports,
        workers=tuple(f"sip:{host}:{w.sip_port(i)}" for i in range(w.count))
        + tuple(f"sip:{r}" for r in w.remote),
        allowed_sources=tuple(str(n) for n in sip.allowed_sources),
        secret=secret, setups_per_s=(w.count + len(w.remote)) * sip.max_setups_per_s)


class Front:
    """One Kamailio process in front of the workers, restarted with a back-off if it dies."""

    def __init__(self, settings: TelephonySettings, emit: Callable[..., None],
                 secret: str = "", pids: lifecycle.PidFile | None = None) -> None:
        self.settings = settings
        self.emit = emit
        self.folder = Path(settings.core.paths.data) / "sip"
        self.plan = plan_for(settings, secret)
        self.pids = pids
        self.misses = 0
        self.next_probe = 0.0
        self.cfg: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.restarts = 0
        self.backoff_s = 1.0
        self.next_start = 0.0

    def prepare(self) -> None:
        """Write and check the configuration; ConfigError (with Kamailio's words) if bad."""
        if shutil.which("kamailio") is None:
            raise ConfigError("workers.count > 1 needs Kamailio in front of the workers: "
                              "install it (apt-get install kamailio) or set workers.count = 1")
        self.cfg = dispatcher.write_config(self.plan, self.folder)
        try:
            res = subprocess.run(dispatcher.check_command(self.cfg), capture_output=True,
                                 text=True, timeout=CHECK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ConfigError(f"{self.cfg}: kamailio -c did not finish in {CHECK_TIMEOUT_S} s "
                              f"(machine overloaded?): start callbot serve again") from None
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr + res.stdout).splitlines() if "ERROR" in ln]
            raise ConfigError(f"{self.cfg}: kamailio -c refused the generated front: "
                              + ("; ".join(lines[-3:]) or f"exit code {res.returncode}"))
        self.emit("front_checked", cfg=str(self.cfg), port=self.plan.port,
                  workers=list(self.plan.workers), setups_per_s=self.plan.setups_per_s)
        if not lifecycle.port_free(self.plan.listen, self.plan.port, self.plan.transports):
            holder = lifecycle.port_holder(self.plan.port)
            raise ConfigError(f"sip.port {self.plan.listen}:{self.plan.port} is already in "
                              f"use by {holder or 'another process'}: stop it, or choose "
                              f"another sip.port")

    def spawn(self) -> None:
        assert self.cfg is not None
        self.proc = subprocess.Popen(dispatcher.command(self.cfg, self.folder),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     preexec_fn=lifecycle.die_with_parent())  # stderr: ours
        self.started = time.monotonic()
        self.misses = 0
        self.next_probe = self.started + max(2.0, self.settings.workers.health_interval_s)
        if self.pids is not None:
            self.pids.add("front", self.proc.pid, "kamailio")
        self.emit("front_started", pid=self.proc.pid, port=self.plan.port,
                  restarts=self.restarts)

    def check(self, now: float, stopping: bool) -> None:
        """Restart Kamailio if it exited or stopped answering (not while stopping)."""
        if self.proc is None:
            if not stopping and now >= self.next_start:
                self.spawn()
            return
        code = self.proc.poll()
        if code is None:
            if not stopping and now >= self.next_probe:
                self.next_probe = now + self.settings.workers.health_interval_s
                ok = probe.options(self.plan.listen, self.plan.port, bind=self.plan.listen,
                                   timeout=2.0) == 200
                self.misses = 0 if ok else self.misses + 1
                if self.misses >= MISSES_BEFORE_RESTART:
                    self.emit("front_unhealthy", pid=self.proc.pid, misses=self.misses)
                    self._kill_group(self.proc)
            return
        uptime = now - self.started
        if uptime >= 60.0:
            self.backoff_s = 1.0
        self.emit("front_exited", pid=self.proc.pid, code=code, uptime_s=round(uptime, 1),
                  restart_in_s=self.backoff_s)
        self.proc = None
        self.restarts += 1
        self.next_start = now + self.backoff_s
        self.backoff_s = min(MAX_BACKOFF_S, self.backoff_s * 2)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM (Kamailio stops its children), SIGKILL to the group if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group(proc)
        code = proc.wait()
        self._kill_group(proc)     # any child Kamailio left behind in its process group
        self.emit("front_stopped", pid=proc.pid, code=code)
        return code

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
