"""Callback requests after a failed transfer: the dialogue's offer (scripted classifier),
a whole call through the session with the real models recorded in SQLite and PostgreSQL,
the store's queries and the command line, the console's "Rappels" page in Chromium, and a
real SIP call whose transfer the caller's phone refuses, ending in a row of the database."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
from scripted import ScriptedClassifier
from test_console import Client, _login, _site_config, browser, serving
from test_transcripts import _cli
from transcript_calls import tick, until_quiet

from callbot.console.app import create_app
from callbot.dialogue import Dialogue, State
from callbot.events import CallbackRequested, HangUp, Say, Transfer
from callbot.phone import french_number, spoken_pairs
from callbot.session import CallSession
from callbot.transcripts import TRANSFERRED, CallInfo, CallRecorder, open_store

__all__ = ["browser"]   # the Chromium fixture of test_console, shared

SCRIPT = {
    "je voudrais parler à un conseiller s'il vous plaît": "parler_conseiller",
    "ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon numéro "
    "siren": "siren_non_recu",
    "au revoir": "au_revoir",
    "je sais pas trop": "hors_sujet",
    "la météo de demain": "hors_sujet",
}
ADVISOR = "je voudrais parler à un conseiller s'il vous plaît"


def keys(turn):
    return [e.key for e in turn.events if isinstance(e, Say)]


def callbacks(turn):
    return [e for e in turn.events if isinstance(e, CallbackRequested)]


def hang_up(turn):
    ends = [e for e in turn.events if isinstance(e, HangUp)]
    return ends[0].reason if ends else None


@pytest.fixture
def dlg(kb, config):
    d = Dialogue(kb, ScriptedClassifier(SCRIPT), config.dialogue)
    d.start()
    return d


def _transferred(d: Dialogue) -> Transfer:
    turn = d.hear(ADVISOR)
    assert isinstance(turn.ending, Transfer) and d.state is State.ENDED
    return turn.ending


# --- the dialogue ----------------------------------------------------------------------------

def test_phone_numbers():
    assert french_number("+33612345678") == "0612345678"
    assert french_number("0033 1 44 55 66 77") == "0144556677"
    assert french_number("06.12.34.56.78") == "0612345678"
    for bad in ("anonymous", "", "caller", "1234567890", "0012345678", "061234567",
                "06123456789", "+4915112345678"):
        assert french_number(bad) is None, bad
    assert spoken_pairs("0612345678") == ["zéro six", "douze", "trente quatre",
                                          "cinquante six", "soixante dix huit"]


def test_failed_transfer_offers_a_callback_on_the_callers_number(dlg):
    _transferred(dlg)
    turn = dlg.transfer_failed("486 Busy Here", "+33612345678")
    assert keys(turn) == ["prompt:callback_offer"] and dlg.state is State.CALLBACK_OFFER
    assert turn.ending is None and turn.decision == "transfer_failed"
    text = turn.bot_text
    assert "rappelle" in text and "oui ou non" in text
    turn = dlg.hear("oui")
    assert keys(turn) == ["prompt:callback_confirm"] + ["number"] * 5 + [
        "prompt:callback_confirm_end"] and turn.intent == "oui"
    assert "rappellera au zéro six douze trente quatre cinquante six soixante dix huit Nos" \
        in turn.bot_text and "au revoir" in turn.bot_text
    [cb] = callbacks(turn)
    assert (cb.number, cb.source, cb.reason, cb.intent, cb.siren) == (
        "0612345678", "caller_id", "486 Busy Here", "parler_conseiller", None)
    assert "conseiller" in cb.summary
    assert hang_up(turn) == "callback_requested" and dlg.state is State.ENDED


def test_a_withheld_number_is_typed_on_the_keypad(dlg):
    _transferred(dlg)
    dlg.transfer_failed("timeout", "anonymous")
    turn = dlg.key("1")                                   # 1: yes
    assert keys(turn) == ["prompt:callback_number_ask"] and dlg.state is State.CALLBACK_NUMBER
    assert dlg.key("0").events == [] and dlg.key("0").events == []   # "0" is a digit here
    dlg.key("*")                                          # start again
    for digit in "014455667":
        assert dlg.key(digit).events == []
    turn = dlg.key("7")                                   # the tenth digit
    [cb] = callbacks(turn)
    assert (cb.number, cb.source, cb.reason) == ("0144556677", "keypad", "timeout")
    assert hang_up(turn) == "callback_requested"


def test_a_number_said_aloud_counts_too(dlg):
    _transferred(dlg)
    dlg.transfer_failed("timeout", None)
    dlg.hear("oui je veux bien")
    turn = dlg.hear("zéro six douze trente-quatre")
    assert turn.events == [] and turn.decision == "capture"
    [cb] = callbacks(dlg.hear("cinquante-six soixante-dix-huit"))
    assert cb.number == "0612345678"


def test_a_wrong_number_twice_ends_without_a_callback(dlg, config):
    assert config.dialogue.number_attempts == 2
    _transferred(dlg)
    dlg.transfer_failed("480 Temporarily Unavailable", None)
    dlg.key("1")
    for digit in "12345#":
        turn = dlg.key(digit)
    assert keys(turn) == ["prompt:callback_number_invalid"]
    assert dlg.state is State.CALLBACK_NUMBER
    for digit in "1234567890":                            # ten digits, not a French number
        turn = dlg.key(digit)
    assert keys(turn) == ["prompt:callback_number_skip"] and not callbacks(turn)
    assert hang_up(turn) == "callback_no_number"


@pytest.mark.parametrize("answer", ["non", "non merci", "2", "au revoir"])
def test_no_callback_says_the_opening_hours(dlg, answer):
    _transferred(dlg)
    dlg.transfer_failed("486 Busy Here", "0612345678")
    turn = dlg.key(answer) if answer.isdigit() else dlg.hear(answer)
    assert keys(turn) == ["prompt:callback_declined"] and not callbacks(turn)
    assert "9 heures" in turn.bot_text and hang_up(turn) == "callback_declined"


def test_unclear_answers_and_silences_repeat_the_offer(dlg, config):
    _transferred(dlg)
    dlg.transfer_failed("timeout", "0612345678")
    turn = dlg.hear("je sais pas trop")
    assert keys(turn) == ["prompt:callback_offer_again"] and dlg.state is State.CALLBACK_OFFER
    assert "tapez 1" in turn.bot_text
    assert keys(dlg.key("5")) == ["prompt:callback_offer_again"]
    assert keys(dlg.silence()) == ["prompt:callback_offer_again"]
    turn = dlg.silence()
    assert keys(turn) == ["prompt:no_input_goodbye"] and hang_up(turn) == "no_input"
    assert not callbacks(turn)


def test_the_siren_given_before_the_transfer_goes_with_the_request(dlg):
    dlg.hear("ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon "
             "numéro siren")
    turn = dlg.hear("sept cent trente deux huit cent vingt neuf trois cent vingt")
    assert turn.ending.context.siren == "732829320"
    dlg.transfer_failed("486 Busy Here", "0612345678")
    [cb] = callbacks(dlg.key("1"))
    assert (cb.intent, cb.siren) == ("siren_non_recu", "732829320")
    assert "SIREN 732829320" in cb.summary


def test_only_a_transfer_can_fail(dlg):
    assert dlg.transfer_failed("timeout", "0612345678").events == []   # mid-call
    assert dlg.state is State.QUESTION
    dlg.hear("au revoir")                                 # hung up
    assert dlg.state is State.ENDED
    assert dlg.transfer_failed("timeout", "0612345678").events == []
    assert dlg.state is State.ENDED


def test_a_turn_taken_back_restores_the_number_typed_so_far(dlg):
    _transferred(dlg)
    dlg.transfer_failed("timeout", None)
    dlg.key("1")
    for digit in "0612":
        dlg.key(digit)
    snap = dlg.snapshot()
    dlg.key("*")
    dlg.restore(snap)
    assert dlg.state is State.CALLBACK_NUMBER and dlg.digits == "0612"
    for digit in "345678":
        turn = dlg.key(digit)
    assert callbacks(turn)[0].number == "0612345678"


# --- a whole call, recorded (real models, real SQLite and PostgreSQL) --------------------------

def _call(engines, store, call_id: str, caller: str | None, after_failure: list[tuple],
          at: float | None = None, metrics=None) -> CallRecorder:
    """The caller asks for an advisor, the transfer fails, then ``after_failure`` (("say",
    text) or ("dtmf", keys)), until the bot hangs up."""
    info = CallInfo(call_id, f"sip-{call_id}", caller, "test-worker",
                    at if at is not None else time.time())
    recorder = CallRecorder(store, info)
    metered = metrics.call() if metrics is not None else None
    session = CallSession(engines, call_id, observers=[recorder] + ([metered] if metered
                                                                      else []))
    session.start()
    until_quiet(session)
    session.hear(ADVISOR)
    until_quiet(session)
    tick(session)
    assert session.ended.is_set() and isinstance(session.ending, Transfer)
    recorder.transfer_result("sip:conseillers@127.0.0.1:5090", "failed: 486 Busy Here")
    turn = session.transfer_failed("486 Busy Here", caller)
    assert keys(turn) == ["prompt:callback_offer"] and not session.ended.is_set()
    for kind, value in after_failure:
        until_quiet(session)
        tick(session)
        if kind == "say":
            session.hear(value)
        else:
            for digit in value:
                session.dtmf(digit)
    end = session.clock_ms + 60_000
    while not session.ended.is_set() and session.clock_ms < end:
        tick(session)
    assert session.ended.is_set() and isinstance(session.ending, HangUp)
    recorder.close()
    if metered is not None:
        metered.transfer("caller_request", "failed")
        metered.close()
    return recorder


def test_a_call_with_a_failed_transfer_leaves_a_callback_request(store_config, text_engines,
                                                                 tmp_path):
    from prometheus_client import CollectorRegistry

    from callbot.metrics import Metrics

    store = open_store(store_config)
    metrics = Metrics(CollectorRegistry())
    _call(text_engines, store, "cb-caller-id", "+33612345678", [("say", "oui s'il vous plaît")],
          metrics=metrics)
    _call(text_engines, store, "cb-keypad", "anonymous",
          [("dtmf", "1"), ("dtmf", "0144556677")], metrics=metrics)
    _call(text_engines, store, "cb-declined", "+33699999999", [("say", "non merci")],
          metrics=metrics)
    _call(text_engines, store, "cb-old", "+33655555555", [("dtmf", "1")],
          at=time.time() - 400 * 86400, metrics=metrics)
    assert store.flush()
    # counted as they happen: three requests, four calls that stay transfers
    r = metrics.registry
    assert r.get_sample_value("callbot_callback_requests_total") == 3
    assert r.get_sample_value("callbot_calls_total", {"outcome": "transferred"}) == 4
    assert r.get_sample_value("callbot_transfers_total", {"reason": "caller_request",
                                                          "result": "failed"}) == 4

    rows = store.list_callbacks()
    assert [r["call_id"] for r in rows] == ["cb-caller-id", "cb-keypad", "cb-old"]
    first, typed = rows[0], rows[1]
    assert (first["number"], first["source"], first["reason"], first["intent"],
            first["status"]) == ("0612345678", "caller_id", "486 Busy Here",
                                 "parler_conseiller", "open")
    assert first["caller_number"] == "+33612345678" and first["sip_call_id"] == "sip-cb-caller-id"
    assert first["summary"].startswith("L'appelant a demandé un conseiller")
    assert (typed["number"], typed["source"], typed["caller_number"]) == (
        "0144556677", "keypad", "anonymous")
    assert store.callback_counts() == {"open": 3, "done": 0}

    # the call stays a transfer (tried and failed); its end says what became of it
    call = store.get_call("cb-caller-id")
    assert call["outcome"] == TRANSFERRED and call["detail"] == "callback_requested"
    assert call["transfer_result"] == "failed: 486 Busy Here"
    assert store.get_call("cb-declined")["detail"] == "callback_declined"
    offer = [t for t in store.turns("cb-caller-id") if t["answer_id"] ==
             "prompt:callback_offer"]
    assert len(offer) == 1                                # no "silence" row before it
    before = [t for t in store.turns("cb-caller-id") if t["seq"] == offer[0]["seq"] - 1]
    assert before[0]["kind"] == "say"

    assert store.mark_callback_done(first["id"], "alice") is True
    assert store.mark_callback_done(first["id"], "bob") is False     # already done
    assert store.mark_callback_done("no-such-id", "bob") is False
    assert store.callback_counts() == {"open": 2, "done": 1}
    assert [r["call_id"] for r in store.list_callbacks("open")] == ["cb-keypad", "cb-old"]
    done = store.list_callbacks("done")
    assert done[0]["done_by"] == "alice" and done[0]["done_at"] is not None
    with pytest.raises(ValueError, match="unknown callback status"):
        store.list_callbacks("closed")
    store.close()

    cfg = tmp_path / "callbot.toml"
    cfg.write_text(f'[paths]\ndata = "{store_config.paths.data}"\n'
                   f'[transcripts]\nurl = "{store_config.transcripts.url}"\n'
                   f'retention_days = 30\n')
    r = _cli(cfg, "transcripts", "callbacks", "--open", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [x["number"] for x in lines] == ["0144556677", "0655555555"]   # oldest first
    assert lines[0]["status"] == "open" and lines[0]["at"].startswith(
        time.strftime("%Y-%m-%d"))
    r = _cli(cfg, "transcripts", "callbacks")
    assert r.returncode == 0, r.stderr
    assert "0612345678" in r.stdout and "done" in r.stdout
    assert "3 shown; 2 open, 1 done in all" in r.stdout

    r = _cli(cfg, "transcripts", "purge")              # a caller's number goes with the call
    assert r.returncode == 0, r.stderr
    store = open_store(store_config)
    assert [r["call_id"] for r in store.list_callbacks()] == ["cb-caller-id", "cb-keypad"]
    store.close()


# --- the console -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def site(config, text_engines, tmp_path_factory):
    root = tmp_path_factory.mktemp("callbacks-console")
    shutil.copytree(config.paths.kb, root / "kb")
    (root / "models").mkdir()
    shutil.copy2(config.paths.models / config.nlu.model, root / "models" / config.nlu.model)
    cfg = _site_config(config, root)
    store = open_store(cfg)
    _call(text_engines, store, "cb-1", "+33612345678", [("dtmf", "1")])
    _call(text_engines, store, "cb-2", "anonymous", [("dtmf", "1"), ("dtmf", "0144556677")])
    assert store.flush()
    with serving(create_app(cfg, store)) as base:
        yield base, store
    store.close()


def test_browser_callbacks_list_and_done(site, browser):
    from playwright.sync_api import expect

    base, store = site
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    page = ctx.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    _login(page, base, "alice")
    page.get_by_role("link", name="Rappels").click()
    expect(page.locator("h1")).to_have_text("Rappels")
    expect(page.locator("#callbacks-open")).to_have_text("2")
    rows = page.locator("table.callbacks tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td.number")).to_have_text("0612345678")    # editors see it
    expect(rows.nth(1).locator("td.number")).to_contain_text("0144556677")
    expect(rows.nth(1)).to_contain_text("typed")
    expect(rows.nth(0)).to_contain_text("486 Busy Here")
    expect(rows.nth(0)).to_contain_text("parler_conseiller")
    rows.nth(0).get_by_role("button", name="Done").click()
    expect(page.locator(".flash.ok").first).to_contain_text("Callback marked done")
    expect(page.locator("#callbacks-open")).to_have_text("1")
    expect(page.locator("#callbacks-done")).to_have_text("1")
    expect(rows).to_have_count(1)
    expect(rows.nth(0).locator("td.number")).to_contain_text("0144556677")
    page.get_by_role("link", name="Done (").click()
    expect(rows.nth(0)).to_contain_text("alice")
    expect(rows.nth(0).get_by_role("button", name="Done")).to_have_count(0)
    assert store.callback_counts() == {"open": 1, "done": 1}
    assert not problems, problems
    ctx.close()

    ctx = browser.new_context()
    page = ctx.new_page()
    _login(page, base, "bob")                             # read-only
    page.goto(base + "/callbacks")
    rows = page.locator("table.callbacks tbody tr")
    expect(rows).to_have_count(1)
    expect(page.locator("td.number").first).to_contain_text("•" * 8 + "77")
    expect(page.locator("table.callbacks")).not_to_contain_text("0144556677")
    expect(page.get_by_role("button", name="Done")).to_have_count(0)
    ctx.close()


def test_a_read_only_user_cannot_mark_done(site):
    base, store = site
    open_id = store.list_callbacks("open")[0]["id"]
    c = Client(base)
    assert c.login("bob").status == 303
    token = c.csrf("/callbacks")
    r = c.post("/callbacks/done", {"csrf": token, "id": open_id})
    assert r.status == 403
    assert store.get_callback(open_id)["status"] == "open"
    c = Client(base)
    c.login("alice")
    r = c.post("/callbacks/done", {"csrf": "forged", "id": open_id})
    assert r.status == 400 and store.get_callback(open_id)["status"] == "open"


# --- a real SIP call ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def worker(tmp_path_factory, config):
    from telephony.testing import WorkerProcess, free_port

    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    d = tmp_path_factory.mktemp("sip-callback")
    cfg = d / "callbot.toml"
    cfg.write_text(f"""
[paths]
data = "{d / 'data'}"

[sip]
max_calls = 4
rtp_port_range = 40

[transfer]
queue_uri = "sip:conseillers@127.0.0.1:{free_port('udp')}"
refer_timeout_s = 8.0

[workers]
drain_timeout_s = 5.0
""")
    rtp = 28000 + (os.getpid() % 400) * 100
    w = WorkerProcess(cfg, free_port(), rtp, d)
    w.config_path = cfg
    try:
        w.wait_for(lambda e: e["event"] == "ready", timeout=60)
        yield w
    finally:
        w.stop()


def test_sip_refused_transfer_ends_in_a_stored_callback(worker, config):
    """The caller's phone refuses the REFER: the bot offers a callback, the caller (no
    number in its From: sip:caller@...) presses 1, types a number, the bot hangs up."""
    from telephony.settings import load_settings
    from telephony.testing import first, run_caller

    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}", "--dtmf", "0",
                            "--refuse-transfer", "--dtmf", "1", "--dtmf", "0612345678",
                            "--silence-ms", "2000", "--timeout", "90", timeout=120)
    assert rc == 0, events
    refer = first(events, "transfer_request")
    assert refer["accepted"] is False
    first(events, "hangup", leg="bot", by="bot")
    call_id = refer["headers"]["X-Callbot-Call-Id"]
    failed = worker.wait_for(lambda e: e["event"] == "transfer_failed"
                             and e.get("call") == call_id)
    assert failed["next"] == "callback"
    worker.wait_for(lambda e: e["event"] == "callback_requested" and e.get("call") == call_id)
    worker.wait_for(lambda e: e["event"] == "hangup" and e.get("call") == call_id)

    store = open_store(load_settings(worker.config_path, env={}).core)
    try:
        deadline = time.time() + 20
        while not store.list_callbacks() and time.time() < deadline:
            time.sleep(0.2)
        [row] = store.list_callbacks()
        assert (row["number"], row["source"], row["intent"], row["status"]) == (
            "0612345678", "keypad", "parler_conseiller", "open")
        assert row["sip_call_id"] == call_id and row["caller_number"] == "caller"
        assert row["reason"] == failed["why"]
        call = store.get_call(row["call_id"])
        assert call["transfer_result"].startswith("failed") and call["outcome"] is not None
    finally:
        store.close()


def test_callback_settings():
    from callbot.config import load_config
    from callbot.errors import ConfigError
    from telephony.settings import load_settings

    assert load_settings(env={}).transfer.callback is True
    assert load_settings(env={"CALLBOT_TRANSFER_CALLBACK": "false"}).transfer.callback is False
    assert load_config(env={}).dialogue.number_attempts == 2
    assert load_config(env={"CALLBOT_DIALOGUE_NUMBER_ATTEMPTS": "3"}
                       ).dialogue.number_attempts == 3
    with pytest.raises(ConfigError, match="dialogue.number_attempts"):
        load_config(env={"CALLBOT_DIALOGUE_NUMBER_ATTEMPTS": "0"})
