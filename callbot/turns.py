"""Turn-taking: when the caller's turn ends, in one place.

Waiting ``end_silence_ms`` (700 ms) after every utterance is most of what a caller waits
for an answer. The turn taker ends a turn sooner when what was said is already a request
the dialogue can answer with confidence, and takes that answer back if the caller was only
pausing. Measured on SIP (whisper base, 4 calls): answers start 570 ms after the caller's
last word, against about 1.1 s at 700 ms of silence.

States (one per call)::

    LISTENING ─pause ≥ quick_end_ms/2 in speech→ SPECULATING ─voice again→ LISTENING
    SPECULATING ─pause ≥ quick_end_ms, request complete→ (quick final) → ANSWERED_EARLY
    ANSWERED_EARLY ─caller speaks within RESUME_MS, answer still playing→ TAKEN_BACK
    ANSWERED_EARLY ─any other turn, or RESUME_MS passed→ LISTENING
    TAKEN_BACK ─the caller's next final (joined to the withdrawn words)→ LISTENING
    TAKEN_BACK ─pause→ SPECULATING ─voice again→ TAKEN_BACK (the words wait in ``prefix``)

* SPECULATING: the recognizer prepares its result while the silence is still timed (Vosk
  closes its segment: a partial lags the audio by one ~240 ms chunk; Whisper decodes in
  the background).
* "Complete" is asked of the conversation (``quick_end = "understood"``: a confident intent,
  a yes/no while confirming, never while a SIREN is dictated), once per new hypothesis.
  ``"always"``: anything said; ``"off"``: never (every turn waits ``end_silence_ms``).
* Taking back restores the conversation's snapshot from before the early answer, so both
  parts are heard as one request. A caller cut off later than RESUME_MS is a barge-in.
* The voice (``turn_model``, :mod:`callbot.smartturn`): when the words do not end the turn
  after ``quick_end_ms`` of a pause, the end-of-turn model is asked once per pause. Done
  (probability >= ``turn_model_threshold``): the turn ends now, as a quick end (it can be
  taken back the same way). Mid-sentence: this pause may last ``mid_sentence_silence_ms``
  before the utterance ends, instead of ``end_silence_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any, Protocol

from .asr.base import Transcript
from .config import EndpointingConfig
from .events import CallEvent, Final, SpeechStarted, TakenBack, Turn

# A caller who speaks again this soon after the answer to a quick end of turn began was
# still finishing the request: the answer is taken back and both parts are heard as one.
RESUME_MS = 1500


class TurnState(str, Enum):
    LISTENING = "listening"
    SPECULATING = "speculating"
    ANSWERED_EARLY = "answered_early"
    TAKEN_BACK = "taken_back"


class Listening(Protocol):
    """What the turn taker needs from the listener (:class:`callbot.listener.Listener`)."""

    in_speech: bool
    silence_ms: int
    voiced: bool

    def feed(self, frame: bytes, at_ms: int = 0) -> list: ...
    def speculate(self) -> None: ...
    def drop_speculation(self) -> None: ...
    def hypothesis(self) -> Transcript | None: ...
    def end_with(self, hypothesis: Transcript, at_ms: int = 0) -> Final: ...
    def end_now(self, at_ms: int = 0) -> Final: ...
    def utterance(self) -> Any: ...
    def wait(self, silence_ms: int) -> None: ...


class TurnEndModel(Protocol):
    """Reads from the audio whether the speaker is done (:class:`callbot.smartturn.SmartTurn`)."""

    def done(self, pcm: Any, rate: int) -> float: ...


class Conversation(Protocol):
    """What the turn taker needs from the dialogue (:class:`callbot.dialogue.Dialogue`)."""

    def complete(self, text: str) -> bool: ...
    def snapshot(self) -> Any: ...
    def restore(self, snapshot: Any) -> None: ...


@dataclass(frozen=True)
class _Early:
    """A quick end of turn, and the conversation as it was before it was answered."""

    text: str
    snapshot: Any
    answered_at_ms: int = 0


class TurnTaker:
    """Owns the quick end of turn, its speculation and the take-back, for one call."""

    def __init__(self, listener: Listening, conversation: Conversation,
                 config: EndpointingConfig, voice: TurnEndModel | None = None) -> None:
        self.listener = listener
        self.conversation = conversation
        self.mode = config.quick_end
        self.quick_ms = config.quick_end_ms
        self.voice = voice
        self.voice_threshold = config.turn_model_threshold
        self.mid_sentence_ms = config.mid_sentence_silence_ms
        self._voice_asked = False           # in the current pause
        self._turn_done: float | None = None     # the model's last verdict in this utterance
        self.state = TurnState.LISTENING
        self.prefix: str | None = None      # words of a taken-back request, until the next final
        self._early: _Early | None = None
        self._judged: tuple[str, bool] = ("", False)   # last hypothesis judged, and verdict

    def feed(self, frame: bytes, at_ms: int, playing: bool) -> list[CallEvent]:
        """One caller frame; ``playing``: the bot's audio is still being heard."""
        out: list[CallEvent] = []
        if self.state is TurnState.ANSWERED_EARLY and self._early is not None \
                and at_ms - self._early.answered_at_ms > RESUME_MS:
            self._to(TurnState.LISTENING)
        for ev in self.listener.feed(frame, at_ms):
            if isinstance(ev, SpeechStarted):
                out.append(ev)
                taken = self._speech_started(at_ms, playing)
                if taken is not None:
                    out.append(taken)
            elif isinstance(ev, Final):
                final = self._joined(ev)
                self._to(TurnState.LISTENING)
                if final is not None:
                    out.append(self._verdict(final))
            else:
                out.append(ev)
        if self.listener.in_speech:
            final = self._quick_end(at_ms) if self.mode != "off" else None
            if final is None and self.voice is not None:
                final = self._voice_end(at_ms)
            if final is not None:
                out.append(final)
        return out

    def answered(self, turn: Turn, quick: bool) -> None:
        """The dialogue answered a turn (any turn: speech, silence, key). Only the answer to a
        quick end that does not end the call may be taken back."""
        if quick and self._early is not None and turn.ending is None:
            self.state = TurnState.ANSWERED_EARLY
            return
        self._early = None
        if self.state is TurnState.ANSWERED_EARLY:
            self.state = TurnState.LISTENING

    # --- internals ----------------------------------------------------------------------
    def _to(self, state: TurnState) -> None:
        self.state = state
        if state is not TurnState.ANSWERED_EARLY:
            self._early = None

    def _speech_started(self, at_ms: int, playing: bool) -> TakenBack | None:
        early = self._early
        if self.state is TurnState.ANSWERED_EARLY and early is not None and playing \
                and at_ms - early.answered_at_ms <= RESUME_MS:
            self.conversation.restore(early.snapshot)
            self.prefix = early.text
            self._to(TurnState.TAKEN_BACK)
            return TakenBack(early.text, at_ms)
        if self.state is TurnState.ANSWERED_EARLY:
            self._to(TurnState.LISTENING)
        return None

    def _joined(self, final: Final) -> Final | None:
        """The final of the turn: a taken-back request joined to its end (or alone again, if
        what followed was only a cough); None when nothing was said."""
        text = final.text
        if self.prefix is not None:
            text = f"{self.prefix} {text}".strip()
            self.prefix = None
        if not text:
            return None
        return final if text == final.text else replace(final, text=text)

    def _verdict(self, final: Final) -> Final:
        """The final with the end-of-turn model's last verdict on this utterance."""
        done, self._turn_done = self._turn_done, None
        self._voice_asked = False
        return final if done is None else replace(final, turn_done=round(done, 3))

    def _voice_end(self, at_ms: int) -> Final | None:
        """Once per pause of ``quick_end_ms``: does the voice say the caller is done?"""
        silence = self.listener.silence_ms
        if self.listener.voiced or silence == 0:
            self._voice_asked = False
            return None
        if self._voice_asked or silence < self.quick_ms:
            return None
        self._voice_asked = True
        assert self.voice is not None
        self._turn_done = self.voice.done(self.listener.utterance(), self.listener.sample_rate)
        if self._turn_done < self.voice_threshold:
            self.listener.wait(self.mid_sentence_ms)
            return None
        hyp = self.listener.hypothesis()
        final = (self.listener.end_with(hyp, at_ms) if hyp is not None
                 else self.listener.end_now(at_ms))
        final = self._joined(final)
        self._to(TurnState.LISTENING)
        if final is None:
            self._turn_done = None
            return None
        final = self._verdict(final)
        self._early = _Early(final.text, self.conversation.snapshot(), at_ms)
        return final

    def _quick_end(self, at_ms: int) -> Final | None:
        silence = self.listener.silence_ms
        if self.listener.voiced or silence == 0:
            if self.state is TurnState.SPECULATING:
                self.listener.drop_speculation()
                self._to(TurnState.TAKEN_BACK if self.prefix is not None
                         else TurnState.LISTENING)
            return None
        if self.state is not TurnState.SPECULATING and silence >= self.quick_ms // 2:
            self.listener.speculate()
            self._to(TurnState.SPECULATING)
        if silence < self.quick_ms:
            return None
        hyp = self.listener.hypothesis()
        if hyp is None or not self._is_complete(hyp.text.strip()):
            return None
        final = self._joined(self.listener.end_with(hyp, at_ms))
        self._to(TurnState.LISTENING)
        if final is None:
            return None
        final = self._verdict(final)
        self._early = _Early(final.text, self.conversation.snapshot(), at_ms)
        return final

    def _is_complete(self, text: str) -> bool:
        """Asked once per new hypothesis rather than once per frame."""
        if self._judged[0] != text:
            verdict = bool(text) if self.mode == "always" else self.conversation.complete(text)
            self._judged = (text, verdict)
        return self._judged[1]
