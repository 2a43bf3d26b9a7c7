"""The call pipeline frame by frame: endpointing, barge-in, no-input timer, speech cache."""

import dataclasses
import time

import numpy as np
import pytest

from callbot.audio import read_wav, split_frames
from callbot.dialogue import Dialogue, State
from callbot.endpointing import Endpointer, Mark
from callbot.events import BargeIn, CallAudio, Ended, Final, HangUp, TakenBack, TurnDecided
from callbot.listener import Listener
from callbot.session import CallSession, Engines
from callbot.text import normalize
from callbot.turns import TurnState, TurnTaker

SOUNDS = "/usr/share/asterisk/sounds/fr"
FRAME = 320   # 20 ms at 8 kHz, 16-bit


def frames_of(*wavs, gap_ms=0):
    parts = []
    for w in wavs:
        parts.append(read_wav(w))
        parts.append(np.zeros(8 * gap_ms, np.int16))
    return split_frames(np.concatenate(parts).tobytes(), 8000, 20)


SILENCE = b"\x00" * FRAME


class Events(list):
    """A call observer that keeps every event but the per-frame audio."""

    def on_event(self, event):
        if not isinstance(event, CallAudio):
            self.append(event)

    @property
    def turns(self):
        return [e.turn for e in self if isinstance(e, TurnDecided)]


@pytest.fixture(scope="module")
def engines(config):
    return Engines.load(config)


def test_endpointer_finds_start_and_end_of_real_speech(config):
    ep = Endpointer(config.endpointing)
    speech = frames_of(f"{SOUNDS}/vm-goodbye.wav")
    stream = [SILENCE] * 50 + speech + [SILENCE] * 60
    marks = []
    for i, f in enumerate(stream):
        step = ep.feed(f)
        marks += [(m, i) for m in step.marks]
    assert [m for m, _ in marks] == [Mark.START, Mark.END]
    start, end = marks[0][1], marks[1][1]
    assert 50 <= start <= 50 + len(speech) // 2
    last_voiced = 50 + len(speech)
    silence_frames = config.endpointing.end_silence_ms // 20
    assert last_voiced <= end <= last_voiced + silence_frames + 2


def test_endpointer_ignores_silence_and_line_hiss(config):
    ep = Endpointer(config.endpointing)
    rng = np.random.default_rng(0)
    hiss = [(rng.normal(0, 60, 160)).astype(np.int16).tobytes() for _ in range(300)]
    assert not any(ep.feed(f).marks for f in [SILENCE] * 100 + hiss)


def test_long_utterance_is_cut_at_the_maximum(config):
    cfg = dataclasses.replace(config.endpointing, max_utterance_ms=3000)
    ep = Endpointer(cfg)
    long_speech = frames_of(*[f"{SOUNDS}/conf-adminmenu.wav"])   # ~20 s of talk
    marks = [m for f in long_speech for m in ep.feed(f).marks]
    assert Mark.CUT in marks
    assert marks[0] is Mark.START


def test_barge_in_flushes_playback_at_once(engines):
    events = Events()
    s = CallSession(engines, "barge", observers=[events])
    s.start()
    assert s.speaking
    # The caller talks over the greeting.
    speech = frames_of(f"{SOUNDS}/vm-goodbye.wav", gap_ms=1000)
    fed = 0
    for f in speech:
        s.push(f)
        s.pull()
        fed += 1
        if any(isinstance(e, BargeIn) for e in events):
            break
    barge = [e for e in events if isinstance(e, BargeIn)]
    assert len(barge) == 1 and barge[0].played_ms > 0
    # Nothing of the greeting is left: the next frame out is silence.
    assert s.pull() == SILENCE
    # The rest of the utterance is still heard and answered.
    for f in speech[fed:] + [SILENCE] * 100:
        s.push(f)
        if s.dialogue.ending:
            break
    turns = [t for t in events.turns if t.caller]
    assert turns and turns[-1].intent == "au_revoir"


def test_no_input_timer_runs_after_the_bot_stops_speaking(engines, config):
    events = Events()
    s = CallSession(engines, "silent", observers=[events])
    s.start()
    greeting_frames = len(s.playback.frames)
    no_input_frames = config.endpointing.no_input_ms // 20
    for _ in range(greeting_frames + no_input_frames - 2):
        s.push(SILENCE)
        s.pull()
    assert len(events.turns) == 1     # still just the greeting
    for _ in range(4):
        s.push(SILENCE)
        s.pull()
    turns = events.turns
    assert len(turns) == 2 and turns[1].events[0].key == "prompt:no_input"


def test_hang_up_waits_for_the_goodbye_to_be_played(engines):
    events = Events()
    s = CallSession(engines, "bye", observers=[events])
    s.start()
    s.playback.flush()
    s.hear("au revoir")
    queued = len(s.playback.frames)
    assert queued > 0 and not s.ended.is_set()
    for _ in range(queued):
        s.push(SILENCE)
        s.pull()
    s.push(SILENCE)
    assert s.ended.is_set() and isinstance(s.ending, HangUp)
    assert isinstance(events[-1], Ended) and isinstance(events[-1].ending, HangUp)


def test_answers_come_from_the_prerendered_cache(engines, kb):
    """`callbot train` rendered every answer: a known intent needs no synthesis in a call."""
    before = engines.tts.misses
    s = CallSession(engines, "cache")
    s.start()
    s.hear("comment je trouve mon code ape")
    s.hear("pardon vous pouvez répéter")          # slow versions are rendered too
    assert engines.tts.misses == before
    assert engines.tts.contains(kb.intents["connaitre_code_ape"].answer)
    pcm = engines.tts.get(kb.intents["connaitre_code_ape"].answer)
    assert len(pcm) > 8000 * 2 * 3                   # several seconds of 8 kHz audio


def test_new_calls_pick_up_a_retrained_model(config, tmp_path):
    """The model file is replaced atomically and loaded off the call path: the call that
    notices it starts with the model in service, calls after the load use the new one, and
    calls in progress keep theirs."""
    import gc
    import shutil

    from callbot.intents import IntentClassifier

    models = tmp_path / "models"
    shutil.copytree(config.paths.models, models, ignore=shutil.ignore_patterns("whisper-base",
                    "vosk-*", "joe-*"))
    cfg = dataclasses.replace(config, paths=dataclasses.replace(config.paths, models=models))
    engines = Engines.load(cfg, asr=False)
    old = engines.classifier
    running = CallSession(engines, "running")
    clf = IntentClassifier.load(models / cfg.nlu.model)
    clf.thresholds.confident = 0.42
    clf.save(models / cfg.nlu.model)
    frozen = gc.get_freeze_count()
    noticing = CallSession(engines, "noticing")      # starts the load, does not wait for it
    assert noticing.dialogue.classifier is old
    engines.wait_reload(60)
    fresh = CallSession(engines, "fresh")
    assert fresh.dialogue.classifier is not old
    assert fresh.dialogue.classifier.thresholds.confident == 0.42
    assert engines.understanding().kb is fresh.dialogue.kb
    assert running.dialogue.classifier is old and noticing.dialogue.classifier is old
    assert gc.get_freeze_count() > frozen             # the new model is out of the GC's way


def test_announce_speaks_outside_the_dialogue(engines):
    s = CallSession(engines, "announce")
    s.announce("Nos conseillers sont absents. Au revoir.")
    assert s.speaking and s.dialogue.state.value == "start"
    assert b"".join(s.pull() for _ in range(len(s.playback.frames))) == \
        engines.tts.get("Nos conseillers sont absents. Au revoir.") + \
        b"\x00" * ((-len(engines.tts.get("Nos conseillers sont absents. Au revoir."))) % FRAME)


def _taker(engines, config, endpointing=None):
    """A real listener (endpointer + recognizer) and dialogue behind a turn taker."""
    ep = endpointing or config.endpointing
    dialogue = Dialogue(engines.kb, engines.classifier, config.dialogue)
    dialogue.start()
    return TurnTaker(Listener(engines.asr, ep), dialogue, ep)


def _turn_end(taker, speech, wait_for_hypothesis=True):
    """Feed speech then silence; return (final, ms of silence fed when it came). The test
    waits for a speculative decode before each frame, as a machine fast enough would."""
    clock = 0
    for f in speech:
        clock += 20
        for ev in taker.feed(f, clock, playing=False):
            if isinstance(ev, Final):
                raise AssertionError(f"turn ended inside the speech: {ev}")
    for i in range(1, 100):
        if wait_for_hypothesis and taker.state is TurnState.SPECULATING:
            deadline = time.monotonic() + 30
            recognizer = taker.listener.recognizer
            while recognizer.hypothesis() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        clock += 20
        finals = [ev for ev in taker.feed(SILENCE, clock, playing=False)
                  if isinstance(ev, Final)]
        if finals:
            return finals[0], i * 20
    raise AssertionError("no end of turn")


def _trailing_quiet_ms(speech, config):
    """Quiet at the end of the recording itself (it counts towards the end of turn)."""
    ep = Endpointer(config.endpointing)
    voiced = [ep.is_voiced(f) for f in speech]
    return (len(voiced) - 1 - max(i for i, v in enumerate(voiced) if v)) * 20


def test_quick_end_when_the_request_is_already_understood(engines, config):
    ep = config.endpointing
    goodbye = frames_of(f"{SOUNDS}/vm-goodbye.wav")
    taker = _taker(engines, config)
    tail = _trailing_quiet_ms(goodbye, config)
    final, silence = _turn_end(taker, goodbye)
    assert final.quick and normalize(final.text) == "au revoir"
    assert ep.quick_end_ms <= tail + silence < ep.end_silence_ms
    assert final.silence_ms == tail + silence        # the wait the caller heard, recorded
    assert not taker.listener.in_speech
    # The same words with the quick end off: the full end-of-turn silence.
    off = _taker(engines, config, dataclasses.replace(ep, quick_end="off"))
    final, silence = _turn_end(off, goodbye)
    assert not final.quick and normalize(final.text) == "au revoir"
    assert tail + silence >= ep.end_silence_ms
    assert final.silence_ms == tail + silence


def test_no_quick_end_for_what_is_not_understood(engines, config):
    """'Vous êtes la seule personne dans cette conférence' is no SIRENE request: the caller
    may still be on the way to the question, so the turn waits for the usual silence."""
    taker = _taker(engines, config)
    speech = frames_of(f"{SOUNDS}/conf-onlyperson.wav")
    final, silence = _turn_end(taker, speech)
    assert not final.quick and final.text
    assert _trailing_quiet_ms(speech, config) + silence >= config.endpointing.end_silence_ms


def test_dialogue_never_ends_a_siren_dictation_early(engines, config):
    dialogue = Dialogue(engines.kb, engines.classifier, config.dialogue)
    dialogue.start()
    assert dialogue.complete("au revoir")
    assert not dialogue.complete("euh")
    dialogue.state = State.SIREN
    assert not dialogue.complete("au revoir")
    assert not dialogue.complete("7 3 2 8 2 9 3 2 0")


def test_a_pause_then_more_speech_drops_the_speculation(engines, config):
    """The caller pauses past the speculation point and goes on: no early end, and the
    final covers both parts."""
    ep = dataclasses.replace(config.endpointing, quick_end="always")
    taker = _taker(engines, config, ep)
    pause = [SILENCE] * (ep.quick_end_ms // 20 - 2)    # past half the quick end: speculating
    speech = frames_of(f"{SOUNDS}/vm-goodbye.wav") + pause + frames_of(
        f"{SOUNDS}/auth-thankyou.wav")
    final, _ = _turn_end(taker, speech)
    assert normalize(final.text) == "au revoir merci"


def test_a_request_cut_by_a_quick_end_is_heard_whole(stand_in_config):
    """The caller pauses, the quick end answers, the caller goes on at once: the answer is
    taken back and both parts are heard as one request (with the Vosk stand-in, whose
    Korean words are never understood: quick_end = "always")."""
    cfg = dataclasses.replace(
        stand_in_config,
        asr=dataclasses.replace(stand_in_config.asr, engine="vosk"),
        endpointing=dataclasses.replace(stand_in_config.endpointing, quick_end="always"))
    engines = Engines.load(cfg)
    events = Events()
    s = CallSession(engines, "resume", observers=[events])
    s.start()
    s.playback.flush()
    for f in frames_of(f"{SOUNDS}/conf-onlyperson.wav"):
        s.push(f)
    for _ in range(40):
        s.push(SILENCE)
        if len(s.turns) == 2:
            break
    first = s.turns[-1]
    assert first.caller and s.dialogue.not_understood == 1 and s.speaking
    for f in frames_of(f"{SOUNDS}/auth-thankyou.wav") + [SILENCE] * 60:
        s.push(f)
        if len(s.turns) == 3:
            break
    assert any(isinstance(e, BargeIn) for e in events)
    assert [e.text for e in events if isinstance(e, TakenBack)] == [first.caller]
    last = s.turns[-1]
    assert last.caller.startswith(first.caller + " ") and len(last.caller) > len(first.caller) + 1
    assert s.dialogue.not_understood == 1      # the first part alone no longer counts
    s.close()
