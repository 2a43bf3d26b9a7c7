"""`callbot simulate` and `callbot transcribe` end to end, with real French speech and real models."""

import json
import subprocess
import sys
import wave

import numpy as np
import pytest

from callbot.audio import read_wav, write_wav

SOUNDS = "/usr/share/asterisk/sounds/fr"
GOODBYE = f"{SOUNDS}/vm-goodbye.wav"        # "Au revoir."
THANKS = f"{SOUNDS}/auth-thankyou.wav"      # "Merci."
PERSONAL = "ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon siren"


def callbot(*args, env=None, input=None):
    return subprocess.run([sys.executable, "-m", "callbot", *args], capture_output=True,
                          text=True, env=env, input=input, timeout=600)


def simulate_json(*args):
    r = callbot("simulate", "--json", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def siren_wav(tmp_path_factory):
    """A SIREN said digit by digit by a real voice (Asterisk's French digits)."""
    parts = []
    for d in "732829320":
        parts += [read_wav(f"{SOUNDS}/digits/{d}.wav"), np.zeros(2400, np.int16)]
    path = tmp_path_factory.mktemp("audio") / "siren.wav"
    write_wav(path, np.concatenate(parts))
    return str(path)


def test_spoken_goodbye_hangs_up():
    out = simulate_json("--wav", GOODBYE)
    greeting, turn = out["turns"][0], out["turns"][1]
    assert greeting["caller"] is None and "assistant vocal" in greeting["bot"]
    assert "revoir" in turn["caller"].lower()
    assert turn["intent"] == "au_revoir"
    assert turn["events"][-1] == {"type": "hangup", "reason": "caller_goodbye"}
    assert out["outcome"] == "hung_up" and out["transfer"] is None


def test_spoken_thanks_after_an_answer_closes_the_call(tmp_path):
    audio = tmp_path / "reply.wav"
    out = simulate_json("--text", "comment je fais pour fermer mon auto entreprise",
                        "--wav", THANKS, "--out-audio", str(audio))
    assert out["turns"][2]["intent"] == "remerciement"
    assert out["turns"][2]["events"][-1] == {"type": "hangup", "reason": "caller_goodbye"}
    assert out["outcome"] == "hung_up" and len(out["turns"]) == 3
    with wave.open(str(audio)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1


def test_script_runs_out_then_silence_ends_the_call(tmp_path):
    audio = tmp_path / "reply.wav"
    out = simulate_json("--text", "comment je fais pour fermer mon auto entreprise",
                        "--out-audio", str(audio))
    callers = [t["caller"] for t in out["turns"]]
    # then silence: prompted once, then goodbye
    assert callers[2:] == [None, None]
    assert out["turns"][-1]["events"][-1] == {"type": "hangup", "reason": "no_input"}
    assert out["outcome"] == "hung_up"
    with wave.open(str(audio)) as w:
        assert w.getframerate() == 8000 and w.getnchannels() == 1
        seconds = w.getnframes() / 8000
    assert seconds > 20


def test_personal_case_with_spoken_siren_is_transferred(siren_wav):
    out = simulate_json("--text", PERSONAL, "--wav", siren_wav)
    assert out["outcome"] == "transferred"
    t = out["transfer"]
    assert t["reason"] == "personal_case"
    assert t["context"]["siren"] == "732829320"
    assert t["context"]["intent"] == "siren_non_recu"
    assert "732829320" in t["context"]["summary"]


def test_siren_capture_gives_up_when_caller_is_silent():
    out = simulate_json("--text", PERSONAL)
    assert out["outcome"] == "transferred"
    assert out["transfer"]["context"]["siren"] is None
    keys = [e.get("key") for t in out["turns"] for e in t["events"]]
    assert keys.count("prompt:siren_invalid") == 1 and "prompt:siren_skip" in keys


def test_keypad_zero_transfers():
    out = simulate_json("--dtmf", "0")
    assert out["outcome"] == "transferred"
    assert out["transfer"]["reason"] == "caller_request"


def test_readable_transcript_and_piped_interactive_mode():
    r = callbot("simulate", "--text", "c'est quoi le code ape")
    assert r.returncode == 0
    assert "caller: c'est quoi le code ape" in r.stdout and "bot:" in r.stdout
    r = callbot("simulate", input="je voudrais parler à un conseiller\n")
    assert r.returncode == 0, r.stderr
    assert "-> transfer (caller_request)" in r.stdout


def test_transcribe_json_lines():
    r = callbot("transcribe", GOODBYE, THANKS)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["file"] for row in rows] == [GOODBYE, THANKS]
    assert "revoir" in rows[0]["text"].lower() and "merci" in rows[1]["text"].lower()
    assert {row["engine"] for row in rows} == {"whisper"}


def test_stereo_and_odd_rate_are_converted(tmp_path):
    mono = read_wav(GOODBYE, rate=44100)
    stereo = np.stack([mono, mono], axis=1)
    path = tmp_path / "stereo44k.wav"
    write_wav(path, stereo.reshape(-1), rate=44100, channels=2)
    r = callbot("transcribe", str(path))
    assert r.returncode == 0, r.stderr
    assert "revoir" in json.loads(r.stdout)["text"].lower()


def bad_inputs(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("ceci n'est pas un son")
    empty = tmp_path / "empty.wav"
    write_wav(empty, np.zeros(0, np.int16))
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(open(GOODBYE, "rb").read()[:30])
    return {"not a WAV": str(text), "empty": str(empty), "truncated": str(truncated),
            "missing": str(tmp_path / "nope.wav"), "folder": str(tmp_path)}


@pytest.mark.parametrize("command", ["transcribe", "simulate"])
def test_bad_audio_gets_one_clear_line(tmp_path, command):
    for what, path in bad_inputs(tmp_path).items():
        args = [path] if command == "transcribe" else ["--wav", path]
        r = callbot(command, *args)
        assert r.returncode != 0, what
        assert "Traceback" not in r.stderr, (what, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and path in lines[0], (what, r.stderr)


def test_missing_model_says_how_to_install(tmp_path):
    env = {"CALLBOT_PATHS_MODELS": str(tmp_path), "PATH": "/usr/bin:/bin"}
    r = callbot("transcribe", GOODBYE, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "callbot models install" in r.stderr
    r = callbot("simulate", "--text", "bonjour", env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "callbot train" in r.stderr or "callbot models install" in r.stderr


def test_bad_configuration_is_refused(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[dialogue]\nno_input_limit = "deux"\n')
    r = callbot("--config", str(cfg), "simulate", "--text", "bonjour")
    assert r.returncode == 2 and "dialogue.no_input_limit" in r.stderr
    assert "Traceback" not in r.stderr


def test_simulated_call_can_be_kept_in_the_transcript_store(tmp_path):
    import os

    env = dict(os.environ, CALLBOT_PATHS_DATA=str(tmp_path))
    r = callbot("simulate", "--text", "comment je trouve mon code ape", "--text", "au revoir",
                "--save-transcript", env=env)
    assert r.returncode == 0, r.stderr
    r = callbot("transcripts", "list", "--intent", "connaitre_code_ape", env=env)
    assert r.returncode == 0, r.stderr
    assert "resolved" in r.stdout and "1 call(s)" in r.stdout
