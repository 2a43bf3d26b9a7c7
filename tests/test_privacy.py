"""Privacy by default: redaction of what callers say, exports redacted unless asked (and then
by an editor only), logs without personal data, redacted phrasings in kb/, a purge that
leaves no orphan, owner-only files. All on real parts: real sessions and the dialogue, real
SQLite and PostgreSQL, the console served by uvicorn, a SIP worker called over loopback."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_console import PASSWORDS, Client, serving
from transcript_calls import run_call

from callbot.config import ConsoleUser
from callbot.console.app import create_app
from callbot.console.kbedit import KbEditError, add_phrasing
from callbot.console.passwords import hash_password
from callbot.transcripts import open_store, purge
from callbot.transcripts.export import may_export_unredacted, write_jsonl
from callbot.transcripts.redact import (ADDRESS, EMAIL, NAME, NUMBER, mask_number, redact_call,
                                        redact_text)
from telephony.jsonlog import JsonLog
from telephony.runner import LogObserver

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = [sys.executable, "-m", "callbot"]

# What a caller says, as Whisper writes it (mostly lowercase, little punctuation), with what
# must disappear and what must stay readable for the review of utterances and statistics.
UTTERANCES = [
    ("bonjour je m'appelle jean dupont je voudrais mon numéro siret",
     ["jean", "dupont"], ["numéro siret", "je voudrais"]),
    ("Bonjour, je m'appelle Marie-Claire Lefèvre, j'ai perdu mon numéro SIREN.",
     ["Marie-Claire", "Lefèvre"], ["numéro SIREN", "j'ai perdu"]),
    ("oui bonjour madame martin à l'appareil c'est pour un avis de situation",
     ["martin"], ["avis de situation", "bonjour"]),
    ("c'est monsieur durand je vous appelle pour le code ape",
     ["durand"], ["code ape", "je vous appelle"]),
    ("mon nom est bernard petit et je n'ai jamais reçu mon siren",
     ["bernard", "petit"], ["jamais reçu mon siren"]),
    ("mon nom c'est nguyen euh je suis auto-entrepreneur",
     ["nguyen"], ["auto-entrepreneur"]),
    ("bonjour mademoiselle rousseau voilà j'ai créé ma société",
     ["rousseau"], ["créé ma société"]),
    ("merci madame au revoir", [], ["merci madame au revoir"]),
    ("bonjour madame je voudrais parler à un conseiller",
     [], ["bonjour madame je voudrais parler à un conseiller"]),
    ("mon siren c'est le 732 829 320", ["732", "829", "320"], ["mon siren"]),
    ("alors c'est sept cent trente-deux huit cent vingt-neuf ensuite 320",
     ["sept cent", "huit cent", "320"], ["alors"]),
    ("le numéro c'est 732 829 euh ensuite trois cent vingt",
     ["732", "829", "trois cent vingt"], ["le numéro"]),
    ("sept trois deux huit deux neuf trois deux zéro", ["sept trois deux", "zéro"], []),
    ("mon siret c'est 732 829 320 00074", ["732", "00074"], ["mon siret"]),
    ("mon numéro siret est le 73282932000074 je le trouve pas sur l'avis",
     ["73282932000074"], ["numéro siret", "l'avis"]),
    ("vous pouvez me rappeler au 06 12 34 56 78", ["06 12", "56 78"], ["me rappeler"]),
    ("rappelez-moi au zéro six, douze, trente-quatre, cinquante-six, soixante-dix-huit",
     ["zéro six", "douze", "trente-quatre", "soixante-dix-huit"], ["rappelez-moi"]),
    ("mon portable c'est zéro six double six vingt-deux trente-trois quarante-quatre",
     ["zéro six", "double six", "vingt-deux", "quarante-quatre"], ["mon portable"]),
    ("c'est le 01.45.67.89.10 au bureau", ["01.45", "89.10"], ["au bureau"]),
    ("mon numéro c'est plus 33 6 12 34 56 78", ["33 6", "56 78"], ["mon numéro"]),
    ("zéro six douze trente-quatre ensuite cinquante-six soixante-dix-huit",
     ["zéro six", "cinquante-six", "soixante-dix-huit"], []),
    ("zéro sept point quarante-cinq point vingt-deux point dix-huit point zéro un",
     ["zéro sept", "quarante-cinq", "dix-huit"], []),
    ("mon iban c'est FR76 3000 6000 0112 3456 7890 189", ["FR76", "3000", "189"],
     ["mon iban"]),
    ("vous pouvez m'écrire à jean.dupont@orange.fr", ["jean.dupont", "orange.fr"],
     ["m'écrire"]),
    ("mon mail c'est jean point dupont arobase gmail point com",
     ["jean point dupont", "gmail", "point com"], ["mon mail"]),
    ("c'est contact arobase boulangerie-martin point fr merci",
     ["contact", "boulangerie-martin", "point fr"], ["merci"]),
    ("l'adresse c'est marie.leroy@wanadoo.fr pour la réponse",
     ["marie.leroy", "wanadoo"], ["pour la réponse"]),
    ("mon adresse mail sophie tiret bernard arobase free point fr",
     ["sophie tiret bernard", "free point fr"], ["mon adresse mail"]),
    ("j'habite au 12 rue de la Paix à Paris", ["12 rue", "de la Paix"], ["j'habite"]),
    ("le siège est au 45 bis avenue Victor Hugo", ["45 bis", "Victor Hugo"], ["le siège"]),
    ("mon entreprise est au trois boulevard des Capucines",
     ["trois boulevard", "Capucines"], ["mon entreprise"]),
    ("j'habite 8 chemin des vignes et j'ai déménagé", ["8 chemin", "vignes"],
     ["j'ai déménagé"]),
    ("c'est au 27 allée des tilleuls 69003 Lyon", ["27 allée", "tilleuls", "69003", "Lyon"],
     []),
    ("le code postal c'est 75002", ["75002"], ["le code postal"]),
    ("j'ai déménagé au 5 impasse du moulin 44000 nantes",
     ["5 impasse", "moulin", "44000"], ["j'ai déménagé"]),
    ("ma nouvelle adresse c'est rue Jean Jaurès à Rennes", ["Jean Jaurès"],
     ["ma nouvelle adresse"]),
    ("j'ai fait une demande de modification de mon adresse",
     [], ["j'ai fait une demande de modification de mon adresse"]),
    ("comment je trouve mon code APE", [], ["comment je trouve mon code APE"]),
    ("je voudrais mon numéro siret pour ma boîte", [],
     ["je voudrais mon numéro siret pour ma boîte"]),
    ("mon code APE c'est 6201Z c'est bien ça", [], ["mon code APE c'est 6201Z"]),
    ("j'ai payé trois cent cinquante euros en deux mille vingt-quatre", [],
     ["trois cent cinquante euros en deux mille vingt-quatre"]),
    ("j'ai créé mon entreprise le 15 mars 2024", [], ["le 15 mars 2024"]),
    ("ça fait trois semaines que j'attends mon avis de situation", [],
     ["trois semaines", "avis de situation"]),
    ("on est partis de la rue du port", [], ["on est partis de la rue du port"]),
    ("je suis en cours de création de ma société", [],
     ["en cours de création de ma société"]),
    ("je m'appelle sophie martin mon siren c'est 552 100 554 et j'habite 3 rue Pasteur",
     ["sophie", "martin", "552", "554", "Pasteur"], ["mon siren", "j'habite"]),
    ("Oui, c'est Monsieur Lambert, L-A-M-B-E-R-T, j'ai deux établissements.",
     ["Lambert", "L-A-M-B-E-R-T"], ["j'ai deux établissements"]),
    ("j'ai une micro-entreprise depuis deux mille dix-neuf", [],
     ["micro-entreprise depuis deux mille dix-neuf"]),
    ("Je m'appelle Jean Dupont. Je voudrais un extrait Kbis.", ["Jean", "Dupont"],
     ["Je voudrais un extrait Kbis."]),
    ("mon fixe c'est le zéro un quarante-cinq quatre-vingt-dix-neuf zéro zéro onze",
     ["zéro un", "quatre-vingt-dix-neuf", "onze"], ["mon fixe"]),
    ("j'ai 3 salariés et 2 établissements depuis le 12 mars", [],
     ["3 salariés et 2 établissements depuis le 12 mars"]),
    ("il y a un problème avec mon avis de situation", [],
     ["il y a un problème avec mon avis de situation"]),
    ("je m'appelle dupont d u p o n t comme le détective", ["dupont", "d u p o n t"],
     ["comme le détective"]),
]


@pytest.mark.parametrize("text, gone, kept", UTTERANCES, ids=[u[0][:40] for u in UTTERANCES])
def test_redaction_of_what_callers_say(text, gone, kept):
    out = redact_text(text)
    assert [g for g in gone if g in out] == [], out
    assert [k for k in kept if k not in out] == [], out
    if gone:
        assert any(p in out for p in (NUMBER, EMAIL, NAME, ADDRESS)), out
    else:
        assert out == text


def test_the_table_is_large_enough_and_covers_every_kind():
    assert len(UTTERANCES) >= 40
    outs = " ".join(redact_text(u[0]) for u in UTTERANCES)
    for placeholder in (NUMBER, EMAIL, NAME, ADDRESS):
        assert placeholder in outs


def test_ordinary_requests_stay_readable(kb):
    """The knowledge base's phrasings are what callers ask: the redactor may touch only the
    few that hold a name ("bonjour ici monsieur dupont"), never a request."""
    changed = {p.text: redact_text(p.text) for p in kb.phrasings if redact_text(p.text) != p.text}
    assert len(changed) <= 0.002 * len(kb.phrasings), changed
    assert all(out.count(NAME) == 1 and NUMBER not in out and ADDRESS not in out
               for out in changed.values()), changed


def test_a_capture_turn_loses_every_number_and_rows_keep_their_shape():
    call = {"caller_number": "+33698765432", "summary": "Cas personnel ; SIREN 732829320.",
            "detail": None, "turns": [
                {"text": "sept cent trente", "decision": "capture", "state": "siren_capture",
                 "events": "[]"},
                {"text": "je m'appelle paul martin", "state": "start",
                 "events": json.dumps([{"type": "say", "key": "prompt:x",
                                        "text": "j'ai noté 732 829 320"}])}]}
    out = json.dumps(redact_call(call), ensure_ascii=False)
    for secret in ("698765432", "732", "sept cent", "paul", "martin"):
        assert secret not in out, secret
    assert redact_text(None) is None and redact_text("") == ""
    assert mask_number("+33 6 98 76 54 32") == "•" * 9 + "32"


# --- a real call with personal data ---------------------------------------------------------
CALLER = "+33698765432"
SIREN = "732829320"
STEPS = [("say", "bonjour je m'appelle jean dupont"),
         ("say", "je n'ai jamais reçu mon numéro siren"),
         ("dtmf", SIREN)]
SECRETS = ("dupont", SIREN, CALLER)               # personal data
SAID = "jamais reçu"                             # what the caller asked: kept in transcripts


def _data_config(config, data: Path, recording: bool = False, **transcripts):
    return dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=data),
        transcripts=dataclasses.replace(config.transcripts, url="", **transcripts),
        recording=dataclasses.replace(config.recording, enabled=recording))


def _call_with_personal_data(engines, store, call_id: str, observers=()):
    run_call(engines, store, call_id, STEPS, caller=CALLER, observers=observers)
    assert store.flush()
    call = store.get_call(call_id)
    assert call["transfer_reason"] == "personal_case" and SIREN in call["summary"], call
    return call


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    return subprocess.run(CALLBOT + ["--config", str(cfg), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


# --- exports --------------------------------------------------------------------------------
def test_the_export_command_redacts_unless_no_redact(config, text_engines, tmp_path):
    cfg = _data_config(config, tmp_path / "data")
    store = open_store(cfg)
    _call_with_personal_data(text_engines, store, "export-1")
    store.close()
    toml = tmp_path / "callbot.toml"
    toml.write_text(f'[paths]\ndata = "{tmp_path / "data"}"\n')

    r = _cli(toml, "transcripts", "export")
    assert r.returncode == 0, r.stderr
    assert "1 call(s) exported (redacted)" in r.stderr
    assert [s for s in SECRETS if s in r.stdout] == [], r.stdout
    row = json.loads(r.stdout)
    assert row["caller_number"] == NUMBER and row["transfer_reason"] == "personal_case"
    assert any(t["intent"] == "siren_non_recu" for t in row["turns"])   # still analysable
    assert {t["dtmf"] for t in row["turns"] if t["dtmf"]} == {"*"}      # the keys typed
    assert SAID in r.stdout and "un conseiller va examiner" in r.stdout  # the bot's words too

    out = tmp_path / "exports" / "calls.csv"
    out.parent.mkdir()
    r = _cli(toml, "transcripts", "export", "--format", "csv", "--no-redact", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert "WITH personal data" in r.stderr
    text = out.read_text(encoding="utf-8")
    assert "jean dupont" in text and CALLER in text, text    # (CSV has no summary column)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600

    r = _cli(toml, "transcripts", "export", "--out", str(tmp_path / "missing" / "x.jsonl"))
    assert r.returncode != 0 and "cannot write the export" in r.stderr

    buf = io.StringIO()                        # the library's default is redacted too
    store = open_store(cfg)
    write_jsonl(store.iter_calls(), buf)
    store.close()
    assert SIREN not in buf.getvalue() and "dupont" not in buf.getvalue()


def test_only_an_editor_exports_personal_data_from_the_console(config, text_engines, tmp_path):
    users = (ConsoleUser("alice", "editor", hash_password(PASSWORDS["alice"])),
             ConsoleUser("bob", "readonly", hash_password(PASSWORDS["bob"])))
    cfg = _data_config(config, tmp_path / "data")
    cfg = dataclasses.replace(cfg, console=dataclasses.replace(cfg.console, users=users))
    store = open_store(cfg)
    _call_with_personal_data(text_engines, store, "console-1")
    assert may_export_unredacted("editor") and not may_export_unredacted("readonly")
    with serving(create_app(cfg, store)) as base:
        bob = Client(base)
        assert bob.login("bob").status == 303
        assert "redact=0" not in bob.get("/calls").text
        r = bob.get("/export?format=jsonl")
        assert r.status == 200 and "attachment" in r.header("content-disposition")
        assert [s for s in SECRETS if s in r.text] == [] and "console-1" in r.text
        r = bob.get("/export?format=csv&redact=0")
        assert r.status == 403 and "read-only" in r.text and SIREN not in r.text
        alice = Client(base)
        assert alice.login("alice").status == 303
        assert "redact=0" in alice.get("/calls").text
        r = alice.get("/export?format=jsonl&redact=0")
        assert r.status == 200 and all(s in r.text for s in SECRETS), r.text
        assert alice.get("/export?format=xml").status == 400
        assert Client(base).get("/export").status == 303      # anonymous: to the login page
    store.close()


# --- logs -----------------------------------------------------------------------------------
PERSONAL_KEYS = {"caller", "bot", "dtmf", "digit", "text", "events", "headers", "context"}


def _keys(record: dict) -> set[str]:
    found = set(record)
    for v in record.values():
        if isinstance(v, dict):
            found |= _keys(v)
    return found


@pytest.mark.parametrize("personal", [False, True])
def test_a_call_logs_ids_and_outcomes_only_unless_debug_personal_data(
        config, text_engines, tmp_path, personal):
    stream = io.StringIO()
    log = JsonLog(stream, personal_data=personal)
    store = open_store(_data_config(config, tmp_path / "data"))
    call = _call_with_personal_data(text_engines, store, "log-1",
                                    observers=(LogObserver(log, "log-1"),))
    store.close()
    text = stream.getvalue()
    records = [json.loads(line) for line in text.splitlines()]
    turns = [r for r in records if r["event"] == "turn"]
    ending = next(r for r in records if r["event"] == "ending")
    assert [t["kind"] for t in turns][-1] == "dtmf"            # the outcome is still there
    assert any(t["intent"] == "siren_non_recu" for t in turns)
    assert ending["type"] == "transfer" and ending["reason"] == "personal_case"
    assert ending["siren_given"] is True
    secrets = [*SECRETS, SAID, call["summary"], "7 3 2"]
    if personal:
        assert [s for s in secrets[:-1] if s != CALLER and s not in text] == [], text
        assert "".join(t["dtmf"] for t in turns if t.get("dtmf")) == SIREN
    else:
        assert [s for s in secrets if s in text] == [], text
        assert set().union(*map(_keys, records)) & PERSONAL_KEYS == set()


@pytest.fixture
def sip_worker(tmp_path, request, config):
    from telephony.testing import WorkerProcess, free_port

    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    personal = request.param
    cfg = tmp_path / "callbot.toml"
    cfg.write_text(f"""
[paths]
data = "{tmp_path / 'data'}"

[sip]
max_calls = 2
rtp_port_range = 20

[transfer]
queue_uri = "sip:conseillers@127.0.0.1:{free_port('udp')}"
refer_timeout_s = 5.0

[transcripts]
debug_personal_data = {'true' if personal else 'false'}
""")
    rtp = 20000 + (os.getpid() % 400) * 100 + 60
    w = WorkerProcess(cfg, free_port(), rtp, tmp_path)
    w.data, w.personal = tmp_path / "data", personal
    try:
        w.wait_for(lambda e: e["event"] == "ready", timeout=90)
        yield w
    finally:
        w.stop()


@pytest.mark.parametrize("sip_worker", [False, True], indirect=True, ids=["default", "debug"])
def test_a_sip_worker_logs_no_personal_data_by_default(sip_worker, config):
    from telephony.testing import first, run_caller

    w = sip_worker
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{w.port}", "--dtmf", "0",
                            "--refuse-transfer", "--timeout", "60")
    assert rc == 0, events
    call_id = first(events, "transfer_request")["headers"]["X-Callbot-Call-Id"]
    w.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call_id, timeout=30)
    mine = [e for e in w.events if e.get("call") == call_id]
    store = open_store(_data_config(config, w.data))
    deadline = time.monotonic() + 10
    while (row := store.find_call(call_id)) is None or row["outcome"] is None:
        assert time.monotonic() < deadline, "the call's transcript was not written"
        time.sleep(0.2)
    store.close()
    text = json.dumps(mine, ensure_ascii=False)
    refer = next(e for e in mine if e["event"] == "refer")
    assert refer["reason"] == "caller_request" and refer["intent"] == "parler_conseiller"
    dtmf = next(e for e in mine if e["event"] == "dtmf")
    transcript = next(e for e in mine if e["event"] == "transcript")
    assert transcript["id"] == row["id"]
    if w.personal:
        assert dtmf["digit"] == "0" and transcript["caller"] == row["caller_number"]
        assert refer["headers"]["X-Callbot-Summary"] not in ("", "-")
        assert any(e.get("bot") for e in mine if e["event"] == "turn")
    else:
        assert set().union(*map(_keys, mine)) & PERSONAL_KEYS == set(), mine
        assert row["summary"] not in text and "X-Callbot-Summary" not in text


# --- the knowledge base ---------------------------------------------------------------------
def test_utterances_added_to_the_kb_are_redacted_first(config, tmp_path):
    kb = tmp_path / "kb"
    shutil.copytree(config.paths.kb, kb)
    said = ("bonjour je m'appelle jean dupont mon siren c'est le 732 829 320 et mon mail "
            "jean.dupont@orange.fr j'ai jamais reçu le papier de l'insee")
    added = add_phrasing(kb, "siren_non_recu", said, "alice", "call-42")
    assert added.added
    written = added.path.read_text(encoding="utf-8")
    day = time.strftime("%Y-%m-%d")
    assert written.endswith(f"# console {day} by alice, call call-42\n{added.text}\n")
    for secret in ("jean", "dupont", "732", "sept cent", "orange", "numéro", "[", "]"):
        assert secret not in added.text, (secret, added.text)
    assert "siren" in added.text and "jamais reçu le papier de l'insee" in added.text
    with pytest.raises(KbEditError, match="personal data"):
        add_phrasing(kb, "siren_non_recu", "06 12 34 56 78", "alice", "call-43")
    assert "06 12" not in added.path.read_text(encoding="utf-8")


# --- purge ----------------------------------------------------------------------------------
def test_purge_removes_orphan_turns_and_recordings(store_config, text_engines):
    cfg = dataclasses.replace(store_config, recording=dataclasses.replace(
        store_config.recording, enabled=True))
    store = open_store(cfg)
    now = time.time()
    run_call(text_engines, store, "kept", [("say", "au revoir")])
    assert store.flush()
    kept_wav = store.recordings / store.get_call("kept")["recording"]
    old = now - 3 * 86400

    def orphans(conn):
        for seq, at in ((1, old), (2, old), (3, now)):
            conn.execute("INSERT INTO turns (call_id, seq, at, speaker, kind, text) VALUES "
                         "(?, ?, ?, 'caller', 'speech', ?)",
                         ("deleted-call", seq, at, "je m'appelle jean dupont"))
        conn.execute("INSERT INTO reviews (call_id, seq, action, by_user, at) VALUES "
                     "(?, 1, 'dismissed', 'alice', ?)", ("deleted-call", old))
    store.write(orphans)
    day = kept_wav.parent
    stray_old, stray_new = day / "stray-old.wav", day / "stray-new.wav"
    for p in (stray_old, stray_new):
        p.write_bytes(b"RIFF")
    os.utime(stray_old, (old, old))
    os.utime(kept_wav, (old, old))             # old, but its call is there: kept
    store.close()

    report = purge(cfg)
    assert (report.calls, report.orphan_turns, report.recordings) == (0, 2, 1)
    assert report.turns == 2
    assert not stray_old.exists() and stray_new.exists() and kept_wav.exists()
    store = open_store(cfg)
    left = store.read(lambda c: c.rows("SELECT seq FROM turns WHERE call_id = ?",
                                       ("deleted-call",)))
    assert [r["seq"] for r in left] == [3]      # younger than a call can last: not yet
    assert store.read(lambda c: c.scalar("SELECT COUNT(*) FROM reviews")) == 0
    assert len(store.turns("kept")) == 3
    if store.db.kind == "sqlite":
        assert store.read(lambda c: c.scalar("PRAGMA secure_delete")) == 1
    store.close()


# --- file permissions -----------------------------------------------------------------------
def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_database_recordings_and_folders_are_owner_only(config, text_engines, tmp_path):
    data = tmp_path / "new" / "data"
    cfg = _data_config(config, data, recording=True)
    old = os.umask(0o022)          # the usual umask, which alone would give 0644 and 0755
    try:
        store = open_store(cfg)
        run_call(text_engines, store, "perm-1", [("say", "au revoir")], caller=CALLER)
        assert store.flush()
        wav = store.recordings / store.get_call("perm-1")["recording"]
        db = store.db.path
        files = [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), wav]
        assert all(f.exists() for f in files), files
        assert {str(f): _mode(f) for f in files} == {str(f): 0o600 for f in files}
        folders = [tmp_path / "new", data, store.recordings, wav.parent]
        assert {str(d): _mode(d) for d in folders} == {str(d): 0o700 for d in folders}
        store.close()
    finally:
        os.umask(old)
    # a database file from before (world-readable) is made owner-only when opened
    db.chmod(0o644)
    open_store(cfg).close()
    assert _mode(db) == 0o600
