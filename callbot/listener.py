"""The one streaming speech interface: 20 ms frames in; speech start, partials and finals out.

It puts the endpointer in front of any recognizer engine. Only endpointed speech reaches the
recognizer, which is what keeps Whisper from inventing text on silence, and gives every
engine the same start/end behaviour.

Quick end of turn. Waiting ``end_silence_ms`` (700 ms) after every utterance is most of
what a caller waits for an answer. When the caller has paused for half ``quick_end_ms``,
the listener asks the recognizer to speculate (Vosk closes its segment: a partial lags the
audio; Whisper starts a background decode) and, once ``quick_end_ms`` of silence have passed, asks ``complete``
(the dialogue: "is this already a request I can answer with confidence?"). If so the turn
ends there; if not, or if the caller speaks again, the usual end of turn applies. A caller
cut off too early simply goes on speaking: that is a barge-in, and the rest is heard as the
next utterance.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from .asr.base import AsrEngine, Recognizer
from .audio import FRAME_MS
from .config import EndpointingConfig
from .endpointing import Endpointer, Mark


@dataclass(frozen=True)
class SpeechStarted:
    at_ms: int


@dataclass(frozen=True)
class Partial:
    text: str


@dataclass(frozen=True)
class Final:
    text: str
    confidence: float | None  # None: not scored (a streaming partial closed early)
    engine: str
    speech_ms: int          # length of the utterance given to the recognizer
    decode_ms: float        # time the recognizer took after the end of speech
    cut: bool = False       # stopped at the maximum utterance length
    quick: bool = False     # ended after quick_end_ms: the request was already complete


ListenEvent = SpeechStarted | Partial | Final


class Listener:
    """Endpointer + recognizer for one call."""

    def __init__(self, engine: AsrEngine, config: EndpointingConfig, sample_rate: int = 8000,
                 complete: Callable[[str], bool] | None = None):
        self.engine = engine
        self.endpointer = Endpointer(config)
        self.recognizer: Recognizer = engine.recognizer(sample_rate)
        self.frame_ms = FRAME_MS
        self.clock_ms = 0
        self.speech_ms = 0
        if config.quick_end == "always":
            complete = _said_something
        self.complete = complete if config.quick_end != "off" else None
        self.quick_ms = config.quick_end_ms
        self._speculating = False
        self._judged: tuple[str, bool] = ("", False)   # last hypothesis judged, and verdict

    @property
    def in_speech(self) -> bool:
        return self.endpointer.in_speech

    def close(self) -> None:
        """The call is over: give the recognizer back to the engine."""
        self.recognizer.close()

    def feed(self, frame: bytes) -> list[ListenEvent]:
        self.clock_ms += self.frame_ms
        step = self.endpointer.feed(frame)
        events: list[ListenEvent] = []
        if Mark.START in step.marks:
            events.append(SpeechStarted(self.clock_ms))
            self.speech_ms = 0
            self._speculating = False
        if step.audio and (self.endpointer.in_speech or step.marks):
            self.speech_ms += len(step.audio) // 2 * 1000 // self.recognizer.sample_rate
            partial = self.recognizer.accept(step.audio)
            if partial is not None and partial.text:
                events.append(Partial(partial.text))
        if Mark.END in step.marks or Mark.CUT in step.marks:
            t0 = time.perf_counter()
            result = self.recognizer.finish()
            self._speculating = False
            events.append(Final(result.text.strip(), result.confidence, result.engine,
                                self.speech_ms, (time.perf_counter() - t0) * 1000,
                                cut=Mark.CUT in step.marks))
        elif self.complete is not None and self.endpointer.in_speech:
            final = self._quick_end(step.voiced)
            if final is not None:
                events.append(final)
        return events

    def _quick_end(self, voiced: bool) -> Final | None:
        silence = self.endpointer.silence_ms
        if voiced or silence == 0:
            if self._speculating:
                self.recognizer.drop_speculation()
                self._speculating = False
            return None
        if not self._speculating and silence >= self.quick_ms // 2:
            self.recognizer.speculate()
            self._speculating = True
        if silence < self.quick_ms:
            return None
        t0 = time.perf_counter()
        hyp = self.recognizer.hypothesis()
        if hyp is None or not hyp.text.strip() or not self._is_complete(hyp.text.strip()):
            return None
        result = self.recognizer.commit(hyp)
        self.endpointer.end_now()
        self._speculating = False
        return Final(result.text.strip(), result.confidence, result.engine, self.speech_ms,
                     (time.perf_counter() - t0) * 1000, quick=True)

    def _is_complete(self, text: str) -> bool:
        """``complete(text)``, asked once per new hypothesis rather than once per frame."""
        if self._judged[0] != text:
            self._judged = (text, bool(self.complete(text)))
        return self._judged[1]


def _said_something(text: str) -> bool:
    return bool(text.strip())
