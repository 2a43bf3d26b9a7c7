"""Endpointing: where the caller's speech starts and ends, frame by frame.

An energy detector with a tracked noise floor: cheap enough to run on every 20 ms frame of
every call, and robust to the steady hiss of a phone line. Speech start is reported early
(``speech_start_ms`` of voiced audio) because it drives barge-in; speech end waits for
``end_silence_ms`` of quiet so that a pause between words does not cut the caller off.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum

from .audio import FRAME_MS, level_db
from .config import EndpointingConfig


class Mark(str, Enum):
    START = "start"      # speech began: the frames returned with it include the pre-roll
    END = "end"          # trailing silence reached: the utterance is over
    CUT = "cut"          # the utterance reached the maximum length


@dataclass
class Step:
    """What one frame did: the marks it raised and the audio to give the recognizer."""

    marks: tuple[Mark, ...] = ()
    audio: bytes = b""
    voiced: bool = False


class Endpointer:
    """Stateful speech detector for one audio stream (one call)."""

    def __init__(self, config: EndpointingConfig):
        self.cfg = config
        self.frame_ms = FRAME_MS
        self.noise_db = -60.0
        self.in_speech = False
        self.voiced_run_ms = 0
        self.silence_ms = 0
        self.utterance_ms = 0
        self.end_silence_ms = config.end_silence_ms   # for the current pause (see wait)
        self.pre_roll: deque[bytes] = deque(maxlen=max(1, config.pre_roll_ms // FRAME_MS))

    def wait(self, silence_ms: int) -> None:
        """This pause ends the utterance only after ``silence_ms`` (the caller sounds
        mid-sentence); the next voiced frame brings back ``end_silence_ms``."""
        self.end_silence_ms = silence_ms

    def end_now(self) -> None:
        """The turn was ended early (a complete request after a short pause)."""
        self.in_speech = False
        self.voiced_run_ms = 0
        self.pre_roll.clear()

    def is_voiced(self, frame: bytes) -> bool:
        db = level_db(frame)
        voiced = db > self.cfg.min_speech_db and db > self.noise_db + self.cfg.snr_db
        if not voiced:
            # Follow the noise floor down at once, up slowly (speech must not raise it).
            self.noise_db = db if db < self.noise_db else 0.95 * self.noise_db + 0.05 * db
        return voiced

    def feed(self, frame: bytes) -> Step:
        voiced = self.is_voiced(frame)
        if not self.in_speech:
            self.pre_roll.append(frame)
            self.voiced_run_ms = self.voiced_run_ms + self.frame_ms if voiced else 0
            if self.voiced_run_ms >= self.cfg.speech_start_ms:
                self.in_speech = True
                self.silence_ms = 0
                self.end_silence_ms = self.cfg.end_silence_ms
                self.utterance_ms = len(self.pre_roll) * self.frame_ms
                audio = b"".join(self.pre_roll)
                self.pre_roll.clear()
                return Step((Mark.START,), audio, voiced)
            return Step(voiced=voiced)
        self.utterance_ms += self.frame_ms
        self.silence_ms = 0 if voiced else self.silence_ms + self.frame_ms
        if voiced:
            self.end_silence_ms = self.cfg.end_silence_ms
        if self.silence_ms >= self.end_silence_ms:
            self.in_speech = False
            self.voiced_run_ms = 0
            return Step((Mark.END,), frame, voiced)
        if self.utterance_ms >= self.cfg.max_utterance_ms:
            self.in_speech = False
            self.voiced_run_ms = 0
            return Step((Mark.CUT,), frame, voiced)
        return Step(audio=frame, voiced=voiced)
