"""The SQL of a call's writes, run by the writer thread one transaction each.

Every operation is idempotent (inserts ignore rows already there, the closing row is an
upsert), so an operation retried after a database outage never duplicates anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .db import Connection
from .store import (CALL_COLUMNS, CALLBACK_COLUMNS, TURN_COLUMNS, UPDATABLE_CALL,
                    UPDATABLE_TURN)


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
    """One exchange (caller row and/or bot row) and the call's counters, together."""
    for row in rows:
        sql, params = _insert("turns", TURN_COLUMNS, row)
        conn.execute(sql + " ON CONFLICT (call_id, seq) DO NOTHING", params)
    if caller_turns or answers:
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


def insert_callback(row: Mapping[str, Any], conn: Connection) -> None:
    """A callback request (status open); its id makes a retried write a no-op."""
    sql, params = _insert("callbacks", CALLBACK_COLUMNS, row)
    conn.execute(sql + " ON CONFLICT (id) DO NOTHING", params)
