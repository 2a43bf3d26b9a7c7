"""The figures a supervisor watches, computed from the store over a period.

Containment counts the calls the bot handled without a human: those that ended with the
caller's goodbye, and those where the caller hung up after getting at least one answer (most
callers do not say goodbye to a machine). Not-understood is the share of caller utterances
the classifier rejected.

Latency is what the caller waits: from the end of their speech to the first audio of the
answer, in three parts stored per caller turn — the silence the end of turn waited
(``endpoint_ms``), the recognition after it (``decode_ms``), and the answer until its first
frame is played (``latency_ms``: dialogue, speech synthesis, a holding prompt). A turn is
written with estimates (the silence on the call clock, the decode alone, the answer until
queued); once the answer's first frame has been played, the session's measure of the three
(:class:`~callbot.events.AnswerStarted`, wall-clock) replaces them, so their sum is what the
caller waited. The total is their sum, over the turns that have all three (turns recorded
before ``endpoint_ms`` existed count in the parts only). Each figure is given as p50 / p95
with its turn count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np

from ..kb import OUT_OF_SCOPE, Roles
from .db import Connection
from .records import (
    CALLER_HANGUP,
    OUTCOMES,
    RESOLVED,
    TRANSFERRED,
    local_day,
)
from .store import TranscriptStore


@dataclass(frozen=True)
class Percentiles:
    """p50 / p95 of one latency figure, in ms, over ``n`` turns (None when n = 0)."""

    p50: float | None = None
    p95: float | None = None
    n: int = 0

    @classmethod
    def of(cls, values: list[float]) -> Percentiles:
        if not values:
            return cls()
        a = np.asarray(values, dtype=float)
        return cls(float(np.percentile(a, 50)), float(np.percentile(a, 95)), len(values))


# The caller-perceived wait and its parts, in the dashboard's order.
PARTS = ("total", "end_of_turn", "recognition", "answer")


def _waits(rows: list[dict[str, Any]]) -> dict[str, Percentiles]:
    """Percentiles of each part over the turns that have it, and of the total over the turns
    that have every part."""
    cols = {"end_of_turn": "endpoint_ms", "recognition": "decode_ms", "answer": "latency_ms"}
    out = {part: Percentiles.of([r[c] for r in rows if r[c] is not None])
           for part, c in cols.items()}
    out["total"] = Percentiles.of([sum(r[c] for c in cols.values()) for r in rows
                                   if all(r[c] is not None for c in cols.values())])
    return {part: out[part] for part in PARTS}


@dataclass
class Stats:
    since: float
    until: float
    calls: int = 0
    closed: int = 0
    contained: int = 0
    per_day: list[tuple[str, int, int]] = field(default_factory=list)  # day, calls, contained
    outcomes: dict[str, int] = field(default_factory=dict)
    transfers: list[tuple[str, int]] = field(default_factory=list)      # by reason
    top_intents: list[tuple[str, int]] = field(default_factory=list)
    utterances: int = 0
    not_understood: int = 0
    latency_p50: float | None = None      # the answer part (transcript → first audio queued)
    latency_p95: float | None = None
    latency_n: int = 0
    waits: dict[str, Percentiles] = field(default_factory=dict)   # PARTS → percentiles

    @property
    def containment_rate(self) -> float | None:
        return self.contained / self.closed if self.closed else None

    @property
    def not_understood_rate(self) -> float | None:
        return self.not_understood / self.utterances if self.utterances else None


_CONTAINED = (f"(c.outcome = '{RESOLVED}' OR (c.outcome = '{CALLER_HANGUP}' "
              f"AND c.answers > 0))")


def _every_day(rows: list[tuple[str, int, int]], since: float, until: float
               ) -> list[tuple[str, int, int]]:
    """The period's days in order, those without calls included (a true time axis)."""
    found = {day: (n, k) for day, n, k in rows}
    first = date.fromisoformat(local_day(since))
    last = date.fromisoformat(local_day(until - 1))
    out = []
    d = first
    while d <= last:
        n, k = found.pop(d.isoformat(), (0, 0))
        out.append((d.isoformat(), n, k))
        d += timedelta(days=1)
    return sorted(out + [(day, n, k) for day, (n, k) in found.items()])


def _collect(conn: Connection, since: float, until: float, top: int,
             conversation: frozenset[str]) -> Stats:
    s = Stats(since=since, until=until)
    rng = "c.started_at >= ? AND c.started_at < ?"
    p = (since, until)
    for r in conn.rows(f"SELECT c.day AS day, COUNT(*) AS n, "
                       f"SUM(CASE WHEN {_CONTAINED} THEN 1 ELSE 0 END) AS contained "
                       f"FROM calls c WHERE {rng} GROUP BY c.day ORDER BY c.day", p):
        s.per_day.append((r["day"], int(r["n"]), int(r["contained"] or 0)))
    s.per_day = _every_day(s.per_day, since, until)
    s.calls = sum(n for _, n, _ in s.per_day)
    s.contained = sum(k for _, _, k in s.per_day)
    for r in conn.rows(f"SELECT c.outcome AS outcome, COUNT(*) AS n FROM calls c "
                       f"WHERE {rng} AND c.outcome IS NOT NULL GROUP BY c.outcome", p):
        s.outcomes[r["outcome"]] = int(r["n"])
    s.outcomes = {o: s.outcomes.get(o, 0) for o in OUTCOMES}
    s.closed = sum(s.outcomes.values())
    s.transfers = [(r["reason"] or "unknown", int(r["n"])) for r in conn.rows(
        f"SELECT c.transfer_reason AS reason, COUNT(*) AS n FROM calls c WHERE {rng} "
        f"AND c.outcome = '{TRANSFERRED}' GROUP BY c.transfer_reason ORDER BY n DESC", p)]
    # Intents that steer the conversation rather than ask a question are not "top intents".
    controls = ", ".join(f"'{i}'" for i in sorted(set(conversation) | {OUT_OF_SCOPE}))
    s.top_intents = [(r["intent"], int(r["n"])) for r in conn.rows(
        f"SELECT t.intent AS intent, COUNT(*) AS n FROM turns t JOIN calls c "
        f"ON c.id = t.call_id WHERE {rng} AND t.speaker = 'caller' "
        f"AND t.decision IN ('confident', 'confirm') AND t.intent NOT IN ({controls}) "
        f"GROUP BY t.intent ORDER BY n DESC, t.intent LIMIT ?", (*p, top))]
    row = conn.one(
        f"SELECT COUNT(*) AS n, SUM(CASE WHEN t.decision = 'reject' THEN 1 ELSE 0 END) AS rej "
        f"FROM turns t JOIN calls c ON c.id = t.call_id WHERE {rng} "
        f"AND t.speaker = 'caller' AND t.decision IN ('confident', 'confirm', 'reject')", p)
    s.utterances = int(row["n"] or 0) if row else 0
    s.not_understood = int(row["rej"] or 0) if row else 0
    # Answered caller turns only: the wait is until the answer's first audio.
    s.waits = _waits(conn.rows(
        f"SELECT t.endpoint_ms AS endpoint_ms, t.decode_ms AS decode_ms, "
        f"t.latency_ms AS latency_ms FROM turns t JOIN calls c ON c.id = t.call_id "
        f"WHERE {rng} AND t.latency_ms IS NOT NULL", p))
    answer = s.waits["answer"]
    s.latency_p50, s.latency_p95, s.latency_n = answer.p50, answer.p95, answer.n
    return s


def compute(store: TranscriptStore, since: float, until: float, roles: Roles | None,
            top: int = 10) -> Stats:
    """The dashboard's figures for calls started in [since, until); ``roles``: the KB's
    conversation intents (yes, thanks, ...), left out of the top intents (an advisor request
    stays in: callers asking for a person is worth seeing). None (a KB being edited that
    does not load): every intent is shown."""
    conversation = roles.conversation - {roles.advisor} if roles else frozenset()
    return store.read(lambda conn: _collect(conn, since, until, top, conversation))


def as_dict(s: Stats) -> dict[str, Any]:
    """JSON-friendly form (the console's /api/stats)."""
    return {"since": s.since, "until": s.until, "calls": s.calls, "closed": s.closed,
            "contained": s.contained, "containment_rate": s.containment_rate,
            "per_day": s.per_day, "outcomes": s.outcomes, "transfers": s.transfers,
            "top_intents": s.top_intents, "utterances": s.utterances,
            "not_understood": s.not_understood, "not_understood_rate": s.not_understood_rate,
            "latency_p50_ms": s.latency_p50, "latency_p95_ms": s.latency_p95,
            "latency_n": s.latency_n,
            "waits_ms": {part: {"p50": w.p50, "p95": w.p95, "n": w.n}
                         for part, w in s.waits.items()}}
