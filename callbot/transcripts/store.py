"""The transcript store: the queries behind the recorder, the command line and the console.

Writes from calls are journaled on disk and applied by the
:class:`~callbot.transcripts.writer.Writer` (the database is never written on the call's
thread); reads and supervisor actions (reviews, purge) run directly on a connection
of the calling thread. All SQL here is portable between SQLite and PostgreSQL.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from ..config import Config
from . import writes
from .db import Connection, Database, StoreError
from .journal import journal_folder
from .records import REVIEW_ACTIONS
from .writer import Writer, is_outage
from .writes import Operation

log = logging.getLogger("callbot.transcripts")
T = TypeVar("T")

# A call still open after this long was lost by a crash: no call lasts two hours
# (the SIP side hangs up after [sip] max_call_s, 15 minutes by default).
STALE_OPEN_S = 2 * 3600

@dataclass(frozen=True)
class CallFilter:
    """What the calls list, the command line and the exports select."""

    since: float | None = None
    until: float | None = None
    outcome: str | None = None          # an outcome, or "open" for calls going on
    intent: str | None = None           # a caller utterance had this intent...
    # ...with at least this confidence; without an intent: an utterance understood (not
    # rejected) with at least this confidence
    min_confidence: float | None = None


def _where(f: CallFilter) -> tuple[str, list[Any]]:
    conds, params = [], []
    if f.since is not None:
        conds.append("c.started_at >= ?")
        params.append(f.since)
    if f.until is not None:
        conds.append("c.started_at < ?")
        params.append(f.until)
    if f.outcome == "open":
        conds.append("c.outcome IS NULL")
    elif f.outcome:
        conds.append("c.outcome = ?")
        params.append(f.outcome)
    if f.intent or f.min_confidence is not None:
        sub = ["t.call_id = c.id", "t.speaker = 'caller'", "t.intent IS NOT NULL"]
        if f.intent:
            sub.append("t.intent = ?")
            params.append(f.intent)
        if f.min_confidence is not None:
            sub.append("t.confidence >= ?")
            params.append(f.min_confidence)
            if not f.intent:
                sub.append("t.decision <> 'reject'")
        conds.append(f"EXISTS (SELECT 1 FROM turns t WHERE {' AND '.join(sub)})")
    return (" WHERE " + " AND ".join(conds)) if conds else "", params


class TranscriptStore:
    """One transcript database, shared by every call of a process."""

    def __init__(self, db: Database, config: Config):
        self.db = db
        self.config = config
        self.writer = Writer(db, journal_folder(config),
                             config.transcripts.journal_max_mb << 20)
        self.opened_at = time.time()
        self.recordings = config.paths.data / "recordings"
        self._local = threading.local()
        self._recovered: set[str] = set()
        self._recover_lock = threading.Lock()

    # --- connections ----------------------------------------------------------------------
    def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` on this thread's connection (reconnecting once if it went stale)."""
        for attempt in (0, 1):
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = self.db.connect()
            try:
                return fn(conn)
            except StoreError:
                raise
            except Exception as exc:
                if not is_outage(exc):
                    raise
                conn.close()
                self._local.conn = None
                if attempt:
                    raise StoreError(f"transcripts database {self.db.label}: "
                                     f"{str(exc).strip().splitlines()[0]}") from None
        raise AssertionError("unreachable")

    def write(self, fn: Callable[[Connection], T]) -> T:
        """A supervisor's change (review, purge), committed before returning."""
        def run(conn: Connection) -> T:
            with conn.transaction():
                return fn(conn)
        return self.read(run)

    def submit(self, op: Operation) -> None:
        """A call's write: journaled for the writer thread, never waiting for the database."""
        self.writer.submit(op)

    def flush(self, timeout: float = 10.0) -> bool:
        return self.writer.flush(timeout)

    def close(self) -> None:
        self.writer.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- recovery -------------------------------------------------------------------------
    def recover_worker(self, worker: str) -> None:
        """Once per worker and process: write what a previous run of it left in its journal
        (the first worker named is the process's journal), then close the calls it left
        open."""
        with self._recover_lock:
            if worker in self._recovered:
                return
            self._recovered.add(worker)
        self.writer.bind(worker)
        self.submit(Operation.of(writes.close_left_open, worker=worker, before=self.opened_at,
                                 recordings=str(self.recordings)))

    def close_stale(self, older_than_s: float = STALE_OPEN_S) -> int:
        """Close as errors the calls open for longer than any call lasts (purge does this)."""
        before = time.time() - older_than_s
        return self.write(partial(writes.close_left_open, None, before, str(self.recordings)))

    # --- reads ----------------------------------------------------------------------------
    def list_calls(self, f: CallFilter = CallFilter(), limit: int = 50, offset: int = 0
                   ) -> tuple[list[dict[str, Any]], int]:
        """A page of calls, newest first, each with its intents; and the total matching."""
        where, params = _where(f)

        def q(conn: Connection) -> tuple[list[dict[str, Any]], int]:
            total = conn.scalar(f"SELECT COUNT(*) FROM calls c{where}", params)
            calls = conn.rows(f"SELECT c.* FROM calls c{where} ORDER BY c.started_at DESC, "
                              f"c.id LIMIT ? OFFSET ?", params + [limit, offset])
            _add_intents(conn, calls)
            return calls, int(total or 0)
        return self.read(q)

    def iter_calls(self, f: CallFilter = CallFilter(), batch: int = 500
                   ) -> Iterator[dict[str, Any]]:
        """Every matching call with its turns, oldest first (exports)."""
        where, params = _where(f)
        offset = 0
        while True:
            calls = self.read(lambda conn, at=offset: conn.rows(
                f"SELECT c.* FROM calls c{where} ORDER BY c.started_at, c.id LIMIT ? OFFSET ?",
                params + [batch, at]))
            for call in calls:
                call["turns"] = self.turns(call["id"])
                yield call
            if len(calls) < batch:
                return
            offset += batch

    def get_call(self, call_id: str) -> dict[str, Any] | None:
        return self.read(lambda conn: conn.one("SELECT * FROM calls WHERE id = ?", (call_id,)))

    def turns(self, call_id: str) -> list[dict[str, Any]]:
        rows = self.read(lambda conn: conn.rows(
            "SELECT * FROM turns WHERE call_id = ? ORDER BY seq", (call_id,)))
        for r in rows:
            r["alternatives"] = json.loads(r["alternatives"]) if r["alternatives"] else []
            r["events"] = json.loads(r["events"]) if r["events"] else []
        return rows

    def find_call(self, call_id: str) -> dict[str, Any] | None:
        """A call by its id, or by the SIP call id (what an operator has at hand)."""
        return self.read(lambda conn: conn.one(
            "SELECT * FROM calls WHERE id = ? OR sip_call_id = ? ORDER BY started_at DESC",
            (call_id, call_id)))

    # --- review queue -----------------------------------------------------------------------
    def review_candidates(self, below: float, limit: int = 2000) -> list[dict[str, Any]]:
        """Caller utterances not understood, or understood with less than ``below``, that no
        supervisor has handled yet; newest first."""
        return self.read(lambda conn: conn.rows(
            "SELECT t.call_id, t.seq, t.at, t.text, t.intent, t.confidence, t.decision, "
            "t.alternatives FROM turns t LEFT JOIN reviews r ON r.call_id = t.call_id "
            "AND r.seq = t.seq WHERE r.call_id IS NULL AND t.speaker = 'caller' "
            "AND t.kind = 'speech' AND t.text IS NOT NULL AND t.text <> '' "
            "AND (t.decision = 'reject' OR (t.decision IN ('confident', 'confirm') "
            "AND t.confidence < ?)) ORDER BY t.at DESC LIMIT ?", (below, limit)))

    def utterance(self, call_id: str, seq: int) -> dict[str, Any] | None:
        return self.read(lambda conn: conn.one(
            "SELECT call_id, seq, text, intent, confidence, decision FROM turns "
            "WHERE call_id = ? AND seq = ? AND speaker = 'caller'", (call_id, seq)))

    def add_review(self, call_id: str, seq: int, action: str, intent: str | None,
                   user: str) -> None:
        if action not in REVIEW_ACTIONS:
            raise ValueError(f"unknown review action {action!r}")
        self.write(lambda conn: conn.execute(
            "INSERT INTO reviews (call_id, seq, action, intent, by_user, at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (call_id, seq) DO UPDATE SET "
            "action = excluded.action, intent = excluded.intent, by_user = excluded.by_user, "
            "at = excluded.at", (call_id, seq, action, intent, user, time.time())))

    def reviews(self, limit: int = 50) -> list[dict[str, Any]]:
        return self.read(lambda conn: conn.rows(
            "SELECT r.*, t.text FROM reviews r LEFT JOIN turns t ON t.call_id = r.call_id "
            "AND t.seq = r.seq ORDER BY r.at DESC LIMIT ?", (limit,)))

    # --- retention --------------------------------------------------------------------------
    def purge(self, before: float) -> tuple[int, int, list[str]]:
        """Delete calls started before ``before`` with their turns and reviews.

        Returns (calls, turns, recording paths relative to the recordings folder); the
        caller deletes the files once the rows are gone.
        """
        def q(conn: Connection) -> tuple[int, int, list[str]]:
            old = "SELECT id FROM calls WHERE started_at < ?"
            recs = [r["recording"] for r in conn.rows(
                "SELECT recording FROM calls WHERE started_at < ? AND recording IS NOT NULL",
                (before,))]
            turns = conn.execute(f"DELETE FROM turns WHERE call_id IN ({old})", (before,))
            conn.execute(f"DELETE FROM reviews WHERE call_id IN ({old})", (before,))
            calls = conn.execute("DELETE FROM calls WHERE started_at < ?", (before,))
            return calls.rowcount, turns.rowcount, recs
        return self.write(q)


def _add_intents(conn: Connection, calls: list[dict[str, Any]]) -> None:
    """Each call's distinct caller intents (in order), the lowest confidence of what was
    understood, and how many utterances were not understood."""
    if not calls:
        return
    ids = [c["id"] for c in calls]
    marks = ", ".join("?" for _ in ids)
    rows = conn.rows(f"SELECT call_id, intent, confidence, decision FROM turns WHERE call_id "
                     f"IN ({marks}) AND speaker = 'caller' AND intent IS NOT NULL "
                     f"ORDER BY call_id, seq", ids)
    by_call: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_call.setdefault(r["call_id"], []).append(r)
    for c in calls:
        rs = by_call.get(c["id"], [])
        c["intents"] = list(dict.fromkeys(r["intent"] for r in rs))
        confs = [r["confidence"] for r in rs
                 if r["confidence"] is not None and r["decision"] != "reject"]
        c["min_confidence"] = min(confs) if confs else None
        c["not_understood"] = sum(1 for r in rs if r["decision"] == "reject")


def _register_close(store: TranscriptStore) -> None:
    """Write what is queued when the process exits normally (the writer is a daemon)."""
    ref = weakref.ref(store)

    def close() -> None:
        alive = ref()
        if alive is not None:
            alive.close()
    atexit.register(close)


def open_store(config: Config, strict: bool = True, worker: str | None = None
               ) -> TranscriptStore:
    """The store of ``config`` ([transcripts] url, or SQLite in paths.data).

    ``strict``: a database that cannot be opened raises StoreError (the command line, the
    console). ``strict=False`` (a SIP worker): it logs one error and returns the store anyway;
    calls go on and their turns are written once the database is reachable.
    ``worker``: the process records calls as this worker; what a previous process of it left
    in its journal is written from now on (otherwise from its first call).
    """
    url = config.transcripts.url
    if url:
        db = Database(url)
    else:
        db = Database("", config.paths.data / "transcripts.sqlite3")
    store = TranscriptStore(db, config)
    try:
        store.read(lambda conn: None)
    except StoreError as exc:
        if strict:
            raise
        store.writer.failing = True   # said once here; the writer says when it is back
        log.error("transcripts: %s. Calls go on; turns wait in the journal and are written "
                  "once it is reachable.", exc)
    if worker is not None and config.transcripts.enabled:
        store.recover_worker(worker)
    _register_close(store)
    return store
