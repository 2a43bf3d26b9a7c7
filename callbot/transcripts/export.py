"""Transcripts out of the store, for analysts and archives: JSON lines or CSV.

JSON lines keep a call and its turns together (one call per line); CSV has one row per
turn with the call's columns repeated, for spreadsheets. Exports are redacted unless asked
otherwise (names, numbers, e-mail and postal addresses out, see :mod:`.redact`): an export
leaves the store's protection, is copied and mailed, and most uses (statistics, reviews of
the dialogue) need no caller's identity. Only an editor of the console, or someone who can
read the store itself from the command line, gets them unredacted.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TextIO

from .redact import redact_call

UNREDACTED_ROLES = ("editor",)     # console roles that may export personal data

CSV_COLUMNS = ("call_id", "sip_call_id", "call_started", "caller_number", "worker", "outcome",
               "transfer_reason", "transfer_target", "transfer_result", "duration_ms", "seq",
               "at", "speaker", "kind", "text", "asr_engine", "asr_confidence", "intent",
               "confidence", "decision", "answer_id", "latency_ms", "barge_in_ms", "dtmf")


def iso(ts: float | None) -> str | None:
    """A timestamp as local ISO 8601 with its UTC offset."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="milliseconds")


def _prepared(calls: Iterable[dict[str, Any]], redact: bool) -> Iterable[dict[str, Any]]:
    for call in calls:
        yield redact_call(call) if redact else call


def write_jsonl(calls: Iterable[dict[str, Any]], out: TextIO, redact: bool = True) -> int:
    n = 0
    for call in _prepared(calls, redact):
        row = dict(call)
        row["started_at"], row["ended_at"] = iso(call["started_at"]), iso(call["ended_at"])
        row["turns"] = [{**t, "at": iso(t["at"])} for t in call.get("turns", [])]
        for t in row["turns"]:
            t.pop("call_id", None)
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        n += 1
    return n


def write_csv(calls: Iterable[dict[str, Any]], out: TextIO, redact: bool = True) -> int:
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    n = 0
    for call in _prepared(calls, redact):
        base = {k: call.get(k) for k in CSV_COLUMNS if k in call}
        base["call_id"], base["call_started"] = call["id"], iso(call["started_at"])
        turns = call.get("turns") or [{}]
        for t in turns:
            row = dict(base)
            row.update({k: t[k] for k in CSV_COLUMNS if k in t and k != "call_id"})
            if t:
                row["at"] = iso(t["at"])
            writer.writerow(row)
        n += 1
    return n


def may_export_unredacted(role: str | None) -> bool:
    """Whether a console user of ``role`` may export transcripts with personal data."""
    return role in UNREDACTED_ROLES
