"""A caller has a company looked up over real SIP: a worker process with the real models
and a real register (imported from stock files in the official format), the pjsua2 test
caller asking aloud to have a number checked and typing the SIREN on the keypad (keys are
the reliable way to give digits over SIP), and what it heard checked against the sentences
the bot renders for that company.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest

from telephony.testing import (WorkerProcess, alaw_round_trip, first, found_fraction, free_port,
                               run_caller)

SIREN = "732829320"
# Real human French speech: "Veuillez vérifier le numéro et composer de nouveau." (a
# synthesized question is no test of recognition: Whisper base mishears espeak-ng's voice).
QUESTION_WAV = Path("/usr/share/asterisk/sounds/fr/check-number-dial-again.wav")


@pytest.fixture(scope="module")
def home(tmp_path_factory, config) -> Path:
    """A folder holding the register, the worker's configuration and its data."""
    from callbot.config import load_config
    from callbot.sirene.importer import import_files
    from callbot.sirene.testdata import write_stock

    if not QUESTION_WAV.is_file():
        pytest.fail(f"{QUESTION_WAV} missing: run `make system` (asterisk-core-sounds-fr-wav)")
    if not (config.paths.models / config.asr.whisper_model / "model.bin").is_file():
        pytest.fail("Whisper model missing: run `callbot models install --test-models`")
    d = tmp_path_factory.mktemp("sip-company")
    units = write_stock(d / "StockUniteLegale_utf8.csv", "unite_legale", [{
        "siren": SIREN, "statutDiffusionUniteLegale": "O", "dateCreationUniteLegale": "2021-03-03",
        "dateDebut": "2021-03-03", "etatAdministratifUniteLegale": "A",
        "categorieJuridiqueUniteLegale": "5499", "denominationUniteLegale": "BOULANGERIE DU PORT",
        "activitePrincipaleUniteLegale": "56.10A",
        "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2", "nicSiegeUniteLegale": "00017"}])
    etabs = write_stock(d / "StockEtablissement_utf8.csv", "etablissement", [{
        "siren": SIREN, "nic": "00017", "siret": SIREN + "00017",
        "statutDiffusionEtablissement": "O", "etablissementSiege": "true",
        "etatAdministratifEtablissement": "A", "codePostalEtablissement": "29200",
        "libelleCommuneEtablissement": "BREST"}])
    (d / "callbot.toml").write_text(f"""
[paths]
data = "{d / 'data'}"

[sirene]
path = "{d / 'sirene.sqlite3'}"

[transcripts]
debug_personal_data = true    # the test reads what the bot heard and said in its log

[sip]
max_calls = 2
rtp_port_range = 40

[transfer]
queue_uri = "sip:conseillers@127.0.0.1:{free_port('udp')}"
""")
    import_files(load_config(d / "callbot.toml", env={}), [units, etabs])
    return d


@pytest.fixture(scope="module")
def worker(home):
    w = WorkerProcess(home / "callbot.toml", free_port(), 21000 + (os.getpid() % 300) * 100,
                      home)
    try:
        w.wait_for(lambda e: e["event"] == "ready", timeout=90)
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def speech(config):
    """The bot's own speech cache (same engine and voice as the worker's)."""
    from callbot.tts import SpeechCache, cache_root, load_tts

    return SpeechCache(load_tts(config), cache_root(config))


def _transcript(home: Path, call_id: str, timeout: float = 15.0) -> dict:
    from callbot.config import load_config
    from callbot.transcripts import open_store

    base = load_config(env={})
    cfg = dataclasses.replace(base, paths=dataclasses.replace(base.paths, data=home / "data"))
    store = open_store(cfg)
    try:
        end = time.monotonic() + timeout
        while True:
            call = store.find_call(call_id)
            if call is not None and call["outcome"] is not None:
                return {**call, "turns": store.turns(call["id"])}
            if time.monotonic() > end:
                raise AssertionError(f"no closed transcript for {call_id}: {call}")
            time.sleep(0.2)
    finally:
        store.close()


def test_caller_has_a_number_checked_and_types_the_siren(worker, home, speech, tmp_path):
    from callbot.audio import read_wav

    record = tmp_path / "heard.wav"
    rc, events = run_caller(f"sip:callbot@127.0.0.1:{worker.port}",
                            "--wav", str(QUESTION_WAV), "--dtmf", SIREN,
                            "--record", str(record), "--hangup-after", "14",
                            "--timeout", "90", timeout=90)
    assert rc == 0, events
    call_id = first(events, "answered", leg="bot")["call"]

    # The bot understood the spoken question and offered the look-up...
    asked = worker.wait_for(lambda e: e["event"] == "turn" and e.get("call") == call_id
                            and e.get("caller"))
    assert asked["intent"] == "verifier_entreprise", asked
    assert asked["bot"].endswith("voulez-vous me le donner ?"), asked["bot"]
    # ...the keys made the number, and the answer came from the register.
    answer = worker.wait_for(lambda e: e["event"] == "turn" and e.get("call") == call_id
                             and any(x["type"] == "lookup" for x in e.get("events", [])))
    assert [x for x in answer["events"] if x["type"] == "lookup"] == [
        {"type": "lookup", "number": SIREN, "result": "found"}]
    state = "L'entreprise Boulangerie Du Port est active depuis le 3 mars 2021."
    ape = "Son code A P E est 56 10 A : restauration traditionnelle."
    assert state in answer["bot"] and ape in answer["bot"], answer["bot"]
    assert "Brest" not in answer["bot"] and "BREST" not in answer["bot"]

    # What the caller heard over the line holds those two sentences, as the bot renders them.
    heard = read_wav(record)
    for sentence in (state, ape):
        found = found_fraction(heard, alaw_round_trip(speech.get(sentence)))
        assert found >= 0.8, (f"not heard over SIP ({found:.0%}): {sentence}; the caller's "
                              f"side of the line: {[e for e in events if 'hangup' in e['event']]}")

    # The look-up is in the call's transcript.
    call = _transcript(home, call_id)
    recorded = [e for t in call["turns"] for e in (t.get("events") or [])
                if e.get("type") == "lookup"]
    assert recorded == [{"type": "lookup", "number": SIREN, "result": "found"}]
