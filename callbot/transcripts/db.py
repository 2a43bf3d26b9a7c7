"""Connections to the transcript database: SQLite (embedded) or PostgreSQL, one interface.

The rest of the package writes portable SQL with ``?`` placeholders and gets rows as dicts;
this module hides the two drivers' differences (placeholders, row types, transactions) and
applies the numbered migrations of ``migrations/`` at the first connection, so every
worker, the console and the command line always see the same schema.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CallbotError
from ..private import FILE_MODE, create_private, private_dir

# Any constant: serializes migrations when several PostgreSQL clients start at once.
_MIGRATION_LOCK = 0x63616C6C


class StoreError(CallbotError):
    """The transcript database cannot be reached or used."""


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, SQL) of every migration file, in order."""
    out = []
    folder = resources.files("callbot.transcripts").joinpath("migrations")
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text(encoding="utf-8")))
    return sorted(out)


def _statements(sql: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in sql.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


class Connection:
    """One DB-API connection in autocommit mode; :meth:`transaction` groups statements."""

    def __init__(self, raw: Any, kind: str):
        self.raw = raw
        self.kind = kind

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.kind == "postgresql" else sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(self._sql(sql), tuple(params))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        cur = self.execute(sql, params)
        return [dict(r) for r in cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        if row is None:
            return None
        return row[0] if self.kind == "sqlite" else next(iter(row.values()))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self.kind == "postgresql":
            with self.raw.transaction():
                yield self
            return
        self.raw.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.raw.execute("ROLLBACK")
            raise
        self.raw.execute("COMMIT")

    def close(self) -> None:
        try:
            self.raw.close()
        except Exception:
            pass


class Database:
    """Where the transcripts live: opens connections and migrates the schema once."""

    def __init__(self, url: str, sqlite_path: Path | None = None):
        self.url = url
        self.kind = "postgresql" if url.startswith(("postgresql://", "postgres://")) else "sqlite"
        self.path = sqlite_path
        if self.kind == "sqlite" and self.path is None:
            self.path = Path(url.removeprefix("sqlite:///"))
        self._migrated = False

    @property
    def label(self) -> str:
        """Where, for messages: the file, or the URL without its password."""
        if self.kind == "sqlite":
            return str(self.path)
        scheme, _, rest = self.url.partition("://")
        creds, at, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':', 1)[0]}@{host}" if at else self.url

    def connect(self) -> Connection:
        """A new connection, the schema brought up to date; StoreError when impossible."""
        try:
            conn = self._open()
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"transcripts database {self.label} cannot be opened: "
                             f"{_reason(exc)}") from None
        if not self._migrated:
            try:
                migrate(conn)
            except Exception as exc:
                conn.close()
                raise StoreError(f"transcripts database {self.label}: migration failed: "
                                 f"{_reason(exc)}") from None
            self._migrated = True
        return conn

    def _open(self) -> Connection:
        if self.kind == "postgresql":
            import psycopg
            from psycopg.rows import dict_row

            raw = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                  connect_timeout=5)
            return Connection(raw, "postgresql")
        assert self.path is not None
        try:
            private_dir(self.path.parent)
            # Owner-only before SQLite writes a byte; its -wal and -shm files take the
            # database file's mode when SQLite creates them.
            create_private(self.path)
            for extra in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + extra)
                if side.exists():
                    side.chmod(FILE_MODE)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path}: {exc.strerror}; check that the "
                             f"folder is writable by this account") from None
        raw = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                              check_same_thread=False)
        raw.row_factory = sqlite3.Row
        raw.execute("PRAGMA journal_mode=WAL")
        # FULL: each committed turn is on disk before the next one is written (power loss
        # too, not only a crash of the process).
        raw.execute("PRAGMA synchronous=FULL")
        # Deleted rows (purged calls) are overwritten with zeros, not left in free pages
        # where a copy of the file would still show them.
        raw.execute("PRAGMA secure_delete=ON")
        return Connection(raw, "sqlite")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def migrate(conn: Connection) -> int:
    """Apply the migrations not yet in schema_version; returns the schema version."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, "
                 "name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
    with conn.transaction():
        if conn.kind == "postgresql":
            conn.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))
        current = conn.scalar("SELECT MAX(version) FROM schema_version") or 0
        for number, name, sql in migrations():
            if number <= current:
                continue
            for statement in _statements(sql):
                conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version, name, applied_at) "
                         "VALUES (?, ?, ?)", (number, name, time.time()))
            current = number
    return current
