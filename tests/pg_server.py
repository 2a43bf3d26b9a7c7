"""A throw-away PostgreSQL server for the tests: initdb + pg_ctl in a temporary folder.

Debian's server binaries refuse to run as root, so as root they run as the `postgres` user
(in a folder it owns); otherwise as the current user. The server listens only on a Unix
socket in that folder and on a free loopback port.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PgStartError(Exception):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, port: int | None = None, listen: str = "127.0.0.1",
                 networks: tuple[str, ...] = ()):
        self.port = port or free_port()
        self.listen = listen          # listen_addresses (other hosts: add their network's)
        self.networks = networks      # other hosts' networks, allowed in pg_hba.conf
        self.root = Path(tempfile.mkdtemp(prefix="callbot-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._names = itertools.count(1)
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        if not (PG_BIN / "initdb").exists():
            raise PgStartError(f"{PG_BIN}/initdb not found: install Debian's postgresql "
                               f"(`apt-get install postgresql`, in the Makefile's SYSTEM_PACKAGES)")
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        if not self.data.exists():
            r = self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                          "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8")
            if r.returncode:
                raise PgStartError(f"initdb failed: {(r.stderr or r.stdout).strip()[-800:]}")
            with open(self.data / "pg_hba.conf", "a", encoding="utf-8") as hba:
                hba.writelines(f"host all all {net} trust\n" for net in self.networks)
        r = self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                      "-t", "30", "-o",
                      f"-p {self.port} -k {self.root} -c listen_addresses={self.listen} "
                      f"-c fsync=off -c max_connections=60", "start")
        if r.returncode:
            tail = self.log.read_text(errors="replace")[-800:] if self.log.exists() else ""
            raise PgStartError(f"pg_ctl start failed: {(r.stderr or r.stdout).strip()} {tail}")

    def stop(self) -> None:
        if self.data.exists():
            self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://postgres@{host}:{self.port}/{dbname}"

    def new_database(self, host: str = "127.0.0.1") -> str:
        import psycopg

        name = f"callbot_test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name, host)
