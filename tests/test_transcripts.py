"""The transcript store: real calls recorded turn by turn, on SQLite and on a real PostgreSQL
server; crashes, a database that is down, migrations, exports with redaction, retention,
recordings, and the `callbot transcripts` commands."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from transcript_calls import run_call, tone

from callbot.config import load_config
from callbot.errors import ConfigError
from callbot.events import TurnDecided
from callbot.transcripts import (
    CALLER_HANGUP,
    ERROR,
    NO_INPUT,
    RESOLVED,
    TRANSFERRED,
    CallFilter,
    CallInfo,
    CallRecorder,
    StoreError,
    open_store,
    purge,
)
from callbot.transcripts.db import Database, migrate, migrations
from callbot.transcripts.redact import mask_number, redact_call, redact_text

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = [sys.executable, "-m", "callbot"]


@pytest.fixture
def store(store_config):
    s = open_store(store_config)
    yield s
    s.close()


def _turns(store, call_id):
    store.flush()
    return store.turns(call_id)


# --- recording real calls --------------------------------------------------------------------

def test_resolved_call_is_recorded_turn_by_turn(store, text_engines):
    t0 = time.time()
    decided = []

    class Decided:
        def on_event(self, event):
            if isinstance(event, TurnDecided):
                decided.append(event)

    _rec, session = run_call(text_engines, store, "call-resolved",
                             [("say", "comment je trouve mon code ape"), ("say", "au revoir")],
                             sip_call_id="abc@10.0.0.1", caller="+33612345678", worker="w1",
                             observers=(Decided(),))
    assert store.flush()
    call = store.get_call("call-resolved")
    assert call["outcome"] == RESOLVED and call["detail"] == "caller_goodbye"
    assert call["sip_call_id"] == "abc@10.0.0.1" and call["caller_number"] == "+33612345678"
    assert call["worker"] == "w1" and t0 <= call["started_at"] <= call["ended_at"]
    assert call["duration_ms"] == session.clock_ms and call["duration_ms"] > 10_000
    assert call["caller_turns"] == 2 and call["answers"] == 1
    turns = store.turns("call-resolved")
    assert [(t["speaker"], t["kind"]) for t in turns] == [
        ("bot", "say"), ("caller", "speech"), ("bot", "say"), ("caller", "speech"),
        ("bot", "say")]
    greeting, ask, answer, bye, goodbye = turns
    assert greeting["answer_id"] == "prompt:greeting" and greeting["text"].startswith("Bonjour")
    assert ask["text"] == "comment je trouve mon code ape"
    assert ask["intent"] == "connaitre_code_ape" and ask["decision"] == "confident"
    assert ask["confidence"] > 0.8
    assert ask["alternatives"][0][0] == "connaitre_code_ape" and len(ask["alternatives"]) == 3
    assert answer["answer_id"] == "answer:connaitre_code_ape"
    assert [e["key"] for e in answer["events"]] == ["answer:connaitre_code_ape",
                                                   "prompt:another_question"]
    # each answer's latency, as the session emitted it, lands on the caller row it answers
    marks = [round(d.latency_ms, 2) for d in decided if d.turn.caller is not None]
    assert [ask["latency_ms"], bye["latency_ms"]] == marks and all(m > 0 for m in marks)
    assert bye["intent"] == "au_revoir" and goodbye["events"][-1] == {
        "type": "hangup", "reason": "caller_goodbye"}
    assert [t["seq"] for t in turns] == [1, 2, 3, 4, 5]
    assert ask["offset_ms"] < bye["offset_ms"] <= session.clock_ms


def test_transfers_no_input_hangup_dtmf_and_barge_in(store, text_engines):
    rec, _ = run_call(text_engines, store, "call-siren",
                      [("say", "je n'ai jamais reçu mon numéro siren"),
                       ("say", "sept cent trente deux huit cent vingt neuf trois cent vingt")])
    rec.transfer_result("sip:conseillers@pbx.example", "accepted")
    run_call(text_engines, store, "call-silent", [])
    run_call(text_engines, store, "call-hangup", [("say", "comment je trouve mon code ape"),
                                                  ("hangup",)])
    run_call(text_engines, store, "call-zero", [("barge", "0")])
    store.flush()
    siren = store.get_call("call-siren")
    assert siren["outcome"] == TRANSFERRED and siren["transfer_reason"] == "personal_case"
    assert siren["transfer_target"] == "sip:conseillers@pbx.example"
    assert siren["transfer_result"] == "accepted"
    assert "SIREN 732829320" in siren["summary"]
    capture = store.turns("call-siren")[3]
    assert capture["intent"] == "siren" and capture["decision"] == "capture"
    assert store.get_call("call-silent")["outcome"] == NO_INPUT
    kinds = [t["kind"] for t in store.turns("call-silent") if t["speaker"] == "caller"]
    assert kinds == ["silence", "silence"]
    hung = store.get_call("call-hangup")
    assert hung["outcome"] == CALLER_HANGUP and hung["answers"] == 1
    zero = store.turns("call-zero")
    assert zero[0]["barge_in_ms"] > 0          # the greeting was cut by the key press
    assert zero[1]["kind"] == "dtmf" and zero[1]["dtmf"] == "0"
    assert store.get_call("call-zero")["transfer_reason"] == "caller_request"
    # filters of the calls list
    calls, total = store.list_calls(CallFilter(outcome=TRANSFERRED))
    assert total == 2 and {c["id"] for c in calls} == {"call-siren", "call-zero"}
    calls, total = store.list_calls(CallFilter(intent="connaitre_code_ape"))
    assert [c["id"] for c in calls] == ["call-hangup"]
    calls, total = store.list_calls(CallFilter(intent="connaitre_code_ape",
                                               min_confidence=0.9999))
    assert total == 0
    page, total = store.list_calls(limit=2, offset=0)
    assert total == 4 and len(page) == 2


def test_a_finished_turn_survives_sigkill_and_the_call_is_closed_as_error(store_config,
                                                                          tmp_path):
    """Commit per turn: the turns are in the database while the call goes on; a SIGKILL
    mid-call loses none, and the next start of that worker closes the call as an error."""
    cfg = tmp_path / "callbot.toml"
    cfg.write_text(f'[paths]\ndata = "{store_config.paths.data}"\n'
                   f'[transcripts]\nurl = "{store_config.transcripts.url}"\n'
                   f'[recording]\nenabled = true\n')
    script = textwrap.dedent("""
        import sys, time
        from callbot.config import load_config
        from callbot.session import CallSession, Engines
        from callbot.transcripts import CallInfo, CallRecorder, open_store
        sys.path.insert(0, "tests")
        from transcript_calls import tick, until_quiet
        config = load_config(sys.argv[1])
        store = open_store(config)
        rec = CallRecorder(store, CallInfo("crash-1", "sip-crash", "0612345678", "crashy"))
        s = CallSession(Engines.load(config, asr=False), "crash-1", observers=[rec])
        s.start()
        for text in ("comment je trouve mon code ape", "oui"):
            until_quiet(s)
            tick(s)
            s.hear(text)
        for _ in range(50):
            tick(s)
        print("TURNS DONE", flush=True)
        while True:              # the call goes on... until the process is killed
            tick(s)
            time.sleep(0.02)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script, str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.strip() == "TURNS DONE", proc.stderr.read()
        reader = open_store(store_config)
        deadline = time.time() + 10
        while time.time() < deadline and len(reader.turns("crash-1")) < 5:
            time.sleep(0.05)
        assert len(reader.turns("crash-1")) == 5       # committed while the call is open
        assert reader.get_call("crash-1")["outcome"] is None
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    store = open_store(store_config)
    CallRecorder(store, CallInfo("after-restart", worker="crashy")).close()
    store.flush()
    call = store.get_call("crash-1")
    assert call["outcome"] == ERROR and "left open" in call["detail"]
    assert call["ended_at"] >= call["started_at"] and call["duration_ms"] >= 0
    turns = store.turns("crash-1")
    assert [t["text"] for t in turns if t["speaker"] == "caller"] == [
        "comment je trouve mon code ape", "oui"]
    wav = store.recordings / call["recording"]
    with wave.open(str(wav)) as w:          # repaired: playable up to the crash
        assert w.getnchannels() == 2 and w.getnframes() > 8000
    # another worker's open call is not touched by this worker's restart
    other = CallRecorder(store, CallInfo("other-live", worker="other"))
    CallRecorder(store, CallInfo("again", worker="crashy"))
    store.flush()
    assert store.get_call("other-live")["outcome"] is None
    other.close()


def test_a_database_down_logs_one_error_and_the_call_goes_on(pg_server, config, tmp_path,
                                                             text_engines, caplog):
    from pg_server import PgServer, free_port

    port = free_port()
    cfg = dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path),
        transcripts=dataclasses.replace(
            config.transcripts, url=f"postgresql://postgres@127.0.0.1:{port}/postgres"))
    with pytest.raises(StoreError, match="cannot be opened"):
        open_store(cfg)
    caplog.set_level(logging.WARNING, logger="callbot.transcripts")
    store = open_store(cfg, strict=False)
    t0 = time.perf_counter()
    rec, session = run_call(text_engines, store, "down-1",
                            [("say", "comment je trouve mon code ape"), ("say", "au revoir")])
    took = time.perf_counter() - t0
    assert session.ended.is_set() and rec.closed
    assert took < 5, f"the call waited for the database ({took:.1f} s)"
    time.sleep(1.0)                     # the writer retries meanwhile
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "Calls go on" in errors[0].getMessage()
    # the database comes back: nothing recorded meanwhile was lost
    server = PgServer(port)
    try:
        server.start()
        assert store.flush(timeout=30)
        call = store.get_call("down-1")
        assert call["outcome"] == RESOLVED and len(store.turns("down-1")) == 5
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    finally:
        store.close()
        server.stop()
        server.cleanup()


def test_an_unusable_sqlite_folder_never_breaks_a_call(config, tmp_path, text_engines, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    cfg = dataclasses.replace(config, paths=dataclasses.replace(config.paths,
                                                                 data=blocker / "data"))
    with pytest.raises(StoreError):
        open_store(cfg)
    caplog.set_level(logging.ERROR, logger="callbot.transcripts")
    store = open_store(cfg, strict=False)
    _rec, session = run_call(text_engines, store, "nowhere", [("say", "au revoir")])
    assert session.ended.is_set()
    store.writer._stopping.set()          # do not wait for retries at teardown
    # said once each: the database, and the journal that cannot be kept in the same folder
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2 and "cannot keep a journal" in errors[1]


# --- schema -------------------------------------------------------------------------------

def test_migrations_are_numbered_and_applied_once(store_config):
    nums = [n for n, _, _ in migrations()]
    assert nums == sorted(nums) and nums[0] == 1 and len(set(nums)) == len(nums)
    url = store_config.transcripts.url
    db = Database(url) if url else Database("", store_config.paths.data / "t.sqlite3")
    conn = db._open()
    # a database made by the first version only is brought up to date
    migrate_1 = migrations()[0]
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                 "applied_at DOUBLE PRECISION NOT NULL)")
    with conn.transaction():
        from callbot.transcripts.db import _statements
        for st in _statements(migrate_1[2]):
            conn.execute(st)
        conn.execute("INSERT INTO schema_version VALUES (1, ?, 0)", (migrate_1[1],))
    assert migrate(conn) == nums[-1]
    assert migrate(conn) == nums[-1]
    versions = [r["version"] for r in conn.rows("SELECT version FROM schema_version "
                                                "ORDER BY version")]
    assert versions == nums
    assert conn.rows("SELECT * FROM reviews") == []
    conn.close()


def test_sqlite_is_the_embedded_default_in_wal_mode(config, tmp_path):
    cfg = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data=tmp_path))
    store = open_store(cfg)
    assert store.db.path == tmp_path / "transcripts.sqlite3" and store.db.path.exists()
    assert store.read(lambda c: c.scalar("PRAGMA journal_mode")) == "wal"
    store.close()


# --- exports and redaction ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("mon siren c'est 732 829 320 merci", "mon siren c'est [numéro] merci"),
    ("sept trois deux euh huit deux neuf trois deux zéro", "[numéro]"),
    ("sept cent trente-deux huit cent vingt-neuf trois cent vingt", "[numéro]"),
    ("mon siret 73282932000074", "mon siret [numéro]"),
    ("rappelez-moi au 06.12.34.56.78 ou au +33 6 12 34 56 78",
     "rappelez-moi au [numéro] ou au [numéro]"),
    ("zéro six douze trente-quatre cinquante-six soixante-dix-huit", "[numéro]"),
    ("écrivez à jean.dupont@orange.fr svp", "écrivez à [e-mail] svp"),
    ("c'est jean point dupont arobase gmail point com voilà", "c'est [e-mail] voilà"),
    ("j'ai payé trois cent cinquante euros en deux mille vingt-quatre",
     "j'ai payé trois cent cinquante euros en deux mille vingt-quatre"),
    ("comment je trouve mon code ape", "comment je trouve mon code ape"),
])
def test_redaction(text, expected):
    assert redact_text(text) == expected


def test_redaction_of_a_siren_spread_over_turns_and_caller_numbers():
    call = {"caller_number": "+33612345678", "summary": "Cas personnel ; SIREN 732829320.",
            "detail": None, "turns": [
                {"text": "sept cent trente deux", "decision": "capture", "state": "siren_capture",
                 "events": []},
                {"text": None, "dtmf": "7", "state": "siren_capture", "events": []},
                {"text": None, "speaker": "bot", "events": [{"type": "transfer", "context": {
                    "siren": "732829320", "summary": "SIREN 732829320",
                    "last_utterance": "huit cent vingt neuf"}}]}]}
    out = json.dumps(redact_call(call), ensure_ascii=False)
    assert "732" not in out and "612345678" not in out and "sept cent" not in out
    assert "huit cent vingt neuf" in out     # 3 digits outside a capture turn are kept
    assert mask_number("+33 6 12 34 56 78") == "•" * 9 + "78"


def _cli(cfg: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    return subprocess.run(CALLBOT + ["--config", str(cfg), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, input=stdin)


def test_transcripts_commands(store_config, text_engines, tmp_path):
    store = open_store(store_config)
    run_call(text_engines, store, "cli-siren",
             [("say", "je n'ai jamais reçu mon numéro siren"),
              ("say", "sept cent trente deux huit cent vingt neuf trois cent vingt")])
    run_call(text_engines, store, "cli-mail",
             [("say", "mon adresse mail est jean.dupont@orange.fr je voudrais un avis de "
                      "situation"), ("say", "au revoir")], caller="0612345678")
    old = time.time() - 400 * 86400
    run_call(text_engines, store, "cli-old", [("say", "au revoir")], started_at=old)
    store.flush()
    store.close()
    cfg = tmp_path / "callbot.toml"
    cfg.write_text(f'[paths]\ndata = "{store_config.paths.data}"\n'
                   f'[transcripts]\nurl = "{store_config.transcripts.url}"\n'
                   f'retention_days = 30\n')

    r = _cli(cfg, "transcripts", "list")
    assert r.returncode == 0, r.stderr
    assert "cli-siren" in r.stdout and "transferred" in r.stdout and "3 call(s)" in r.stdout
    r = _cli(cfg, "transcripts", "list", "--outcome", "resolved", "--since", "7d")
    assert "cli-mail" in r.stdout and "cli-siren" not in r.stdout and "cli-old" not in r.stdout
    r = _cli(cfg, "transcripts", "list", "--intent", "siren_non_recu")
    assert "cli-siren" in r.stdout and "1 call(s)" in r.stdout

    r = _cli(cfg, "transcripts", "show", "cli-siren")
    assert r.returncode == 0, r.stderr
    assert "siren_non_recu" in r.stdout and "SIREN 732829320" in r.stdout
    assert "-> transfer (personal_case)" in r.stdout
    r = _cli(cfg, "transcripts", "show", "no-such-call")
    assert r.returncode == 1 and "no call 'no-such-call'" in r.stderr

    r = _cli(cfg, "transcripts", "export", "--format", "jsonl", "--no-redact")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [c["id"] for c in lines] == ["cli-old", "cli-siren", "cli-mail"]
    assert "jean.dupont@orange.fr" in r.stdout and "732829320" in r.stdout
    r = _cli(cfg, "transcripts", "export", "--format", "jsonl")     # redacted by default
    assert r.returncode == 0, r.stderr
    for secret in ("jean.dupont", "732829320", "0612345678", "+33612345678",
                   "sept cent trente deux huit cent"):
        assert secret not in r.stdout, secret
    assert "[numéro]" in r.stdout and "[e-mail]" in r.stdout
    out = tmp_path / "calls.csv"
    r = _cli(cfg, "transcripts", "export", "--format", "csv", "--out", str(out))
    assert r.returncode == 0 and "3 call(s) exported (redacted)" in r.stderr
    import csv
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert {r["call_id"] for r in rows} == {"cli-old", "cli-siren", "cli-mail"}
    assert any(r["intent"] == "siren_non_recu" for r in rows)
    assert "jean.dupont" not in out.read_text(encoding="utf-8")

    r = _cli(cfg, "transcripts", "purge")
    assert r.returncode == 0, r.stderr
    assert "deleted 1 call(s)" in r.stdout
    r = _cli(cfg, "transcripts", "list")
    assert "cli-old" not in r.stdout and "2 call(s)" in r.stdout


# --- retention and recordings ---------------------------------------------------------------

def test_purge_deletes_old_calls_and_recordings_and_closes_stale_ones(store_config,
                                                                      text_engines):
    cfg = dataclasses.replace(store_config, recording=dataclasses.replace(
        store_config.recording, enabled=True))
    store = open_store(cfg)
    now = time.time()
    run_call(text_engines, store, "old", [("say", "au revoir")], started_at=now - 91 * 86400)
    run_call(text_engines, store, "recent", [("say", "au revoir")], started_at=now - 89 * 86400)
    stale = CallRecorder(store, CallInfo("stale", worker="gone", started_at=now - 3 * 3600))
    store.flush()
    old_wav = store.recordings / store.get_call("old")["recording"]
    recent_wav = store.recordings / store.get_call("recent")["recording"]
    assert old_wav.exists() and recent_wav.exists()
    store.close()
    report = purge(cfg)
    assert (report.calls, report.recordings, report.closed) == (1, 1, 1)
    assert report.turns == 3                # greeting, "au revoir", goodbye
    assert not old_wav.exists() and recent_wav.exists()
    store = open_store(cfg)
    assert store.get_call("old") is None and store.get_call("recent") is not None
    assert store.turns("old") == []
    assert store.get_call("stale")["outcome"] == ERROR
    stale._close_wav()
    store.close()


def test_recording_is_stereo_caller_left_bot_right(config, tmp_path, text_engines):
    cfg = dataclasses.replace(config, paths=dataclasses.replace(config.paths, data=tmp_path),
                              recording=dataclasses.replace(config.recording, enabled=True))
    store = open_store(cfg)
    caller_noise = tone(300.0)
    _rec, session = run_call(text_engines, store, "rec-1", [("say", "au revoir")],
                            frame=caller_noise)
    store.flush()
    path = store.recordings / store.get_call("rec-1")["recording"]
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        frames = w.getnframes()
        pcm = np.frombuffer(w.readframes(frames), dtype="<i2").reshape(-1, 2)
    assert abs(frames / 8 - session.clock_ms) <= 20       # one stereo sample per call sample
    left, right = pcm[:, 0].astype(float), pcm[:, 1].astype(float)
    assert np.abs(left).mean() > 4000                      # the caller's tone, all along
    assert np.abs(right[: 8000 * 3]).mean() > 100          # the greeting, at the start
    assert np.allclose(left[:160], np.frombuffer(caller_noise, dtype="<i2"))
    store.close()
    # off by default: no tap, no file
    assert CallRecorder(open_store(dataclasses.replace(cfg, recording=config.recording)),
                        CallInfo("no-rec")).recording is None


# --- configuration --------------------------------------------------------------------------

def test_configuration_sections(tmp_path):
    from callbot.console.passwords import hash_password

    c = load_config(env={})
    assert c.transcripts.url == "" and c.transcripts.retention_days == 90
    assert (c.console.host, c.console.port) == ("127.0.0.1", 8080)
    assert c.recording.enabled is False and c.console.users == ()
    h = hash_password("a long enough password")
    f = tmp_path / "c.toml"
    f.write_text(f'[transcripts]\nurl = "postgresql://bot:s3cret@db:5432/calls"\n'
                 f'[[console.users]]\nname = "alice"\nrole = "editor"\npassword_hash = "{h}"\n')
    c = load_config(f, env={"CALLBOT_RECORDING_ENABLED": "true"})
    assert c.recording.enabled and c.console.users[0].name == "alice"
    shown = json.dumps(c.to_dict())
    assert "s3cret" not in shown and h not in shown and "alice" in shown
    for text, words in [
        ('[console]\nport = 0\n', "greater than 0"),
        ('[console]\ncookie_secure = "sometimes"\n', "console.cookie_secure"),
        ('[transcripts]\nurl = "mysql://x"\n', "transcripts.url"),
        ('[[console.users]]\nname = "bob"\nrole = "admin"\npassword_hash = "scrypt$x"\n',
         "role 'admin'"),
        ('[[console.users]]\nname = "bob"\npassword_hash = "plain"\n', "hash-password"),
        ('[[console.users]]\nname = "bob"\npasword_hash = "scrypt$x"\n', "pasword_hash"),
    ]:
        f.write_text(text)
        with pytest.raises(ConfigError, match=words.replace("$", r"\$")):
            load_config(f, env={})


def test_transcripts_can_be_switched_off(config, tmp_path, text_engines):
    cfg = dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path),
        transcripts=dataclasses.replace(config.transcripts, enabled=False),
        recording=dataclasses.replace(config.recording, enabled=True))
    store = open_store(cfg)
    rec, session = run_call(text_engines, store, "off", [("say", "au revoir")])
    rec.transfer_result("sip:x@y", "accepted")
    assert session.ended.is_set() and rec.recording is None
    store.flush()
    assert store.list_calls() == ([], 0)
    assert not (tmp_path / "recordings").exists()
    store.close()
