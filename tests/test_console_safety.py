"""The supervisor console under abuse, and what it shows of callers' waits: the lockout
against parallel guessing, the bounded lockout table, the review grouping off the request
path, scrypt hashes upgraded at login, logins that survive a restart of the console (real
process, SQLite and PostgreSQL), read-only users (redacted transcripts, no recordings) and
the caller-perceived latency on the dashboard, in a real browser (Debian's chromium)."""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from pg_server import free_port
from test_console import PASSWORDS, ROOT, Client, _login, browser, serving  # noqa: F401
from transcript_calls import run_call

from callbot.config import Config, ConsoleUser
from callbot.console.app import create_app
from callbot.console.grouping import ReviewGroups
from callbot.console.lockout import LoginGuard
from callbot.console.passwords import N, hash_password, needs_upgrade, verify_password
from callbot.console.review import cluster
from callbot.events import Final, Say, Turn, TurnDecided
from callbot.transcripts import CallInfo, CallRecorder, open_store, writes
from callbot.transcripts.records import local_day
from callbot.transcripts.redact import NUMBER

WRONG = "Wrong user name or password"
BUSY = "busy checking other logins"
SIREN_WORDS = "sept cent trente deux huit cent vingt neuf trois cent vingt"


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {name: hash_password(pw) for name, pw in PASSWORDS.items()}


def _cfg(config: Config, data: Path, hashes: dict[str, str], url: str = "",
         **console) -> Config:
    users = (ConsoleUser("alice", "editor", hashes["alice"]),
             ConsoleUser("bob", "readonly", hashes["bob"]))
    return dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=data),
        transcripts=dataclasses.replace(config.transcripts, url=url),
        recording=dataclasses.replace(config.recording, enabled=True),
        console=dataclasses.replace(config.console, **{"users": users, **console}))


# --- lockout -----------------------------------------------------------------------------------

def _burst(base: str, names: list[str], addresses: list[str]) -> list:
    """Wrong-password POSTs sent at once, one thread each (each from its own address, as a
    trusted proxy says with X-Forwarded-For)."""
    clients = [Client(base) for _ in names]
    tokens = [c.csrf("/login") for c in clients]
    start = threading.Barrier(len(names))
    out: list = [None] * len(names)

    def post(i: int) -> None:
        start.wait()
        out[i] = clients[i].post("/login", {"csrf": tokens[i], "name": names[i],
                                            "password": f"guess number {i}", "next": "/"},
                                 headers={"X-Forwarded-For": addresses[i]})
    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(names))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def _login_from(base: str, name: str, address: str):
    c = Client(base)
    token = c.csrf("/login")
    return c.post("/login", {"csrf": token, "name": name, "password": PASSWORDS[name],
                             "next": "/"}, headers={"X-Forwarded-For": address})


def test_parallel_guesses_get_at_most_max_failures_checks(config, tmp_path, hashes):
    cfg = _cfg(config, tmp_path / "data", hashes, max_failures=5, lockout_minutes=15)
    store = open_store(cfg)
    with serving(create_app(cfg, store)) as base:
        # one account, guessed from 20 addresses at once: the user name's count holds
        got = _burst(base, ["alice"] * 20, [f"127.0.0.{10 + i}" for i in range(20)])
        checked = [r for r in got if WRONG in r.text]
        # 5 attempts counted: each checked, or given up on a loaded machine (busy)
        admitted = [r for r in got if WRONG in r.text or BUSY in r.text]
        assert len(checked) <= 5 and len(admitted) == 5
        assert all(r.status == 429 and "Too many failed attempts" in r.text
                   for r in got if r not in admitted)
        r = _login_from(base, "alice", "127.0.0.99")     # the right password, too late
        assert r.status == 429 and WRONG not in r.text
        # one address spraying 20 names at once: the address's count holds
        got = _burst(base, [f"nobody{i}" for i in range(20)], ["127.0.0.50"] * 20)
        assert sum(WRONG in r.text for r in got) <= 5
        assert sum(WRONG in r.text or BUSY in r.text for r in got) == 5
        assert _login_from(base, "bob", "127.0.0.50").status == 429
        assert _login_from(base, "bob", "127.0.0.51").status == 303   # bob is not locked
    store.close()


def test_lockout_table_stays_bounded_and_forgets():
    guard = LoginGuard(max_failures=3, lockout_s=0.5, cap=1000)
    for i in range(100_000):
        assert guard.admit(f"user:n{i}", f"addr:n{i}") == 0
        assert len(guard) <= 1000
    for _ in range(3):
        assert guard.admit("user:alice") == 0
    assert guard.admit("user:alice") > 0            # locked: not counted, not checked
    time.sleep(0.6)                                 # the lockout runs out
    assert guard.admit("user:alice") == 0
    guard.succeeded("user:alice")                   # a success forgets the count
    for _ in range(2):
        assert guard.admit("user:alice") == 0
    assert guard.locked_for("user:alice") == 0


# --- password hashes ----------------------------------------------------------------------------

def test_new_hashes_are_n_2_17(tmp_path):
    assert N == 2 ** 17
    r = subprocess.run([sys.executable, "-m", "callbot", "console", "hash-password"],
                       input="a long enough password\n", capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    hashed = r.stdout.strip()
    assert hashed.startswith("scrypt$131072$8$1$") and not needs_upgrade(hashed)
    assert verify_password("a long enough password", hashed)
    assert needs_upgrade(hash_password("x" * 10, n=2 ** 14))


def test_old_hash_accepted_and_upgraded_at_login(store_config, hashes):
    old = hash_password(PASSWORDS["alice"], n=2 ** 14)
    cfg = _cfg(store_config, store_config.paths.data, {**hashes, "alice": old},
               url=store_config.transcripts.url)
    store = open_store(cfg)
    upgraded = lambda: store.read(lambda conn: conn.one(            # noqa: E731
        "SELECT password_hash, replaces FROM console_users WHERE name = 'alice'"))
    with serving(create_app(cfg, store)) as base:
        assert Client(base).login("alice", "not her password").status == 401
        assert upgraded() is None                      # a failed login upgrades nothing
        assert Client(base).login("alice").status == 303
        row = upgraded()
        assert row["replaces"] == old and row["password_hash"].startswith("scrypt$131072$")
        assert verify_password(PASSWORDS["alice"], row["password_hash"])
        assert Client(base).login("alice").status == 303           # with the upgraded hash
        assert upgraded() == row                                   # upgraded once
    # a new hash put in the file (a password reset) wins over the stored upgrade
    reset = dataclasses.replace(cfg, console=dataclasses.replace(cfg.console, users=(
        ConsoleUser("alice", "editor", hash_password("a brand new secret")),)))
    with serving(create_app(reset, store)) as base:
        assert Client(base).login("alice").status == 401
        assert Client(base).login("alice", "a brand new secret").status == 303
    store.close()


# --- sessions in the database -------------------------------------------------------------------

def _console_process(cfg_file: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "callbot", "--config", str(cfg_file),
                             "console"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert f"http://127.0.0.1:{port}/" in line, proc.stderr.read() if proc.poll() else line
    deadline = time.time() + 30
    while True:
        try:
            Client(f"http://127.0.0.1:{port}").get("/login")
            return proc
        except OSError:
            assert time.time() < deadline and proc.poll() is None, proc.stderr.read()
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(15)


def test_logins_survive_a_restart_and_expire(store_config, hashes, config, tmp_path):
    data = store_config.paths.data
    url = store_config.transcripts.url
    cfg_file = tmp_path / "console.toml"
    port = free_port()
    cfg_file.write_text(
        f'[paths]\ndata = "{data}"\nkb = "{config.paths.kb}"\n'
        f'[transcripts]\nurl = "{url}"\n'
        f'[console]\nport = {port}\nidle_minutes = 20\nsession_minutes = 480\n'
        f'[[console.users]]\nname = "alice"\nrole = "editor"\n'
        f'password_hash = "{hashes["alice"]}"\n')
    base = f"http://127.0.0.1:{port}"
    store = open_store(store_config)
    proc = _console_process(cfg_file, port)
    try:
        alice = Client(base)
        assert alice.login("alice").status == 303
        token = alice.token
        rows = store.read(lambda conn: conn.rows("SELECT * FROM console_sessions"))
        assert [r["token_hash"] for r in rows] == [hashlib.sha256(token.encode()).hexdigest()]
        assert token not in str(rows)                  # the token itself is not stored
    finally:
        _stop(proc)
    proc = _console_process(cfg_file, port)            # a new process: nothing in memory
    try:
        page = alice.get("/")
        assert page.status == 200 and "alice · editor" in page.text
        # idle for longer than idle_minutes: refused, and the row is gone
        store.write(lambda conn: conn.execute(
            "UPDATE console_sessions SET last_seen = last_seen - 21 * 60"))
        r = alice.get("/")
        assert r.status == 303 and r.header("location").startswith("/login")
        assert store.read(lambda conn: conn.scalar("SELECT COUNT(*) FROM console_sessions")) == 0
        # past session_minutes, however active
        assert alice.login("alice").status == 303
        assert alice.get("/").status == 200
        store.write(lambda conn: conn.execute(
            "UPDATE console_sessions SET expires_at = ?", (time.time() - 1,)))
        assert alice.get("/").status == 303
    finally:
        _stop(proc)
    store.close()


# --- review grouping ------------------------------------------------------------------------

class Gate:
    """The real clustering, held until the test opens the gate, and counted."""

    def __init__(self):
        self.open = threading.Event()
        self.calls = 0

    def __call__(self, items):
        self.calls += 1
        assert self.open.wait(60), "the test never opened the gate"
        return cluster(items)


def _items(texts: list[str]) -> list[dict]:
    return [{"call_id": "c", "seq": i, "text": t, "at": i, "decision": "reject",
             "alternatives": [["hors_sujet", .9], ["obtenir_kbis", .1]]}
            for i, t in enumerate(texts)]


def test_review_grouping_cached_and_computed_in_the_background():
    items = _items(["je voudrais payer mes cotisations urssaf", "payer cotisations urssaf",
                    "quelle heure ouvre la mairie", "la mairie ouvre à quelle heure"])
    gate = Gate()
    groups = ReviewGroups(gate)
    first = groups.get(items)          # returns while the clustering is held
    assert not first.ready and [g.size for g in first.groups] == [1, 1, 1, 1]
    gate.open.set()
    assert groups.wait(60)
    again = groups.get(items)
    assert again.ready and [g.size for g in again.groups] == [2, 2]
    assert groups.get(list(items)).ready and gate.calls == 1      # same queue: no new run
    # one utterance handled, one new: the old grouping refitted at once, then recomputed
    gate.open.clear()
    new = {**items[1], "seq": 99, "at": 99, "text": "payer les cotisations urssaf"}
    changed = items[1:] + [new]
    now = groups.get(changed)
    assert not now.ready
    assert sorted(g.size for g in now.groups) == [1, 1, 2]
    assert all("c|0" not in g.keys for g in now.groups)
    gate.open.set()
    assert groups.wait(60) and gate.calls == 2
    assert sorted(g.size for g in groups.get(changed).groups) == [2, 2]


def test_review_page_never_waits_for_the_grouping(config, tmp_path, hashes, text_engines):
    cfg = _cfg(config, tmp_path / "data", hashes)
    store = open_store(cfg)
    lost = "on est partis de la rue du port"
    run_call(text_engines, store, "c-lost", [("say", lost), ("say", "la météo de demain")])
    assert store.flush()
    app = create_app(cfg, store)
    gate = Gate()
    app.state.console.groups = ReviewGroups(gate)
    with serving(app) as base:
        c = Client(base)
        c.login("alice")
        page = c.get("/review")                        # the clustering is held meanwhile
        assert page.status == 200 and 'id="grouping"' in page.text and lost in page.text
        gate.open.set()
        assert app.state.console.groups.wait(60)
        page = c.get("/review")
        assert 'id="grouping"' not in page.text and lost in page.text
        assert gate.calls == 1
    store.close()


# --- caller-perceived latency ---------------------------------------------------------------

def test_recorder_stores_the_end_of_turn_wait(config, tmp_path):
    cfg = dataclasses.replace(config, paths=dataclasses.replace(config.paths,
                                                                data=tmp_path / "data"),
                              transcripts=dataclasses.replace(config.transcripts, url=""))
    store = open_store(cfg)
    rec = CallRecorder(store, CallInfo("c-wait"))
    rec.on_event(Final("bonjour", 0.9, "whisper", 1200, 151.5, at_ms=2000, silence_ms=640))
    rec.on_event(TurnDecided(Turn("bonjour", [Say("Bonjour.", "prompt:hello")],
                                  decision="reject"), 2000, 21.25, 151.5, 1200))
    rec.on_event(TurnDecided(Turn("au revoir", [Say("Au revoir.", "prompt:bye")],
                                  decision="reject"), 3000, 9.0, None, None))  # no audio
    rec.close()
    assert store.flush()
    caller = [t for t in store.turns("c-wait") if t["speaker"] == "caller"]
    assert [(t["endpoint_ms"], t["decode_ms"], t["latency_ms"]) for t in caller] == [
        (640, 151.5, 21.25), (None, None, 9.0)]
    store.close()


def test_browser_dashboard_shows_caller_wait_percentiles(config, tmp_path, hashes, browser):
    from playwright.sync_api import expect

    cfg = _cfg(config, tmp_path / "data", hashes)
    store = open_store(cfg)
    rng = np.random.default_rng(12)
    n = 40
    end = rng.integers(200, 900, n).astype(float)
    decode = np.round(rng.uniform(80, 2500, n), 2)
    answer = np.round(rng.uniform(3, 400, n), 2)
    now = time.time()
    rows = []
    for i in range(n):
        rows.append({"call_id": "c-lat", "seq": i + 1, "at": now, "speaker": "caller",
                     "kind": "speech", "text": "bonjour", "decision": "reject",
                     # the first three were recorded before the end-of-turn wait was stored
                     "endpoint_ms": None if i < 3 else end[i],
                     "decode_ms": decode[i], "latency_ms": answer[i]})
    rows.append({"call_id": "c-lat", "seq": n + 1, "at": now, "speaker": "caller",
                 "kind": "speech", "text": "euh", "endpoint_ms": 5000.0, "decode_ms": 9000.0,
                 "latency_ms": None})                  # not answered: no wait to count
    store.write(partial(writes.insert_call, {"id": "c-lat", "started_at": now,
                                              "day": local_day(now)}))
    store.write(partial(writes.insert_turns, rows, "c-lat", n, 0))
    total = (end + decode + answer)[3:]
    expected = {"total": total, "end_of_turn": end[3:], "recognition": decode,
                "answer": answer}
    with serving(create_app(cfg, store)) as base:
        ctx = browser.new_context()
        page = ctx.new_page()
        _login(page, base, "alice")
        page.goto(base + "/?days=7")
        for part, values in expected.items():
            row = page.locator(f"#wait-{part}")
            expect(row.locator(".p50")).to_have_text(f"{np.percentile(values, 50):.0f} ms")
            expect(row.locator(".p95")).to_have_text(f"{np.percentile(values, 95):.0f} ms")
            expect(row.locator(".n")).to_have_text(str(len(values)))
        expect(page.locator("#kpi-latency")).to_have_text(
            f"{np.percentile(total, 50):.0f} / {np.percentile(total, 95):.0f} ms")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        ctx.close()
    store.close()


# --- read-only users -------------------------------------------------------------------------

def test_browser_read_only_user_sees_redacted_transcripts_and_no_recording(
        config, tmp_path, hashes, text_engines, browser):
    from playwright.sync_api import expect

    cfg = _cfg(config, tmp_path / "data", hashes)
    store = open_store(cfg)
    run_call(text_engines, store, "c-siren", [("say", "je n'ai jamais reçu mon numéro siren"),
                                              ("say", SIREN_WORDS)], caller="+33612345670")
    assert store.flush()
    assert (store.recordings / store.get_call("c-siren")["recording"]).is_file()
    with serving(create_app(cfg, store)) as base:
        ctx = browser.new_context()
        page = ctx.new_page()
        _login(page, base, "bob")
        page.goto(base + "/call?id=c-siren")
        turns = page.locator("table.turns")
        expect(turns).to_contain_text(NUMBER)
        expect(turns).not_to_contain_text(SIREN_WORDS)
        expect(page.locator("body")).not_to_contain_text("732829320")
        expect(page.locator("audio")).to_have_count(0)
        expect(page.get_by_role("link", name="Download the recording")).to_have_count(0)
        r = page.request.get(base + "/call/recording?id=c-siren")
        assert r.status == 403 and "read-only" in r.text()
        ctx.close()

        ctx = browser.new_context()
        page = ctx.new_page()
        _login(page, base, "alice")
        page.goto(base + "/call?id=c-siren")
        expect(page.locator("table.turns")).to_contain_text(SIREN_WORDS)
        expect(page.locator("audio")).to_have_count(1)
        r = page.request.get(base + "/call/recording?id=c-siren")
        assert r.status == 200 and r.headers["content-type"] == "audio/wav"
        ctx.close()
    store.close()
