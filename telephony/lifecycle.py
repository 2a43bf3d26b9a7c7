"""Child processes that live and die with ``callbot serve``.

The workers and the Kamailio front run in sessions of their own (a Ctrl-C in the terminal is
the supervisor's to handle), so nothing ties them to the supervisor by default: a SIGKILLed
or OOM-killed ``serve`` used to leave a front that kept the public port and answered every
INVITE with 503, and the next ``serve`` could not start its own. Three guards:

* every child asks the kernel for SIGTERM when the supervisor dies (``PR_SET_PDEATHSIG``):
  Kamailio then stops its own children cleanly, a worker drains;
* ``serve.json`` in the SIP data folder lists the supervisor and its children; a new
  ``serve`` finds a dead supervisor's leftovers there and stops them (process groups, and
  only processes whose command line is still ours);
* a public port held by any other process is one clear error naming that process.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import time
from pathlib import Path

from callbot.private import private_dir

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM):
    """A ``preexec_fn``: the child gets ``sig`` when the thread that started it dies (the
    supervisor's main thread, which spawns every child)."""
    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        os.setsid()                    # a session of its own: our Ctrl-C is not theirs
    return preexec


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace").strip()
    except OSError:
        return ""


class PidFile:
    """``serve.json``: the supervisor's pid and each child's (pid, what it runs)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.children: dict[str, tuple[int, str]] = {}

    def read(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def claim(self) -> list[str]:
        """Take the file for this supervisor; stop what a dead one left behind.

        Returns what was stopped. Raises RuntimeError if another supervisor is alive."""
        old = self.read()
        owner = int(old.get("supervisor", 0) or 0)
        if owner and owner != os.getpid() and alive(owner) and "serve" in cmdline(owner):
            raise RuntimeError(f"callbot serve is already running (pid {owner}) with the "
                               f"data folder {self.path.parent.parent}: stop it first")
        stopped = []
        for name, (pid, marker) in (old.get("children") or {}).items():
            if pid and alive(pid) and marker and marker in cmdline(pid):
                stop_group(pid)
                stopped.append(f"{name} (pid {pid})")
        self.children = {}
        self._write()
        return stopped

    def add(self, name: str, pid: int, marker: str) -> None:
        self.children[name] = (pid, marker)
        self._write()

    def release(self) -> None:
        try:
            self.path.unlink()
        except OSError:
            pass

    def _write(self) -> None:
        private_dir(self.path.parent)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"supervisor": os.getpid(), "children": self.children}))
        tmp.replace(self.path)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_group(pid: int, timeout: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid`` (Kamailio and its children, a worker), then
    SIGKILL whatever of it is left after ``timeout``; returns once the group is gone."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not group_alive(pid):
                return
            time.sleep(0.05)


def port_free(host: str, port: int, transports: tuple[str, ...]) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for t in transports:
        kind = socket.SOCK_DGRAM if t == "udp" else socket.SOCK_STREAM
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def port_holder(port: int) -> str:
    """'pid 1234 (kamailio -f …)' of a process with a socket on ``port``, or ''."""
    inodes = set()
    for table in ("udp", "udp6", "tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if len(cols) > 9 and int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    if not inodes:
        return ""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return f"pid {proc.name} ({cmdline(int(proc.name))[:120]})"
        except OSError:
            continue
    return "another process"
