"""The one streaming speech interface: 20 ms frames in; speech start, partials and finals out.

It puts the endpointer in front of any recognizer engine. Only endpointed speech reaches the
recognizer, which is what keeps Whisper from inventing text on silence, and gives every
engine the same start/end behaviour.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .asr.base import AsrEngine, Recognizer
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
    confidence: float
    engine: str
    speech_ms: int          # length of the utterance given to the recognizer
    decode_ms: float        # time the recognizer took after the end of speech
    cut: bool = False       # stopped at the maximum utterance length


ListenEvent = SpeechStarted | Partial | Final


class Listener:
    """Endpointer + recognizer for one call."""

    def __init__(self, engine: AsrEngine, config: EndpointingConfig, sample_rate: int = 8000):
        self.engine = engine
        self.endpointer = Endpointer(config)
        self.recognizer: Recognizer = engine.recognizer(sample_rate)
        self.frame_ms = config.frame_ms
        self.clock_ms = 0
        self.speech_ms = 0

    @property
    def in_speech(self) -> bool:
        return self.endpointer.in_speech

    def feed(self, frame: bytes) -> list[ListenEvent]:
        self.clock_ms += self.frame_ms
        step = self.endpointer.feed(frame)
        events: list[ListenEvent] = []
        if Mark.START in step.marks:
            events.append(SpeechStarted(self.clock_ms))
            self.speech_ms = 0
        if step.audio and (self.endpointer.in_speech or step.marks):
            self.speech_ms += len(step.audio) // 2 * 1000 // self.recognizer.sample_rate
            partial = self.recognizer.accept(step.audio)
            if partial is not None and partial.text:
                events.append(Partial(partial.text))
        if Mark.END in step.marks or Mark.CUT in step.marks:
            t0 = time.perf_counter()
            result = self.recognizer.finish()
            events.append(Final(result.text.strip(), result.confidence, result.engine,
                                self.speech_ms, (time.perf_counter() - t0) * 1000,
                                cut=Mark.CUT in step.marks))
        return events
