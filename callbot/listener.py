"""The one streaming speech interface: 20 ms frames in; speech start, partials and finals out.

It puts the endpointer in front of any recognizer engine. Only endpointed speech reaches the
recognizer, which is what keeps Whisper from inventing text on silence, and gives every
engine the same start/end behaviour. The listener ends an utterance after the endpointer's
``end_silence_ms``; ending it sooner (the quick end of turn) is decided by
:class:`callbot.turns.TurnTaker`, through :meth:`speculate`, :meth:`hypothesis` and
:meth:`end_with`.
"""

from __future__ import annotations

import time
from collections import deque

import numpy as np

from .asr.base import AsrEngine, AsrOverloaded, Recognizer, Transcript
from .audio import FRAME_MS
from .config import EndpointingConfig
from .endpointing import Endpointer, Mark
from .events import Final, Partial, SpeechStarted

ListenEvent = SpeechStarted | Partial | Final


class Listener:
    """Endpointer + recognizer for one call."""

    def __init__(self, engine: AsrEngine, config: EndpointingConfig, sample_rate: int = 8000):
        self.engine = engine
        self.endpointer = Endpointer(config)
        self.recognizer: Recognizer = engine.recognizer(sample_rate)
        self.sample_rate = sample_rate
        self.speech_ms = 0
        self.voiced = False       # the last frame fed was voiced
        # the utterance's last 8 s as heard, for the end-of-turn model
        self._recent: deque[bytes] = deque(maxlen=8000 // FRAME_MS)

    @property
    def in_speech(self) -> bool:
        return self.endpointer.in_speech

    @property
    def silence_ms(self) -> int:
        """Silence since the caller's last voiced frame, within an utterance (0 outside)."""
        return self.endpointer.silence_ms if self.endpointer.in_speech else 0

    @property
    def end_silence_ms(self) -> int:
        """The silence that ends the current pause's utterance (longer when the caller
        sounds mid-sentence)."""
        return self.endpointer.end_silence_ms

    def close(self) -> None:
        """The call is over: give the recognizer back to the engine."""
        self.recognizer.close()

    def feed(self, frame: bytes, at_ms: int = 0) -> list[ListenEvent]:
        step = self.endpointer.feed(frame)
        self.voiced = step.voiced
        events: list[ListenEvent] = []
        if Mark.START in step.marks:
            events.append(SpeechStarted(at_ms))
            self.speech_ms = 0
            self._recent.clear()
        if step.audio and (self.endpointer.in_speech or step.marks):
            self._recent.append(step.audio)
            self.speech_ms += len(step.audio) // 2 * 1000 // self.recognizer.sample_rate
            partial = self.recognizer.accept(step.audio)
            if partial is not None and partial.text:
                events.append(Partial(partial.text, at_ms))
        if Mark.END in step.marks or Mark.CUT in step.marks:
            t0 = time.perf_counter()
            result = self._finish()
            events.append(Final(result.text.strip(), result.confidence, result.engine,
                                self.speech_ms, (time.perf_counter() - t0) * 1000,
                                cut=Mark.CUT in step.marks, at_ms=at_ms,
                                silence_ms=self.endpointer.silence_ms))
        return events

    def _finish(self) -> Transcript:
        """The recognizer's final; nothing heard when it is overloaded (the dialogue then
        asks the caller to repeat, as for any utterance it could not make out)."""
        try:
            return self.recognizer.finish()
        except AsrOverloaded:
            return Transcript("", 0.0, "", True)

    # --- ending an utterance early (driven by the turn taker) ------------------------------
    def speculate(self) -> None:
        """The caller paused: let the recognizer start on its result for the audio so far."""
        self.recognizer.speculate()

    def drop_speculation(self) -> None:
        self.recognizer.drop_speculation()

    def hypothesis(self) -> Transcript | None:
        """The recognizer's result so far if ready now, with words in it (never blocks)."""
        hyp = self.recognizer.hypothesis()
        return hyp if hyp is not None and hyp.text.strip() else None

    def utterance(self) -> np.ndarray:
        """The utterance so far (its last 8 s), int16 at the recognizer's rate."""
        return np.frombuffer(b"".join(self._recent), dtype=np.int16)

    def wait(self, silence_ms: int) -> None:
        """Let this pause last ``silence_ms`` before the utterance ends."""
        self.endpointer.wait(silence_ms)

    def end_now(self, at_ms: int = 0) -> Final:
        """Close the utterance now with a full decode (no hypothesis was ready)."""
        silence = self.endpointer.silence_ms
        t0 = time.perf_counter()
        result = self._finish()
        self.endpointer.end_now()
        return Final(result.text.strip(), result.confidence, result.engine, self.speech_ms,
                     (time.perf_counter() - t0) * 1000, quick=True, at_ms=at_ms,
                     silence_ms=silence)

    def end_with(self, hypothesis: Transcript, at_ms: int = 0) -> Final:
        """Close the utterance now on ``hypothesis``: the caller's request is complete."""
        silence = self.endpointer.silence_ms
        t0 = time.perf_counter()
        result = self.recognizer.commit(hypothesis)
        self.endpointer.end_now()
        return Final(result.text.strip(), result.confidence, result.engine, self.speech_ms,
                     (time.perf_counter() - t0) * 1000, quick=True, at_ms=at_ms,
                     silence_ms=silence)
