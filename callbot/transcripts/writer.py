"""The one thread that writes transcripts, so that a call never waits for a database.

A call's operation is appended to the process's journal (:mod:`.journal`, synced to disk)
and the call goes on at once; the writer thread applies the journal to the database in
order, each operation in its own transaction (a turn is durable as soon as it is written,
not at the end of the call), and empties the journal once the database has it all.

When the database is down the writer says so once, and the operations wait in the journal,
on disk: they survive a restart, a SIGKILL and any number of turns up to
``[transcripts] journal_max_mb``; the next process of the same worker replays what is left.
Only what the journal cannot take (full, disk full, folder unusable) is lost, and counted.
A call is never slowed down by the database nor broken by the store.
"""

from __future__ import annotations

import collections
import logging
import sqlite3
import threading
import time
from pathlib import Path

from .db import Connection, Database, StoreError
from .journal import Journal, JournalError
from .writes import Operation

log = logging.getLogger("callbot.transcripts")

RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)   # waits between attempts while the database is down
MEMORY_MAX = 20000     # operations held in memory when no journal can be kept
HINT_EVERY_S = 1.0     # how often a long replay records how far it has gone
DEFAULT_WORKER = "local"


def is_outage(exc: BaseException) -> bool:
    """A database that cannot be reached or written now (retry), as opposed to a bad row."""
    if isinstance(exc, StoreError | OSError):
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return any(w in str(exc) for w in ("locked", "disk", "unable to open", "readonly"))
    try:
        import psycopg
    except ImportError:   # pragma: no cover
        return False
    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Writer:
    """Journals submitted operations and commits them one by one on its own connection.

    ``folder`` None keeps no journal (operations wait in memory, as a last resort).
    """

    def __init__(self, db: Database, folder: Path | None = None,
                 max_bytes: int = 256 << 20):
        self.db = db
        self.folder = folder
        self.max_bytes = max_bytes
        self.journal: Journal | None = None
        self.worker: str | None = None
        self.written = 0        # operations committed by this process
        self.skipped = 0        # refused by the database (a bad row), logged
        self.lost = 0           # could not be kept anywhere, logged and counted
        self.failing = False
        self._memory: collections.deque[Operation] = collections.deque()
        self._offset = 0        # journal bytes already in the database
        self._queued = 0        # operations accepted, those found at start included
        self._done = 0          # ... of which written or skipped
        self._loss_said = False
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()

    # --- the calls' side ----------------------------------------------------------------
    def bind(self, worker: str) -> None:
        """Open ``worker``'s journal and start writing what a previous process of it left.

        The first name wins: one journal per process, whatever workers it records.
        """
        with self._start_lock:
            if self._thread is not None:
                return
            self.worker = worker
            self._stopping.clear()
            if self.folder is not None and self.journal is None:
                try:
                    self.journal = Journal.open(self.folder, worker, self.max_bytes)
                except JournalError as exc:
                    log.error("%s. Until then, turns that cannot reach the database wait "
                              "in memory and are lost if the process stops.", exc)
            if self.journal is not None:
                self._offset = self.journal.start
                left = self.journal.pending
                if left:
                    log.warning("transcripts: %d operation(s) left in journal %s by a "
                                "previous process are written first", left, self.journal.path)
                with self._cv:
                    self._queued += left
            self._thread = threading.Thread(target=self._run, name="transcripts-writer",
                                            daemon=True)
            self._thread.start()

    def submit(self, op: Operation) -> None:
        """Queue ``op``: durable on disk when this returns; never raises."""
        if self._thread is None:
            self.bind(self.worker or DEFAULT_WORKER)
        journal = self.journal
        if journal is not None:
            try:
                journal.append([{**op.to_json(), "at": time.time()}])
            except JournalError as exc:
                self._lose(1, str(exc), journal)
                return
            except (TypeError, ValueError) as exc:     # not plain data: a bug, said
                self._lose(1, f"transcripts: operation {op.op} cannot be journaled ({exc})",
                           journal)
                return
        else:
            with self._cv:
                if len(self._memory) >= MEMORY_MAX:
                    self._lose(1, f"transcripts: {MEMORY_MAX} operations wait in memory for "
                                  f"{self.db.label}, the most it holds without a journal",
                               None)
                    return
                self._memory.append(op)
        with self._cv:
            self._queued += 1
            self._cv.notify_all()

    def backlog(self) -> int:
        """Operations accepted and not yet in the database (nor skipped)."""
        with self._cv:      # (the thread may count an op before submit() does)
            return max(0, self._queued - self._done)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cv:
            target = self._queued
            while self._done < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout``; not at all while the database is
        down: the journal keeps it for the next start), then stop the thread. Without a
        journal, what is still in memory is lost: counted and said."""
        if self._thread is None:
            return
        self.flush(0 if self.failing else timeout)
        self._stopping.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(timeout=1.0)
        stuck = self._thread.is_alive()     # in a database call: it stops after it
        if not stuck:
            self._thread = None
        left = self.backlog()
        if self._memory:
            with self._cv:
                self.lost += len(self._memory)
            log.error("transcripts: %d operation(s) lost at exit: %s was unreachable and no "
                      "journal could be kept (%d lost in all); fix paths.data so that the "
                      "next run keeps one", len(self._memory), self.db.label, self.lost)
            self._memory.clear()
        elif left and self.journal is not None:
            log.warning("transcripts: %d operation(s) wait in journal %s; the next start of "
                        "worker %r writes them", left, self.journal.path, self.worker)
        if not stuck:
            if self.journal is not None:
                self.journal.close()
                self.journal = None
            with self._cv:
                self._queued = self._done = 0

    def _lose(self, n: int, why: str, journal: Journal | None) -> None:
        """Operations that could not be kept: counted, said once per episode."""
        with self._cv:
            self.lost += n
            said, self._loss_said = self._loss_said, True
        if journal is not None:
            journal.note_lost(n)
        if not said:
            log.error("%s. Turns are lost until this is fixed (%d so far; "
                      "`callbot transcripts status` counts them).", why.rstrip("."), self.lost)

    # --- the thread ---------------------------------------------------------------------
    def _has_work(self) -> bool:
        if self.journal is not None:
            return self._offset < self.journal.end
        return bool(self._memory)

    def _run(self) -> None:
        conn: Connection | None = None
        hinted = time.monotonic()
        while True:
            with self._cv:
                while not self._stopping.is_set() and not self._has_work():
                    self._cv.wait()
            if self._stopping.is_set():
                break
            journal = self.journal
            if journal is None:
                op = self._memory[0]
                conn, ok = self._apply(op, conn)
                if not ok:
                    break
                self._memory.popleft()
                self._finish(1)
                continue
            finished, stopped = 0, False
            entries = journal.read(self._offset)
            last = entries[-1][0] if entries else 0
            for end, record, text in entries:
                op = None
                try:
                    op = Operation.from_json(record)
                except ValueError as exc:
                    log.error("transcripts: a line of journal %s is not an operation and is "
                              "skipped (%s): %s", journal.path, exc, text or record)
                    self.skipped += 1
                if op is not None:
                    conn, ok = self._apply(op, conn)
                    if not ok:
                        stopped = True
                        break
                self._offset = end
                now = time.monotonic()
                hint = end != last and now - hinted >= HINT_EVERY_S   # a long replay
                if hint:
                    hinted = now
                journal.written(end, 1, hint)
                finished += 1
            if not stopped and journal.compact(self._offset):
                self._offset = 0
            self._finish(finished)           # after the compaction: flush() sees it done
            if stopped:
                break
        if conn is not None:
            conn.close()

    def _finish(self, n: int) -> None:
        with self._cv:
            self._done += n
            self._cv.notify_all()

    def _apply(self, op: Operation, conn: Connection | None
               ) -> tuple[Connection | None, bool]:
        """Run ``op`` until it is written (retrying through an outage) or found bad; False:
        the writer stops before the database is back (the op stays in the journal)."""
        attempt = 0
        while True:
            try:
                if conn is None:
                    conn = self.db.connect()
                with conn.transaction():
                    op.apply(conn)
                self.written += 1
                if self.failing:
                    self.failing = False
                    with self._cv:
                        self._loss_said = False
                    log.warning("transcripts: %s is reachable again; writing resumed "
                                "(%d operation(s) to catch up, %d lost in all)", self.db.label,
                                self.backlog(), self.lost)
                return conn, True
            except Exception as exc:
                if not is_outage(exc):
                    log.error("transcripts: a row could not be written to %s and was "
                              "skipped: %s", self.db.label, exc)
                    self.skipped += 1
                    return conn, True
                if conn is not None:
                    conn.close()
                    conn = None
                if not self.failing:
                    self.failing = True
                    where = (f"in journal {self.journal.path}" if self.journal is not None
                             else "in memory (no journal could be kept)")
                    log.error("transcripts: cannot write to %s (%s). Calls go on; turns wait "
                              "%s and are written when it is back.", self.db.label,
                              _first_line(exc), where)
                if self._stopping.is_set():
                    return None, False
                self._stopping.wait(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1
