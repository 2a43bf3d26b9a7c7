"""Where the register copy lives: one SQLite file, or ``sirene_*`` tables in PostgreSQL.

The same database engine as the transcripts (``[transcripts] url``): a single machine keeps
a SQLite file (``[sirene] path``, by default ``paths.data/sirene.sqlite3``); a shared
deployment, whose workers already reach one PostgreSQL, keeps the register there too.

A monthly import never changes the copy in place. It builds a complete new one (a new
SQLite file, or new PostgreSQL tables) and swaps it in at the end in one atomic step
(``rename(2)`` of the file; table renames inside one transaction), so lookups answering
calls meanwhile see the old register or the new one, never a half-loaded one; a failed
import leaves the old one untouched.

Identifiers are stored as integers (``siren``, ``siret``: the INTEGER PRIMARY KEY of
SQLite, the row id itself), which halves the size of 30 million establishments and makes
a lookup one B-tree descent.
"""

from __future__ import annotations

import fcntl
from itertools import chain
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Config
from ..errors import CallbotError

log = logging.getLogger("callbot.sirene")

# What is kept of each file (already stripped of what may never be said: see importer).
UNIT_COLUMNS = ("siren", "diffusible", "etat", "date_etat", "date_creation", "ape",
                "nomenclature", "ape_naf25", "categorie_juridique", "denomination",
                "nic_siege")
ETAB_COLUMNS = ("siret", "diffusible", "siege", "etat", "code_postal", "commune")

TABLES = {"unite_legale": "unite_legale", "etablissement": "etablissement"}

_SQLITE_DDL = {
    "unite_legale": "CREATE TABLE unite_legale (siren INTEGER PRIMARY KEY, "
                    "diffusible INTEGER NOT NULL, etat TEXT, date_etat TEXT, "
                    "date_creation TEXT, ape TEXT, nomenclature TEXT, ape_naf25 TEXT, "
                    "categorie_juridique TEXT, denomination TEXT, nic_siege TEXT)",
    "etablissement": "CREATE TABLE etablissement (siret INTEGER PRIMARY KEY, "
                     "diffusible INTEGER NOT NULL, siege INTEGER NOT NULL, etat TEXT, "
                     "code_postal TEXT, commune TEXT)",
    "meta": "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
}

_PG_DDL = {
    "unite_legale": "CREATE TABLE {t} (siren INTEGER NOT NULL, diffusible BOOLEAN NOT NULL, "
                    "etat TEXT, date_etat TEXT, date_creation TEXT, ape TEXT, "
                    "nomenclature TEXT, ape_naf25 TEXT, categorie_juridique TEXT, "
                    "denomination TEXT, nic_siege TEXT)",
    "etablissement": "CREATE TABLE {t} (siret BIGINT NOT NULL, diffusible BOOLEAN NOT NULL, "
                     "siege BOOLEAN NOT NULL, etat TEXT, code_postal TEXT, commune TEXT)",
    # no key: a named constraint would outlive the rename and collide with the next import
    "meta": "CREATE TABLE {t} (key TEXT NOT NULL, value TEXT)",
}
_PG_KEY = {"unite_legale": "siren", "etablissement": "siret"}
# Serializes two imports into one PostgreSQL database (any constant).
_PG_IMPORT_LOCK = 0x5349524E


class RegisterError(CallbotError):
    """The register copy cannot be built or read (says where and what to do)."""


@dataclass(frozen=True)
class Location:
    """Where the register of a configuration lives."""

    kind: str                 # "sqlite" | "postgresql"
    path: Path | None = None  # SQLite
    url: str = ""             # PostgreSQL

    @property
    def label(self) -> str:
        if self.kind == "sqlite":
            return str(self.path)
        from ..transcripts.db import Database

        return Database(self.url).label   # the URL without its password


def location(config: Config) -> Location:
    """The transcripts' engine: PostgreSQL when ``transcripts.url`` names one, else the
    SQLite file ``[sirene] path`` (default ``paths.data/sirene.sqlite3``)."""
    url = config.transcripts.url
    if url.startswith(("postgresql://", "postgres://")):
        return Location("postgresql", url=url)
    path = config.sirene.path or config.paths.data / "sirene.sqlite3"
    return Location("sqlite", path=Path(path))


# --- reading ------------------------------------------------------------------------------
class Reader(Protocol):
    def unit(self, siren: int) -> tuple | None: ...
    def etab(self, siret: int) -> tuple | None: ...
    def info(self) -> dict[str, str] | None: ...
    def close(self) -> None: ...


class SqliteReader:
    """Read-only access to the register file, following it across monthly swaps.

    The file is opened ``immutable``: an import never writes into it, it renames a new file
    over it. Each read compares the path's inode with the open one and reopens after a
    swap, so a long-running worker answers from the new month without a restart, and a
    read that started on the old file finishes on it.
    """

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._ino: tuple[int, int] | None = None

    def _current(self) -> sqlite3.Connection | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._drop()
            return None
        ident = (st.st_dev, st.st_ino)
        if self._conn is None or ident != self._ino:
            self._drop()
            conn = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True,
                                   check_same_thread=False)
            if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
                conn.close()           # not a finished register (never swapped in half-built)
                return None
            self._conn, self._ino = conn, ident
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn, self._ino = None, None

    def _one(self, sql: str, key: Any) -> tuple | None:
        with self._lock:
            conn = self._current()
            if conn is None:
                return None
            return conn.execute(sql, (key,)).fetchone()

    def unit(self, siren: int) -> tuple | None:
        return self._one(f"SELECT {', '.join(UNIT_COLUMNS)} FROM unite_legale "
                         f"WHERE siren = ?", siren)

    def etab(self, siret: int) -> tuple | None:
        return self._one(f"SELECT {', '.join(ETAB_COLUMNS)} FROM etablissement "
                         f"WHERE siret = ?", siret)

    def info(self) -> dict[str, str] | None:
        with self._lock:
            conn = self._current()
            return dict(conn.execute("SELECT key, value FROM meta").fetchall()) if conn else None

    def close(self) -> None:
        with self._lock:
            self._drop()


class PgReader:
    """The ``sirene_*`` tables of the transcripts' PostgreSQL database, one connection.

    Queries name the tables, so after an import's swap (renames in one transaction) the
    next query reads the new tables; one waiting on the swap's lock reads them too.
    A lost connection is opened again at the next lookup.
    """

    def __init__(self, url: str):
        self.url = url
        self._lock = threading.Lock()
        self._conn: Any = None

    def _query(self, sql: str, params: tuple) -> list[tuple]:
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = psycopg.connect(self.url, autocommit=True,
                                                     connect_timeout=5)
                    return self._conn.execute(sql, params).fetchall()
                except psycopg.errors.UndefinedTable:
                    return []            # no register imported yet
                except psycopg.OperationalError:
                    if self._conn is not None:
                        self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
            return []

    def unit(self, siren: int) -> tuple | None:
        rows = self._query(f"SELECT {', '.join(UNIT_COLUMNS)} FROM sirene_unite_legale "
                           f"WHERE siren = %s", (siren,))
        return rows[0] if rows else None

    def etab(self, siret: int) -> tuple | None:
        rows = self._query(f"SELECT {', '.join(ETAB_COLUMNS)} FROM sirene_etablissement "
                           f"WHERE siret = %s", (siret,))
        return rows[0] if rows else None

    def info(self) -> dict[str, str] | None:
        rows = self._query("SELECT key, value FROM sirene_meta", ())
        return dict(rows) if rows else None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
            self._conn = None


def open_reader(where: Location) -> Reader:
    if where.kind == "postgresql":
        return PgReader(where.url)
    assert where.path is not None
    return SqliteReader(where.path)


# --- building -----------------------------------------------------------------------------
class Builder(Protocol):
    def load(self, kind: str, rows: Iterable[Any]) -> None: ...
    def carry_over(self, kind: str) -> bool: ...
    def finish(self, meta: dict[str, str]) -> None: ...


class SqliteBuilder:
    """A new register file next to the live one, renamed over it by :meth:`finish`."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(f"{path.name}.building-{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RegisterError(f"cannot create the folder of {path}: {exc.strerror}") from None
        # One import at a time: a second one would build for nothing, then race the rename.
        self._lock = open(path.with_name(f"{path.name}.import-lock"), "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise RegisterError(f"another import into {path} is running; wait for it to "
                                f"finish") from None
        self.tmp.unlink(missing_ok=True)
        self.conn = _building_connection(self.tmp)
        for ddl in _SQLITE_DDL.values():
            self.conn.execute(ddl)

    # Both files at once, one process each (two cores). SQLite has one writer per file:
    # the legal units go straight into the new register, the establishments into a part
    # file whose table absorb() then moves in (SQLite's transfer of a whole table, page by
    # page, no row decoded). Absorbing one table rather than two saved 0.6 s of 11 on the
    # million-unit files.
    parallel = True

    def part_path(self, kind: str) -> Path:
        if kind == "unite_legale":
            return self.tmp
        part = self.tmp.with_name(f"{self.tmp.name}.{kind}")
        part.unlink(missing_ok=True)
        return part

    def absorb(self, kind: str, part: Path) -> None:
        if part == self.tmp:
            return
        self.conn.execute("ATTACH DATABASE ? AS part", (str(part),))
        try:
            self.conn.execute(f"INSERT INTO main.{TABLES[kind]} SELECT * FROM part.{TABLES[kind]}")
        finally:
            self.conn.execute("DETACH DATABASE part")
        part.unlink(missing_ok=True)

    def load(self, kind: str, rows: Iterable[Any]) -> None:
        load_sqlite(self.conn, kind, rows)

    def carry_over(self, kind: str) -> bool:
        """Copy one table from the live register (an import of only one of the files)."""
        if not self.path.exists():
            return False
        self.conn.execute("ATTACH DATABASE ? AS live", (f"file:{self.path}?mode=ro",))
        try:
            self.conn.execute(f"INSERT INTO main.{TABLES[kind]} "
                              f"SELECT * FROM live.{TABLES[kind]}")
        finally:
            self.conn.execute("DETACH DATABASE live")
        return True

    def finish(self, meta: dict[str, str]) -> None:
        self.conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
        self.conn.close()
        fd = os.open(self.tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(self.tmp, self.path)      # the atomic swap
        dfd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        self._lock.close()

    def abort(self) -> None:
        try:
            self.conn.close()
        finally:
            self.tmp.unlink(missing_ok=True)
            for kind in TABLES:
                self.part_path(kind)          # removes a part file
            self._lock.close()


def _building_connection(path: Path) -> sqlite3.Connection:
    """A connection for filling a file nobody reads yet: no journal, no syncs (the file is
    thrown away on any failure, and made durable once, before the rename)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-16384")      # 16 MB
    conn.execute("PRAGMA page_size=8192")
    return conn


# Rows per INSERT statement. Python's sqlite3 steps a statement once per row of an
# executemany, and that per-row round trip was most of an import; one statement of 200
# rows (1,200 to 2,200 parameters, far below SQLite's 32,766) inserted 300,000
# establishments in 1.9 µs a row instead of 4.4.
ROWS_PER_INSERT = 200


def load_sqlite(conn: sqlite3.Connection, kind: str, batches: Iterable[Any]) -> None:
    """Arrow tables of the stored columns (``rows.stored_batches``) into the new file."""
    cols = UNIT_COLUMNS if kind == "unite_legale" else ETAB_COLUMNS
    one = f"({', '.join('?' * len(cols))})"
    head = f"INSERT INTO {TABLES[kind]} ({', '.join(cols)}) VALUES "
    many = head + ", ".join([one] * ROWS_PER_INSERT)
    conn.execute("BEGIN")
    for table in batches:
        rows = list(zip(*(table.column(c).to_pylist() for c in cols)))
        full = len(rows) - len(rows) % ROWS_PER_INSERT
        for i in range(0, full, ROWS_PER_INSERT):
            conn.execute(many, list(chain.from_iterable(rows[i:i + ROWS_PER_INSERT])))
        if full < len(rows):
            conn.executemany(head + one, rows[full:])
    conn.execute("COMMIT")


def fill_part(part: Path, kind: str, rows: Iterable[Any]) -> None:
    """One table of a new register, written by a process of its own into the register
    being built or a part file (see SqliteBuilder.part_path)."""
    conn = _building_connection(part)
    try:
        conn.execute(_SQLITE_DDL[kind].replace("CREATE TABLE", "CREATE TABLE IF NOT EXISTS"))
        load_sqlite(conn, kind, rows)
    finally:
        conn.close()


class PgBuilder:
    """New ``sirene_*_new`` tables filled with COPY, renamed over the live ones at the end;
    everything in one transaction, so a failure leaves nothing behind."""

    parallel = False     # one transaction, one connection: the files are read in turn

    def __init__(self, url: str):
        import psycopg

        # the primary keys' names must differ from the live tables' (renamed, not dropped,
        # until the swap)
        self.stamp = uuid.uuid4().hex[:12]
        try:
            self.conn = psycopg.connect(url, autocommit=False, connect_timeout=5)
        except psycopg.Error as exc:
            raise RegisterError(f"PostgreSQL {Location('postgresql', url=url).label} cannot "
                                f"be reached: {str(exc).strip().splitlines()[0]}") from None
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_IMPORT_LOCK,))
        for kind in ("unite_legale", "etablissement", "meta"):
            self.conn.execute(f"DROP TABLE IF EXISTS sirene_{kind}_new")
            self.conn.execute(_PG_DDL[kind].format(t=f"sirene_{kind}_new"))

    def _live_exists(self, kind: str) -> bool:
        return self.conn.execute("SELECT to_regclass(%s)",
                                 (f"sirene_{kind}",)).fetchone()[0] is not None

    def load(self, kind: str, rows: Iterable[Any]) -> None:
        """COPY in CSV written by Arrow (C++): a null is an empty field, an empty string a
        quoted one, which is exactly how PostgreSQL's CSV format reads them."""
        import io

        import pyarrow.csv as pcsv

        cols = UNIT_COLUMNS if kind == "unite_legale" else ETAB_COLUMNS
        options = pcsv.WriteOptions(include_header=False)
        with self.conn.cursor() as cur:
            with cur.copy(f"COPY sirene_{kind}_new ({', '.join(cols)}) FROM STDIN "
                          f"(FORMAT csv)") as copy:
                for table in rows:
                    buf = io.BytesIO()
                    pcsv.write_csv(table.select(list(cols)), buf, write_options=options)
                    copy.write(buf.getbuffer())

    def carry_over(self, kind: str) -> bool:
        if not self._live_exists(kind):
            return False
        self.conn.execute(f"INSERT INTO sirene_{kind}_new SELECT * FROM sirene_{kind}")
        return True

    def finish(self, meta: dict[str, str]) -> None:
        c = self.conn
        for kind, key in _PG_KEY.items():
            # A stock file lists each unit once; a duplicate would be a damaged file, and the
            # primary key refuses it (the whole import rolls back).
            c.execute(f"ALTER TABLE sirene_{kind}_new ADD CONSTRAINT "
                      f"sirene_{kind}_pk_{self.stamp} PRIMARY KEY ({key})")
        with c.cursor() as cur:
            cur.executemany("INSERT INTO sirene_meta_new (key, value) VALUES (%s, %s)",
                            list(meta.items()))
        for kind in ("unite_legale", "etablissement", "meta"):
            c.execute(f"DROP TABLE IF EXISTS sirene_{kind}")
            c.execute(f"ALTER TABLE sirene_{kind}_new RENAME TO sirene_{kind}")
        c.commit()                       # the atomic swap
        for kind in _PG_KEY:
            c.execute(f"ANALYZE sirene_{kind}")
        c.commit()
        c.close()

    def abort(self) -> None:
        try:
            self.conn.rollback()
        finally:
            self.conn.close()


@contextmanager
def building(where: Location) -> Iterator[SqliteBuilder | PgBuilder]:
    """A builder for a new copy; aborted (the live copy untouched) on any exception."""
    builder: SqliteBuilder | PgBuilder
    if where.kind == "postgresql":
        builder = PgBuilder(where.url)
    else:
        assert where.path is not None
        builder = SqliteBuilder(where.path)
    try:
        yield builder
    except BaseException:
        builder.abort()
        raise
