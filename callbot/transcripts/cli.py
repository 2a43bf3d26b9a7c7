"""`callbot transcripts list|show|export|callbacks|purge|status`: the store from a terminal.

Registered through the "callbot.commands" entry point, like every layer's commands.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from typing import Any

from ..errors import CallbotError
from .records import OUTCOMES


def parse_since(text: str) -> float:
    """"2026-11-01", "2026-11-01T08:00" or "7d" (seven days ago) → a timestamp."""
    m = re.fullmatch(r"(\d+)d", text.strip())
    if m:
        return time.time() - int(m.group(1)) * 86400
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date (YYYY-MM-DD) nor a number of days (7d)") from None


def _store(args):
    from ..config import load_config
    from .store import open_store

    return open_store(load_config(getattr(args, "config", None)))


def _filter(args):
    from .store import CallFilter

    return CallFilter(since=args.since, outcome=getattr(args, "outcome", None),
                      intent=getattr(args, "intent", None))


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def cmd_list(args) -> int:
    store = _store(args)
    calls, total = store.list_calls(_filter(args), limit=args.limit)
    print(f"{'started':19}  {'call':24}  {'dur':>6}  {'outcome':13}  {'turns':>5}  intents")
    for c in calls:
        dur = f"{c['duration_ms'] / 1000:.0f}s" if c["duration_ms"] is not None else "-"
        print(f"{_when(c['started_at'])}  {c['id'][:24]:24}  {dur:>6}  "
              f"{(c['outcome'] or 'open'):13}  {c['caller_turns']:>5}  "
              f"{', '.join(c['intents']) or '-'}")
    more = f" (showing {len(calls)}; --limit for more)" if total > len(calls) else ""
    print(f"{total} call(s){more}")
    return 0


def _turn_line(t: dict[str, Any]) -> str:
    offset = f"+{t['offset_ms'] / 1000:6.1f}s" if t["offset_ms"] is not None else " " * 8
    if t["speaker"] == "bot":
        extra = f"  [{t['answer_id']}]" if t["answer_id"] else ""
        if t["barge_in_ms"] is not None:
            extra += f"  (cut by the caller after {t['barge_in_ms']} ms)"
        ends = [e for e in t["events"] if e.get("type") in ("transfer", "hangup")]
        for e in ends:
            extra += f"  -> {e['type']} ({e.get('reason')})"
        return f"{offset} bot:    {t['text'] or ''}{extra}"
    if t["kind"] == "dtmf":
        return f"{offset} caller: [key {t['dtmf']}]"
    if t["kind"] == "silence":
        return f"{offset} caller: [silence]"
    bits = []
    if t["intent"]:
        conf = f" {t['confidence']:.2f}" if t["confidence"] is not None else ""
        bits.append(f"{t['intent']}{conf} {t['decision'] or ''}".strip())
    if t["asr_engine"]:
        conf = f" {t['asr_confidence']:.2f}" if t["asr_confidence"] is not None else ""
        bits.append(f"asr {t['asr_engine']}{conf}")
    if t["latency_ms"] is not None:
        bits.append(f"answered in {t['latency_ms']:.0f} ms")
    return f"{offset} caller: {t['text']}" + (f"  ({'; '.join(bits)})" if bits else "")


def cmd_show(args) -> int:
    store = _store(args)
    call = store.find_call(args.call_id)
    if call is None:
        raise CallbotError(f"no call {args.call_id!r} in the transcripts "
                           f"(`callbot transcripts list` shows the ids)")
    print(f"call {call['id']}  (SIP {call['sip_call_id'] or '-'}, worker {call['worker']})")
    print(f"from {call['caller_number'] or 'unknown'}  started {_when(call['started_at'])}  "
          f"ended {_when(call['ended_at'])}  "
          f"duration {(call['duration_ms'] or 0) / 1000:.1f} s")
    outcome = call["outcome"] or "open (going on, or its process stopped)"
    if call["outcome"] == "transferred":
        outcome += (f" ({call['transfer_reason']}) to {call['transfer_target'] or '?'}: "
                    f"{call['transfer_result'] or 'result unknown'}")
    elif call["detail"]:
        outcome += f" ({call['detail']})"
    print(f"outcome: {outcome}")
    if call["summary"]:
        print(f"summary: {call['summary']}")
    if call["recording"]:
        print(f"recording: {store.recordings / call['recording']}")
    for t in store.turns(call["id"]):
        print(_turn_line(t))
    return 0


def cmd_export(args) -> int:
    from .export import write_csv, write_jsonl

    from ..private import open_private

    store = _store(args)
    calls = store.iter_calls(_filter(args))
    try:
        out = open_private(args.out, "w", encoding="utf-8", newline="") if args.out \
            else sys.stdout
    except OSError as exc:
        raise CallbotError(f"cannot write the export to {args.out}: {exc.strerror} (give "
                           f"--out a file in an existing, writable folder)") from None
    try:
        write = write_jsonl if args.format == "jsonl" else write_csv
        n = write(calls, out, redact=args.redact)
    finally:
        if args.out:
            out.close()
    print(f"{n} call(s) exported{' (redacted)' if args.redact else ' WITH personal data'}"
          f"{' to ' + args.out if args.out else ''}", file=sys.stderr)
    return 0


def cmd_callbacks(args) -> int:
    """The callback requests, oldest first: a table, or JSON lines with every column."""
    import json

    from .export import iso

    store = _store(args)
    rows = store.list_callbacks("open" if args.open else None, limit=args.limit)
    if args.json:
        for r in rows:
            print(json.dumps({**r, "at": iso(r["at"]), "done_at": iso(r["done_at"])},
                             ensure_ascii=False))
        return 0
    print(f"{'requested':19}  {'number':10}  {'status':6}  {'reason':22}  {'intent':24}  "
          f"{'siren':9}  call")
    for r in rows:
        print(f"{_when(r['at'])}  {r['number']:10}  {r['status']:6}  {r['reason'][:22]:22}  "
              f"{(r['intent'] or '-')[:24]:24}  {r['siren'] or '-':9}  {r['call_id']}")
    counts = store.callback_counts()
    print(f"{len(rows)} shown; {counts['open']} open, {counts['done']} done in all")
    return 0


def cmd_purge(args) -> int:
    from ..config import load_config
    from .retention import purge

    config = load_config(getattr(args, "config", None))
    r = purge(config)
    print(f"kept {config.transcripts.retention_days} days (since {_when(r.before)}): deleted "
          f"{r.calls} call(s), {r.turns} turn(s), {r.recordings} recording(s); "
          f"{r.closed} call(s) left open by a crash closed as errors")
    return 0


def _ago(ts: float | None) -> str:
    if ts is None:
        return "-"
    s = max(0, int(time.time() - ts))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def cmd_status(args) -> int:
    """What waits in the journals for the database: read from the files, so it works while
    the database is down (when it matters)."""
    from ..config import load_config
    from .journal import journal_folder, journal_states

    config = load_config(getattr(args, "config", None))
    states = journal_states(config, check_owner=True)
    folder = journal_folder(config)
    if not states:
        print(f"no operation waits for the database (journals in {folder})")
        return 0
    print(f"{'waiting':>8}  {'oldest':>7}  {'lost':>6}  {'process':8}  journal")
    for s in states:
        owner = "running" if s.in_use else "stopped"
        print(f"{s.operations:>8}  {_ago(s.oldest_at):>7}  {s.lost:>6}  {owner:8}  {s.path}")
    waiting = sum(s.operations for s in states)
    lost = sum(s.lost for s in states)
    oldest = min((s.oldest_at for s in states if s.oldest_at is not None), default=None)
    print(f"{waiting} operation(s) wait for the database (oldest {_ago(oldest)} ago); "
          f"{lost} lost")
    if any(s.operations and not s.in_use for s in states):
        print("a stopped worker's journal is written by the next start of that worker")
    return 0


def register(sub) -> None:
    """Add `transcripts` to the `callbot` command line."""
    tr = sub.add_parser("transcripts", help="recorded calls: list, show, export, callbacks, "
                                            "purge, status")
    tsub = tr.add_subparsers(dest="transcripts_command", metavar="ACTION")

    def filters(p: argparse.ArgumentParser, outcome: bool = True) -> None:
        p.add_argument("--since", type=parse_since, metavar="D",
                       help="calls started from this date (YYYY-MM-DD) or so many days "
                            "ago (7d)")
        if outcome:
            p.add_argument("--outcome", choices=OUTCOMES + ("open",))
            p.add_argument("--intent", metavar="I", help="a caller utterance had intent I")

    ls = tsub.add_parser("list", help="calls, newest first")
    filters(ls)
    ls.add_argument("--limit", type=int, default=100, help="at most so many (default 100)")
    ls.set_defaults(func=cmd_list)

    show = tsub.add_parser("show", help="one call, turn by turn")
    show.add_argument("call_id", metavar="CALL_ID", help="call id or SIP call id")
    show.set_defaults(func=cmd_show)

    ex = tsub.add_parser("export", help="calls with their turns as JSON lines or CSV")
    ex.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    ex.add_argument("--no-redact", dest="redact", action="store_false",
                    help="keep callers' personal data (names, numbers, e-mail and postal "
                         "addresses), removed by default")
    ex.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    filters(ex)
    ex.set_defaults(func=cmd_export)

    cb = tsub.add_parser("callbacks", help="callback requests left after failed transfers, "
                                           "oldest first")
    cb.add_argument("--open", action="store_true", help="only those not yet called back")
    cb.add_argument("--json", action="store_true", help="JSON lines, every column")
    cb.add_argument("--limit", type=int, default=500, help="at most so many (default 500)")
    cb.set_defaults(func=cmd_callbacks)

    pu = tsub.add_parser("purge", help="delete transcripts and recordings older than "
                                       "[transcripts] retention_days")
    pu.set_defaults(func=cmd_purge)

    st = tsub.add_parser("status", help="operations waiting in the journals for the database "
                                        "(count, oldest age) and any lost")
    st.set_defaults(func=cmd_status)
