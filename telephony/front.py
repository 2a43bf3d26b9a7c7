"""The Kamailio front of ``callbot serve``: written, checked, started and kept alive.

With more than one worker, the public SIP port belongs to Kamailio (a stateful proxy that
spreads INVITEs over the workers, see :mod:`telephony.dispatcher`); the workers listen on
``workers.base_sip_port + i``. The supervisor owns this object: it writes the files into
``paths.data/sip`` (the same files an integrator deploys), refuses to start when
``kamailio -c`` rejects them (a broken front must fail loudly at start, not at the first
call), restarts Kamailio if it dies, and stops it last so that calls draining on the
workers can still send their BYEs through it.
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

from . import dispatcher
from .settings import TelephonySettings

MAX_BACKOFF_S = 30.0


def plan_for(settings: TelephonySettings) -> dispatcher.DispatcherPlan:
    """The dispatcher plan of ``settings``: public sip.port in front of every worker."""
    sip, w = settings.sip, settings.workers
    host = f"[{sip.bind}]" if ":" in sip.bind else sip.bind
    return dispatcher.DispatcherPlan(
        listen=sip.bind, port=sip.port, transports=sip.transports,
        workers=tuple(f"sip:{host}:{w.sip_port(i)}" for i in range(w.count)),
        allowed_sources=tuple(str(n) for n in sip.allowed_sources))


class Front:
    """One Kamailio process in front of the workers, restarted with a back-off if it dies."""

    def __init__(self, settings: TelephonySettings, emit: Callable[..., None]) -> None:
        self.settings = settings
        self.emit = emit
        self.folder = Path(settings.core.paths.data) / "sip"
        self.plan = plan_for(settings)
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
        res = subprocess.run(dispatcher.check_command(self.cfg), capture_output=True,
                             text=True, timeout=30)
        if res.returncode != 0:
            lines = [ln for ln in (res.stderr + res.stdout).splitlines() if "ERROR" in ln]
            raise ConfigError(f"{self.cfg}: kamailio -c refused the generated front: "
                              + ("; ".join(lines[-3:]) or f"exit code {res.returncode}"))
        self.emit("front_checked", cfg=str(self.cfg), port=self.plan.port,
                  workers=list(self.plan.workers))

    def spawn(self) -> None:
        assert self.cfg is not None
        self.proc = subprocess.Popen(dispatcher.command(self.cfg, self.folder),
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     start_new_session=True)   # stderr: the supervisor's
        self.started = time.monotonic()
        self.emit("front_started", pid=self.proc.pid, port=self.plan.port,
                  restarts=self.restarts)

    def check(self, now: float, stopping: bool) -> None:
        """Restart Kamailio if it exited (not while stopping)."""
        if self.proc is None:
            if not stopping and now >= self.next_start:
                self.spawn()
            return
        code = self.proc.poll()
        if code is None:
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
