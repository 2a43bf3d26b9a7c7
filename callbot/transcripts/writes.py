"""The SQL of a call's writes, as plain-data operations the writer applies one transaction each.

An operation is a name and JSON-able arguments (:class:`Operation`), not code: it waits in
the local journal while the database is down and may be replayed by another process after a
restart, so it must survive being written to disk and read back.

Every operation is idempotent (inserts ignore rows already there, the counters move only
with the turn rows they count, the closing row is an upsert), so an operation replayed after
a crash mid-replay never duplicates anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import Connection
from .records import ERROR
from .wavfile import repair

log = logging.getLogger("callbot.transcripts")

CALL_COLUMNS = ("id", "sip_call_id", "started_at", "day", "ended_at", "caller_number",
                "worker", "outcome", "detail", "transfer_reason", "transfer_target",
                "transfer_result", "summary", "duration_ms", "caller_turns", "answers",
                "recording")
TURN_COLUMNS = ("call_id", "seq", "at", "offset_ms", "speaker", "kind", "text", "asr_engine",
                "asr_confidence", "intent", "confidence", "decision", "alternatives",
                "answer_id", "events", "latency_ms", "decode_ms", "barge_in_ms", "dtmf",
                "state", "endpoint_ms")
UPDATABLE_TURN = {"barge_in_ms", "endpoint_ms", "decode_ms", "latency_ms"}
UPDATABLE_CALL = {"transfer_target", "transfer_result", "transfer_reason", "summary",
                  "recording"}


def _insert(table: str, columns: tuple[str, ...], row: Mapping[str, Any]) -> tuple[str, list]:
    cols = [c for c in columns if c in row]
    sql = (f"INSERT INTO {table} ({', '.join(cols)}) VALUES "
           f"({', '.join('?' for _ in cols)})")
    return sql, [row[c] for c in cols]


def insert_call(row: Mapping[str, Any], conn: Connection) -> None:
    """The call row, written when the call starts (outcome NULL: going on)."""
    sql, params = _insert("calls", CALL_COLUMNS, row)
    conn.execute(sql + " ON CONFLICT (id) DO NOTHING", params)


def insert_turns(rows: list[Mapping[str, Any]], call_id: str, caller_turns: int, answers: int,
                 conn: Connection) -> None:
    """One exchange (caller row and/or bot row) and the call's counters, together.

    The counters move only when the rows are new: a replayed exchange counts once.
    """
    inserted = 0
    for row in rows:
        sql, params = _insert("turns", TURN_COLUMNS, row)
        cur = conn.execute(sql + " ON CONFLICT (call_id, seq) DO NOTHING", params)
        inserted += max(cur.rowcount, 0)
    if inserted and (caller_turns or answers):
        conn.execute("UPDATE calls SET caller_turns = caller_turns + ?, "
                     "answers = answers + ? WHERE id = ?", (caller_turns, answers, call_id))


def update_turn(call_id: str, seq: int, fields: Mapping[str, Any], conn: Connection) -> None:
    """Facts known after the turn was written: a barge-in."""
    bad = set(fields) - UPDATABLE_TURN
    if bad:
        raise ValueError(f"turn fields not updatable: {sorted(bad)}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(f"UPDATE turns SET {sets} WHERE call_id = ? AND seq = ?",
                 [*fields.values(), call_id, seq])


def update_call(call_id: str, fields: Mapping[str, Any], conn: Connection) -> None:
    """Facts known during the call: the transfer's reason, target and result."""
    bad = set(fields) - UPDATABLE_CALL
    if bad:
        raise ValueError(f"call fields not updatable: {sorted(bad)}")
    sets = ", ".join(f"{k} = ?" for k in fields)
    conn.execute(f"UPDATE calls SET {sets} WHERE id = ?", [*fields.values(), call_id])


def close_call(row: Mapping[str, Any], conn: Connection) -> None:
    """The call's end (outcome, duration); creates the row if its start was never written."""
    sql, params = _insert("calls", CALL_COLUMNS, row)
    conn.execute(sql + " ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, "
                 "outcome = excluded.outcome, detail = excluded.detail, "
                 "duration_ms = excluded.duration_ms, "
                 "transfer_reason = COALESCE(excluded.transfer_reason, calls.transfer_reason), "
                 "summary = COALESCE(excluded.summary, calls.summary)", params)


def close_left_open(worker: str | None, before: float, recordings: str,
                    conn: Connection) -> int:
    """Close as errors the calls still open that started before ``before`` (of ``worker``,
    or of any worker when None): their process stopped during the call. Their recordings
    are repaired so they play up to the crash. Returns how many were closed."""
    cond, params = "c.started_at < ?", [before]
    if worker is not None:
        cond, params = "c.worker = ? AND c.started_at < ?", [worker, before]
    rows = conn.rows(f"SELECT c.id, c.recording FROM calls c WHERE c.outcome IS NULL "
                     f"AND {cond}", params)
    last = "COALESCE((SELECT MAX(t.at) FROM turns t WHERE t.call_id = calls.id), started_at)"
    for row in rows:
        conn.execute(f"UPDATE calls SET outcome = ?, detail = ?, ended_at = {last}, "
                     f"duration_ms = CAST(1000 * ({last} - started_at) AS INTEGER) "
                     f"WHERE id = ? AND outcome IS NULL",
                     (ERROR, "left open: the process stopped during the call", row["id"]))
        if row["recording"]:
            repair(Path(recordings) / row["recording"])
    if rows:
        log.warning("transcripts: %d call(s) left open by a stopped process closed as "
                    "errors", len(rows))
    return len(rows)


# The operations a journal may hold, by name: a journal line naming anything else is refused.
OPS: dict[str, Callable[..., Any]] = {f.__name__: f for f in (
    insert_call, insert_turns, update_turn, update_call, close_call, close_left_open)}


@dataclass(frozen=True)
class Operation:
    """One write of a call as data: the name of a function of this module and its
    arguments (JSON types only), applied with :meth:`apply` on a connection."""

    op: str
    args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, fn: Callable[..., Any], **args: Any) -> Operation:
        """``Operation.of(insert_call, row=...)``: named from the function, checked here."""
        if OPS.get(fn.__name__) is not fn:
            raise ValueError(f"{fn.__name__} is not a transcript write of {__name__}")
        return cls(fn.__name__, args)

    def apply(self, conn: Connection) -> None:
        OPS[self.op](**self.args, conn=conn)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "args": self.args}

    @classmethod
    def from_json(cls, data: Any) -> Operation:
        """Back from a journal line; ValueError when it is not an operation of this version."""
        if not isinstance(data, dict) or not isinstance(data.get("args"), dict):
            raise ValueError("not an operation (expected {\"op\": name, \"args\": {...}})")
        if data.get("op") not in OPS:
            raise ValueError(f"unknown operation {data.get('op')!r}")
        return cls(data["op"], data["args"])
