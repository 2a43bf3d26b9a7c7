"""Turn-taking alone: the quick end of turn, its speculation and the take-back, driven by
scripted listener events (the real listener and dialogue are in test_session.py)."""

import dataclasses

import pytest

from callbot.asr.base import Transcript
from callbot.config import load_config
from callbot.events import Final, HangUp, Partial, SpeechStarted, TakenBack, Turn
from callbot.turns import RESUME_MS, TurnState, TurnTaker

QUICK_MS = 240


class ScriptedListener:
    """A named fake of :class:`callbot.listener.Listener`. Each "frame" is a word of a script:
    ``start`` (speech begins), ``voice``, ``pause`` (20 ms of silence within speech), ``end``
    (the endpointer's own end of turn). The recognizer's words are set by the test."""

    def __init__(self) -> None:
        self.in_speech = False
        self.voiced = False
        self.silence_ms = 0
        self.words = ""
        self.ready = True                  # the speculative hypothesis is ready
        self.calls: list[str] = []

    def feed(self, frame, at_ms=0):
        self.voiced = frame in ("start", "voice")
        if frame == "start":
            self.in_speech, self.silence_ms = True, 0
            return [SpeechStarted(at_ms)]
        if frame == "voice":
            self.silence_ms = 0
            return [Partial(self.words, at_ms)] if self.words else []
        if frame == "pause":
            self.silence_ms += 20
            return []
        if frame == "end":
            self.in_speech, self.silence_ms = False, 0
            return [Final(self.words, 0.9, "scripted", 1000, 5.0, at_ms=at_ms)]
        raise ValueError(frame)

    def speculate(self):
        self.calls.append("speculate")

    def drop_speculation(self):
        self.calls.append("drop")

    def hypothesis(self):
        if not self.ready or not self.words:
            return None
        return Transcript(self.words, None, "scripted", final=False)

    def end_with(self, hypothesis, at_ms=0):
        self.calls.append("end_with")
        self.in_speech, self.silence_ms = False, 0
        return Final(hypothesis.text, None, "scripted", 1000, 1.0, quick=True, at_ms=at_ms)

    sample_rate = 8000

    def utterance(self):
        return f"audio of {self.words}"

    def wait(self, silence_ms):
        self.calls.append(f"wait {silence_ms}")

    def end_now(self, at_ms=0):
        self.calls.append("end_now")
        self.in_speech, self.silence_ms = False, 0
        return Final(self.words, 0.9, "scripted", 1000, 80.0, quick=True, at_ms=at_ms)


class ScriptedVoice:
    """A named fake of the end-of-turn model (:mod:`callbot.smartturn`, tested on real
    speech in test_smartturn.py): the probability it gives for each utterance's words."""

    def __init__(self, verdicts):
        self.verdicts = verdicts
        self.asked: list[str] = []

    def done(self, pcm, rate):
        self.asked.append(pcm)
        return self.verdicts[pcm.removeprefix("audio of ")]


class ScriptedConversation:
    """A named fake of the dialogue's side: requests it would answer with confidence."""

    def __init__(self, complete=("mon code ape",)) -> None:
        self.requests = set(complete)
        self.asked: list[str] = []
        self.restored: list[object] = []
        self.version = 0                   # changes as turns are answered

    def complete(self, text):
        self.asked.append(text)
        return text in self.requests

    def snapshot(self):
        return ("snapshot", self.version)

    def restore(self, snapshot):
        self.restored.append(snapshot)


@pytest.fixture
def endpointing():
    return dataclasses.replace(load_config(env={}).endpointing, quick_end="understood",
                               quick_end_ms=QUICK_MS)


class Call:
    """Drives a TurnTaker with a 20 ms clock."""

    def __init__(self, endpointing, conversation=None, voice=None, **changes):
        self.listener = ScriptedListener()
        self.conversation = conversation or ScriptedConversation()
        self.taker = TurnTaker(self.listener, self.conversation,
                               dataclasses.replace(endpointing, **changes), voice)
        self.clock = 0
        self.playing = False

    def feed(self, *frames):
        out = []
        for f in frames:
            self.clock += 20
            out += self.taker.feed(f, self.clock, self.playing)
        return out

    def say(self, words, pauses=0):
        self.listener.words = words
        return self.feed("start", *["voice"] * 10, *["pause"] * pauses)


def finals(events):
    return [e for e in events if isinstance(e, Final)]


def test_a_pause_past_half_the_quick_end_speculates_and_speech_drops_it(endpointing):
    c = Call(endpointing)
    c.say("je voudrais", pauses=QUICK_MS // 2 // 20)
    assert c.taker.state is TurnState.SPECULATING and c.listener.calls == ["speculate"]
    c.feed("voice")
    assert c.taker.state is TurnState.LISTENING and c.listener.calls == ["speculate", "drop"]


def test_a_complete_request_ends_the_turn_at_the_quick_end(endpointing):
    c = Call(endpointing)
    events = c.say("mon code ape", pauses=QUICK_MS // 20 - 1)
    assert finals(events) == []                   # not yet: 220 ms of silence
    events = c.feed("pause")
    (final,) = finals(events)
    assert final.quick and final.text == "mon code ape" and final.at_ms == c.clock
    assert c.listener.calls == ["speculate", "end_with"]
    assert c.conversation.asked == ["mon code ape"]


def test_an_incomplete_request_waits_for_the_endpointer(endpointing):
    c = Call(endpointing)
    events = c.say("je voudrais euh", pauses=30)
    assert finals(events) == [] and c.taker.state is TurnState.SPECULATING
    assert c.conversation.asked == ["je voudrais euh"]      # asked once, not once per frame
    (final,) = finals(c.feed("end"))
    assert not final.quick and final.text == "je voudrais euh"
    assert c.taker.state is TurnState.LISTENING


def test_no_quick_end_before_the_hypothesis_is_ready(endpointing):
    c = Call(endpointing)
    c.listener.ready = False
    assert finals(c.say("mon code ape", pauses=QUICK_MS // 20 + 5)) == []
    c.listener.ready = True
    (final,) = finals(c.feed("pause"))
    assert final.quick


def test_the_caller_going_on_takes_the_early_answer_back(endpointing):
    c = Call(endpointing)
    (first,) = finals(c.say("mon code ape", pauses=QUICK_MS // 20))
    c.taker.answered(Turn(caller=first.text), quick=True)
    assert c.taker.state is TurnState.ANSWERED_EARLY
    c.playing = True                                # the answer is being heard
    c.conversation.version = 1
    events = c.say("pour ma deuxième société")
    assert [e for e in events if isinstance(e, TakenBack)] == [TakenBack("mon code ape",
                                                                          c.clock - 200)]
    assert c.conversation.restored == [("snapshot", 0)]     # as before the early answer
    assert c.taker.state is TurnState.TAKEN_BACK
    c.feed(*["pause"] * (QUICK_MS // 2 // 20), "voice")       # a pause on the way
    assert c.taker.state is TurnState.TAKEN_BACK
    (final,) = finals(c.feed(*["pause"] * 3, "end"))
    assert final.text == "mon code ape pour ma deuxième société" and not final.quick
    assert c.taker.state is TurnState.LISTENING and c.taker.prefix is None


def test_a_cough_after_a_take_back_gives_the_first_part_alone(endpointing):
    c = Call(endpointing)
    (first,) = finals(c.say("mon code ape", pauses=QUICK_MS // 20))
    c.taker.answered(Turn(caller=first.text), quick=True)
    c.playing = True
    c.say("")
    (final,) = finals(c.feed("end"))
    assert final.text == "mon code ape"


@pytest.mark.parametrize("why", ["late", "silent_bot", "other_turn", "call_ends", "normal_end"])
def test_no_take_back(endpointing, why):
    c = Call(endpointing)
    if why == "normal_end":
        c.listener.words = "mon code ape"
        final = finals(c.feed("start", "voice", "end"))[0]
    else:
        (final,) = finals(c.say("mon code ape", pauses=QUICK_MS // 20))
    turn = Turn(caller=final.text)
    if why == "call_ends":
        turn.events.append(HangUp("caller_goodbye"))
    c.taker.answered(turn, quick=final.quick)
    c.playing = why != "silent_bot"
    if why == "late":
        c.feed(*["pause"] * (RESUME_MS // 20 + 1))
    if why == "other_turn":
        c.taker.answered(Turn(caller=None), quick=False)    # e.g. a key press answered
    events = c.say("autre chose")
    assert not [e for e in events if isinstance(e, TakenBack)]
    assert c.conversation.restored == [] and c.taker.state is TurnState.LISTENING
    (final,) = finals(c.feed("end"))
    assert final.text == "autre chose"


def test_quick_end_off_never_speculates(endpointing):
    c = Call(endpointing, quick_end="off")
    assert finals(c.say("mon code ape", pauses=40)) == []
    assert c.listener.calls == [] and c.conversation.asked == []


def test_quick_end_always_ends_on_any_words(endpointing):
    c = Call(endpointing, quick_end="always")
    (final,) = finals(c.say("n'importe quoi", pauses=QUICK_MS // 20))
    assert final.quick and c.conversation.asked == []


# --- the voice: the end-of-turn model -------------------------------------------------------
def test_the_voice_ends_a_finished_turn_the_words_cannot(endpointing):
    voice = ScriptedVoice({"ma boîte a déménagé": 0.9})
    c = Call(endpointing, voice=voice)
    events = c.say("ma boîte a déménagé", pauses=QUICK_MS // 20 - 1)
    assert finals(events) == [] and voice.asked == []        # not before quick_end_ms
    (final,) = finals(c.feed("pause"))
    assert final.quick and final.text == "ma boîte a déménagé" and final.turn_done == 0.9
    assert c.listener.calls[-1] == "end_with"                 # the speculation was ready
    assert c.conversation.asked == ["ma boîte a déménagé"]   # the words were tried first
    # taken back like any early end when the caller goes on at once
    c.taker.answered(Turn(caller=final.text), quick=final.quick)
    c.playing = True
    events = c.feed("start")
    assert any(isinstance(e, TakenBack) for e in events)


def test_the_voice_ends_the_turn_with_a_full_decode_when_no_hypothesis_is_ready(endpointing):
    voice = ScriptedVoice({"ma boîte a déménagé": 0.7})
    c = Call(endpointing, voice=voice)
    c.listener.ready = False
    (final,) = finals(c.say("ma boîte a déménagé", pauses=QUICK_MS // 20))
    assert final.quick and c.listener.calls[-1] == "end_now"


def test_mid_sentence_the_pause_may_last_longer_and_the_model_is_asked_once(endpointing):
    voice = ScriptedVoice({"je voudrais le": 0.1, "je voudrais le numéro": 0.2})
    c = Call(endpointing, voice=voice, mid_sentence_silence_ms=1500)
    events = c.say("je voudrais le", pauses=40)
    assert finals(events) == [] and voice.asked == ["audio of je voudrais le"]
    assert "wait 1500" in c.listener.calls
    # speech again, a new pause: asked again, once
    c.listener.words = "je voudrais le numéro"
    c.feed("voice", *["pause"] * 30)
    assert voice.asked == ["audio of je voudrais le", "audio of je voudrais le numéro"]
    (final,) = finals(c.feed("end"))
    assert not final.quick and final.turn_done == 0.2       # ended by the silence


def test_understood_words_end_the_turn_before_the_voice_is_asked(endpointing):
    voice = ScriptedVoice({})
    c = Call(endpointing, voice=voice)
    (final,) = finals(c.say("mon code ape", pauses=QUICK_MS // 20))
    assert final.quick and final.turn_done is None and voice.asked == []


def test_the_voice_works_with_the_quick_end_off(endpointing):
    voice = ScriptedVoice({"mon code ape": 0.95})
    c = Call(endpointing, voice=voice, quick_end="off")
    (final,) = finals(c.say("mon code ape", pauses=QUICK_MS // 20))
    assert final.quick and c.conversation.asked == [] and voice.asked
