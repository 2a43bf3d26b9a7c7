"""The one thread that writes transcripts, so that a call never waits for a database.

Calls put small operations on a bounded queue and go on at once. The writer commits each
operation in its own transaction (a turn is durable as soon as it is written, not at the
end of the call). When the database is down it says so once, keeps the operations in
memory and retries them in order; only when the queue is full are new ones dropped (said
once too). A call is never slowed down nor broken by the store.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable

from .db import Connection, Database, StoreError

log = logging.getLogger("callbot.transcripts")

Op = Callable[[Connection], None]
_STOP = object()
RETRY_S = (0.2, 0.5, 1.0, 2.0, 5.0)   # waits between attempts while the database is down


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


class Writer:
    """Commits queued operations one by one on its own connection."""

    def __init__(self, db: Database, maxsize: int = 20000):
        self.db = db
        self.queue: queue.Queue[object] = queue.Queue(maxsize)
        self.dropped = 0
        self.written = 0
        self.failing = False
        self._full_said = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = threading.Event()

    def submit(self, op: Op) -> None:
        """Queue ``op``; never blocks, never raises."""
        self._ensure_thread()
        try:
            self.queue.put_nowait(op)
        except queue.Full:
            self.dropped += 1
            if not self._full_said:
                self._full_said = True
                log.error("transcripts: %d operations wait for %s; new turns are dropped "
                          "until it catches up", self.queue.maxsize, self.db.label)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written (tests, shutdown); False on timeout."""
        deadline = time.monotonic() + timeout
        with self.queue.all_tasks_done:
            while self.queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.queue.all_tasks_done.wait(left)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout``), then stop the thread."""
        if self._thread is None:
            return
        self.flush(timeout)
        self._stopping.set()
        try:
            self.queue.put_nowait(_STOP)
        except queue.Full:
            pass
        self._thread.join(timeout=1.0)
        self._thread = None

    # --- the thread ---------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._stopping.clear()
                self._thread = threading.Thread(target=self._run, name="transcripts-writer",
                                                daemon=True)
                self._thread.start()

    def _run(self) -> None:
        conn: Connection | None = None
        while True:
            op = self.queue.get()
            try:
                if op is _STOP:
                    break
                conn = self._apply(op, conn)  # type: ignore[arg-type]
            finally:
                self.queue.task_done()
        if conn is not None:
            conn.close()

    def _apply(self, op: Op, conn: Connection | None) -> Connection | None:
        """Run ``op`` until it is written (retrying through an outage) or found bad."""
        attempt = 0
        while True:
            try:
                if conn is None:
                    conn = self.db.connect()
                with conn.transaction():
                    op(conn)
                self.written += 1
                if self.failing:
                    self.failing = False
                    self._full_said = False
                    log.warning("transcripts: %s is reachable again; writing resumed "
                                "(%d turns dropped meanwhile)", self.db.label, self.dropped)
                return conn
            except Exception as exc:
                if not is_outage(exc):
                    log.error("transcripts: a row could not be written to %s and was "
                              "skipped: %s", self.db.label, exc)
                    return conn
                if conn is not None:
                    conn.close()
                    conn = None
                if not self.failing:
                    self.failing = True
                    log.error("transcripts: cannot write to %s (%s). Calls go on; turns wait "
                              "in memory and are written when it is back.", self.db.label,
                              str(exc).strip().splitlines()[0] if str(exc).strip() else
                              type(exc).__name__)
                if self._stopping.is_set():
                    self.dropped += 1
                    return None
                time.sleep(RETRY_S[min(attempt, len(RETRY_S) - 1)])
                attempt += 1
