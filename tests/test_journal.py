"""The transcript journal: writes that cannot reach the database wait on disk, in order,
through restarts and SIGKILL, and are written exactly once when it is back.

The outages are real: a SQLite database whose folder cannot be created (its name is taken by
a file) until the file goes, and a real PostgreSQL server stopped in the middle of a call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from transcript_calls import run_call

from callbot.transcripts import ERROR, RESOLVED, journal_backlog, open_store
from callbot.transcripts import writer as writer_module
from callbot.transcripts import writes
from callbot.transcripts.journal import base_name, journal_folder, journal_states
from callbot.transcripts.writes import Operation

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = [sys.executable, "-m", "callbot"]
OUTAGE_S = 120.0      # how long PostgreSQL stays down in the outage test
ASK, BYE = "comment je trouve mon code ape", "au revoir"


class BlockedSqlite:
    """A real SQLite database that cannot be opened while a file holds its folder's name."""

    def __init__(self, tmp_path: Path):
        self.folder = tmp_path / "db"
        self.folder.write_text("not a folder")
        self.url = f"sqlite:///{self.folder / 'transcripts.sqlite3'}"

    def unblock(self) -> None:
        self.folder.unlink()


@pytest.fixture
def down(tmp_path) -> BlockedSqlite:
    return BlockedSqlite(tmp_path)


def _cfg(config, tmp_path: Path, url: str, **transcripts):
    return dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path / "data"),
        transcripts=dataclasses.replace(config.transcripts, url=url, **transcripts))


def _journal_files(cfg) -> list[Path]:
    return sorted(journal_folder(cfg).glob("*.jsonl"))


def _ops(path: Path) -> list[str]:
    return [json.loads(line)["op"] for line in path.read_text().splitlines()]


def _rows(store, call_id: str) -> tuple[dict, list[dict]]:
    return store.get_call(call_id), store.turns(call_id)


def _resolved_call_is_whole(store, call_id: str) -> None:
    call, turns = _rows(store, call_id)
    assert call["outcome"] == RESOLVED
    assert [(t["seq"], t["speaker"]) for t in turns] == [
        (1, "bot"), (2, "caller"), (3, "bot"), (4, "caller"), (5, "bot")]
    assert [t["text"] for t in turns if t["speaker"] == "caller"] == [ASK, BYE]
    assert call["caller_turns"] == 2 and call["answers"] == 1


# --- SQLite -----------------------------------------------------------------------------------

def test_an_outage_keeps_every_operation_on_disk_and_writes_them_in_order_when_back(
        config, tmp_path, down, text_engines, caplog):
    cfg = _cfg(config, tmp_path, down.url)
    caplog.set_level(logging.WARNING, logger="callbot.transcripts")
    store = open_store(cfg, strict=False)
    run_call(text_engines, store, "out-resolved", [("say", ASK), ("say", BYE)], worker="w-out")
    run_call(text_engines, store, "out-zero", [("barge", "0")], worker="w-out")
    [path] = _journal_files(cfg)
    assert path.name == base_name("w-out") + ".jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    ops = _ops(path)
    # submission order: the worker's recovery, then each call's start, turns, end; the barge-in
    # (an update of the greeting row) after the greeting's insert
    assert ops[:3] == ["close_left_open", "insert_call", "insert_turns"]
    assert ops.count("insert_call") == 2 and ops.count("close_call") == 2
    zero = ops.index("insert_call", 2)
    assert ops.index("update_turn") > ops.index("insert_turns", zero)
    assert store.writer.backlog() == journal_backlog(cfg) == len(ops)
    assert store.writer.lost == 0

    down.unblock()
    assert store.flush(timeout=60)
    _resolved_call_is_whole(store, "out-resolved")
    zero_turns = store.turns("out-zero")
    assert zero_turns[0]["barge_in_ms"] > 0 and zero_turns[1]["dtmf"] == "0"
    assert store.get_call("out-zero")["transfer_reason"] == "caller_request"
    assert path.stat().st_size == 0 and journal_backlog(cfg) == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "Calls go on" in errors[0]
    assert any("reachable again" in r.getMessage() for r in caplog.records)
    store.close()


def test_a_restart_during_the_outage_replays_what_the_last_run_left(config, tmp_path, down,
                                                                    text_engines):
    cfg = _cfg(config, tmp_path, down.url)
    first = open_store(cfg, strict=False, worker="w-restart")
    run_call(text_engines, first, "before-restart", [("say", ASK), ("say", BYE)],
             worker="w-restart")
    run_call(text_engines, first, "cut-by-restart", [("say", ASK)], worker="w-restart",
             close=False)
    left = journal_backlog(cfg)
    first.close()                     # during the outage: returns at once, nothing lost
    assert journal_backlog(cfg) == left > 0

    down.unblock()
    second = open_store(cfg, worker="w-restart")
    assert second.flush(timeout=60)
    _resolved_call_is_whole(second, "before-restart")
    # its process stopped mid-call: written up to there, then closed as an error (after the
    # replay, or the call would have been inserted open again)
    call, turns = _rows(second, "cut-by-restart")
    assert call["outcome"] == ERROR and "left open" in call["detail"]
    assert [t["text"] for t in turns if t["kind"] == "speech"] == [ASK]
    assert call["caller_turns"] == 1
    assert journal_backlog(cfg) == 0
    second.close()


def test_replaying_a_journal_twice_writes_every_turn_once(config, tmp_path, down,
                                                          text_engines):
    """A crash after the database took a journal but before the file was emptied: the next
    start replays it all again, and nothing doubles (rows nor counters)."""
    cfg = _cfg(config, tmp_path, down.url)
    store = open_store(cfg, strict=False, worker="w-twice")
    run_call(text_engines, store, "twice", [("say", ASK), ("say", BYE)], worker="w-twice")
    run_call(text_engines, store, "twice-zero", [("barge", "0")], worker="w-twice")
    [path] = _journal_files(cfg)
    copy = path.read_bytes()
    down.unblock()
    assert store.flush(timeout=60)
    once = [_rows(store, c) for c in ("twice", "twice-zero")]
    store.close()

    path.write_bytes(copy)
    again = open_store(cfg, worker="w-twice")
    assert again.flush(timeout=60)
    assert [_rows(again, c) for c in ("twice", "twice-zero")] == once
    _resolved_call_is_whole(again, "twice")
    assert path.stat().st_size == 0
    again.close()


def test_a_torn_last_line_is_skipped_with_a_log_line(config, tmp_path, down, text_engines,
                                                     caplog):
    cfg = _cfg(config, tmp_path, down.url)
    store = open_store(cfg, strict=False, worker="w-torn")
    run_call(text_engines, store, "torn", [("say", ASK), ("say", BYE)], worker="w-torn")
    store.close()
    [path] = _journal_files(cfg)
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    # what a SIGKILL in the middle of a write leaves: the start of one more line
    extra = Operation.of(writes.update_call, call_id="torn",
                         fields={"summary": "never complete"}).to_json()
    torn = json.dumps(extra).encode()[:30]
    path.write_bytes(whole + torn)

    down.unblock()
    caplog.set_level(logging.WARNING, logger="callbot.transcripts")
    again = open_store(cfg, worker="w-torn")
    assert again.flush(timeout=60)
    cut = [r.getMessage() for r in caplog.records if "cut by a crash" in r.getMessage()]
    assert len(cut) == 1 and f"({len(torn)} bytes)" in cut[0] and str(path) in cut[0]
    _resolved_call_is_whole(again, "torn")
    assert again.get_call("torn")["summary"] is None
    assert again.writer.written == len(lines) + 1      # every whole line, plus the recovery
    again.close()


def test_past_the_memory_bound_the_journal_keeps_every_operation(config, tmp_path, down,
                                                                 monkeypatch, caplog):
    """Without a journal, operations wait in memory up to MEMORY_MAX (made small here) and
    the rest are lost, counted and said; with it, none is lost."""
    monkeypatch.setattr(writer_module, "MEMORY_MAX", 50)
    call = {"id": "bulk", "started_at": time.time(), "day": "2026-11-30", "worker": "w-bulk"}
    ops = [Operation.of(writes.insert_call, row=call)] + [
        Operation.of(writes.update_call, call_id="bulk", fields={"summary": f"step {i}"})
        for i in range(120)]

    cfg = _cfg(config, tmp_path, down.url)
    journal_folder(cfg).parent.mkdir(parents=True)
    journal_folder(cfg).write_text("not a folder")        # no journal can be kept
    caplog.set_level(logging.ERROR, logger="callbot.transcripts")
    memory = open_store(cfg, strict=False, worker="w-bulk")
    for op in ops:
        memory.submit(op)
    # the worker's recovery and 49 of ours wait in memory
    assert memory.writer.lost == len(ops) + 1 - 50 and memory.writer.backlog() == 50
    said = [r.getMessage() for r in caplog.records]
    assert any("cannot keep a journal" in m and "writable folder" in m for m in said)
    assert sum("Turns are lost" in m for m in said) == 1
    memory.close()
    assert memory.writer.lost == len(ops) + 1    # what waited in memory at exit, counted too
    assert any("50 operation(s) lost at exit" in r.getMessage() for r in caplog.records)
    journal_folder(cfg).unlink()

    kept = open_store(cfg, strict=False, worker="w-bulk")
    for op in ops:
        kept.submit(op)
    assert kept.writer.lost == 0 and journal_backlog(cfg) == len(ops) + 1
    down.unblock()
    assert kept.flush(timeout=120)
    assert kept.get_call("bulk")["summary"] == "step 119"
    assert journal_backlog(cfg) == 0
    kept.close()


def test_a_full_journal_refuses_turns_with_a_clear_error_and_counts_them(config, tmp_path,
                                                                         down, caplog):
    cfg = _cfg(config, tmp_path, down.url, journal_max_mb=1)
    store = open_store(cfg, strict=False, worker="w-full")
    caplog.set_level(logging.ERROR, logger="callbot.transcripts")
    big = "x" * 300_000                          # 4 of these do not fit in 1 MB
    store.submit(Operation.of(writes.insert_call, row={
        "id": "full", "started_at": time.time(), "day": "2026-11-30", "worker": "w-full"}))
    for i in range(5):
        store.submit(Operation.of(writes.update_call, call_id="full",
                                  fields={"summary": f"{i} {big}"}))
    assert store.writer.lost == 2
    said = [r.getMessage() for r in caplog.records if "is full" in r.getMessage()]
    assert len(said) == 1 and "journal_max_mb" in said[0]
    assert "bring the database back" in said[0] and "1 so far" in said[0]
    [state] = journal_states(cfg, check_owner=True)
    assert state.operations == 5 and state.lost == 2 and state.in_use is True
    assert state.oldest_at is not None and state.oldest_at <= time.time()

    cfg_file = tmp_path / "callbot.toml"
    cfg_file.write_text(f'[paths]\ndata = "{tmp_path / "data"}"\n'
                        f'[transcripts]\nurl = "{down.url}"\n')
    out = subprocess.run(CALLBOT + ["transcripts", "status", "--config", str(cfg_file)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "5 operation(s) wait for the database" in out.stdout and "2 lost" in out.stdout
    assert "running" in out.stdout

    down.unblock()
    assert store.flush(timeout=60)
    assert store.get_call("full")["summary"] == f"2 {big}"   # the last one kept
    store.close()
    [state] = journal_states(cfg)
    assert state.operations == 0 and state.lost == 2        # losses stay counted


DISK = textwrap.dedent("""
    import os, resource, signal, sys
    from callbot.config import load_config
    from callbot.transcripts import open_store, writes
    from callbot.transcripts.writes import Operation
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a refused write fails, not the process
    store = open_store(load_config(sys.argv[1]), strict=False, worker="w-disk")
    resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, resource.RLIM_INFINITY))
    for i in range(5):
        store.submit(Operation.of(writes.update_call, call_id="disk",
                                  fields={"summary": f"{i} " + "x" * 60_000}))
    print(store.writer.lost, flush=True)
    os._exit(0)
""")


def test_a_write_the_disk_refuses_leaves_no_half_line_and_is_counted(config, tmp_path, down):
    """The disk refuses the third write half-way (a file size limit stands in for a full
    disk: the same failing write): the journal is cut back to its whole lines, the loss is
    said with what to do, counted, and what was kept is written later."""
    cfg_file = tmp_path / "callbot.toml"
    cfg_file.write_text(f'[paths]\ndata = "{tmp_path / "data"}"\n'
                        f'[transcripts]\nurl = "{down.url}"\n')
    out = subprocess.run([sys.executable, "-c", DISK, str(cfg_file)], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3"]
    assert "cannot write journal" in out.stderr and "free space on the disk" in out.stderr
    cfg = _cfg(config, tmp_path, down.url)
    [path] = _journal_files(cfg)
    assert _ops(path) == ["close_left_open", "update_call", "update_call"]  # whole lines
    [state] = journal_states(cfg)
    assert state.operations == 3 and state.lost == 3

    down.unblock()
    store = open_store(cfg, worker="w-disk")
    assert store.flush(timeout=60)
    assert store.writer.written == 4 and journal_backlog(cfg) == 0
    store.close()


def test_two_live_processes_of_one_worker_never_share_a_journal(config, tmp_path, down,
                                                                text_engines):
    cfg = _cfg(config, tmp_path, down.url)
    one = open_store(cfg, strict=False, worker="w-dup")
    two = open_store(cfg, strict=False, worker="w-dup")     # a second holder of the name
    assert one.writer.journal.path != two.writer.journal.path
    run_call(text_engines, one, "dup-1", [("say", ASK), ("say", BYE)], worker="w-dup")
    run_call(text_engines, two, "dup-2", [("say", ASK), ("say", BYE)], worker="w-dup")
    assert len(_journal_files(cfg)) == 2
    one.close()
    two.close()

    down.unblock()
    nxt = open_store(cfg, worker="w-dup")              # adopts the spare file
    assert nxt.flush(timeout=60)
    _resolved_call_is_whole(nxt, "dup-1")
    _resolved_call_is_whole(nxt, "dup-2")
    assert [p.name for p in _journal_files(cfg)] == [base_name("w-dup") + ".jsonl"]
    assert journal_backlog(cfg) == 0
    nxt.close()


# --- PostgreSQL stopped mid-call, the writing process SIGKILLed -------------------------------

CHILD = textwrap.dedent("""
    import sys, time
    from callbot.config import load_config
    from callbot.session import CallSession, Engines
    from callbot.transcripts import CallInfo, CallRecorder, open_store
    sys.path.insert(0, "tests")
    from transcript_calls import tick, until_quiet
    config = load_config(sys.argv[1])
    store = open_store(config, worker="pg-kill")
    rec = CallRecorder(store, CallInfo("pg-call", "sip-pg", "0612345678", "pg-kill"))
    s = CallSession(Engines.load(config, asr=False), "pg-call", observers=[rec])
    s.start()

    def turn(text):
        until_quiet(s)
        tick(s)
        s.hear(text)
        for _ in range(3):
            tick(s)

    turn("comment je trouve mon code ape")
    assert store.flush(30)
    print("WRITTEN", flush=True)
    sys.stdin.readline()                 # the database is stopped now
    turn("oui")
    turn("je voudrais un avis de situation")
    print("DURING", flush=True)
    while True:                          # the call goes on... until the process is killed
        tick(s)
        time.sleep(0.02)
""")

REPLAY = textwrap.dedent("""
    import sys
    from callbot.config import load_config
    from callbot.transcripts import open_store
    store = open_store(load_config(sys.argv[1]), worker="pg-kill")
    assert store.flush(60)
    print("REPLAYED", store.writer.written, flush=True)
    store.close()
""")


def test_postgresql_stopped_mid_call_and_the_writer_sigkilled_loses_and_doubles_nothing(
        config, tmp_path):
    """PostgreSQL stops in the middle of a call for 2 minutes; two more turns are said; the
    process that records the call retries through the outage and is SIGKILLed while the
    database is still down. Restarted with the same
    worker name once PostgreSQL is back, it writes every turn exactly once; a second replay
    of the same journal (a crash before it was emptied) changes nothing."""
    from pg_server import PgServer

    server = PgServer()
    server.start()
    try:
        _stop_kill_restart(server, config, tmp_path)
    finally:
        server.stop()
        server.cleanup()


def _stop_kill_restart(server, config, tmp_path: Path) -> None:
    cfg_file = tmp_path / "callbot.toml"
    cfg_file.write_text(f'[paths]\ndata = "{tmp_path / "data"}"\n'
                        f'[transcripts]\nurl = "{server.url()}"\n')
    cfg = _cfg(config, tmp_path, server.url())
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_file)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "WRITTEN", child.stderr.read()
        reader = open_store(cfg)
        before = [t["text"] for t in reader.turns("pg-call") if t["speaker"] == "caller"]
        assert before == ["comment je trouve mon code ape"]
        reader.close()

        server.stop()                                       # the outage starts
        outage_from = time.monotonic()
        child.stdin.write("go on\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "DURING", child.stderr.read()
        assert journal_backlog(cfg) == 2                    # one operation per turn
        # the writer retries through a long outage (every 5 s at most) while the call goes
        # on (the bot's no-input prompts are turns too); killed near the outage's end
        time.sleep(max(0.0, outage_from + OUTAGE_S - 5 - time.monotonic()))
        assert child.poll() is None, child.stderr.read()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(10)
    waiting = journal_backlog(cfg)
    assert waiting >= 2
    [path] = _journal_files(cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    copy = path.read_bytes()
    time.sleep(max(0.0, outage_from + OUTAGE_S - time.monotonic()))
    server.start()                                          # the outage ends

    def replay() -> int:
        out = subprocess.run([sys.executable, "-c", REPLAY, str(cfg_file)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and out.stdout.startswith("REPLAYED"), out.stderr
        return int(out.stdout.split()[1])

    # the journaled operations, then the closing of the call the killed process left open
    assert replay() == waiting + 1
    assert journal_backlog(cfg) == 0 and path.stat().st_size == 0
    reader = open_store(cfg)
    call, turns = _rows(reader, "pg-call")
    said = [t["text"] for t in turns if t["kind"] == "speech"]
    assert said == ["comment je trouve mon code ape", "oui", "je voudrais un avis de situation"]
    assert [t["seq"] for t in turns] == list(range(1, len(turns) + 1))
    assert call["caller_turns"] == 3
    assert call["outcome"] == ERROR and "left open" in call["detail"]
    reader.close()

    path.write_bytes(copy)                      # as if the process died before emptying it
    assert replay() == waiting + 1
    reader = open_store(cfg)
    assert _rows(reader, "pg-call") == (call, turns)
    reader.close()
