"""Transcribing a recording of any length (``callbot transcribe``).

A call's utterance is short and endpointed; a recording may last minutes. Whisper reads at
most 30 s at a time, so a long file is cut into windows of at most ``MAX_WINDOW_S`` at its
pauses: within each stretch the cut falls in the longest quiet run (words are never split
when the speaker breathes), or at the quietest 20 ms if there is no pause at all. Each
window is decoded like an utterance of a call, by the same engine, and the texts are
joined. The recognizer, not this module, decides how a window is padded.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from .asr.base import AsrEngine
from .audio import TELEPHONY_RATE, frame_bytes, level_db, split_frames
from .config import EndpointingConfig
from .endpointing import Endpointer

MAX_WINDOW_S = 28.0      # Whisper's 30 s, minus room for its own padding
MIN_WINDOW_S = 8.0       # never cut a window shorter than this when looking for a pause
FRAME_MS = 20


@dataclass(frozen=True)
class FileTranscript:
    text: str
    duration_s: float
    decode_s: float
    windows: int

    @property
    def rtf(self) -> float:
        return self.decode_s / self.duration_s if self.duration_s else 0.0


def pause_cuts(pcm: bytes, endpointing: EndpointingConfig, rate: int = TELEPHONY_RATE,
               max_s: float = MAX_WINDOW_S, min_s: float = MIN_WINDOW_S) -> list[int]:
    """Frame indexes (20 ms) where a long recording is cut; [] when it fits one window."""
    frames = split_frames(pcm, rate, FRAME_MS)
    max_f, min_f = int(max_s * 1000 / FRAME_MS), int(min_s * 1000 / FRAME_MS)
    if len(frames) <= max_f:
        return []
    detector = Endpointer(endpointing)          # same voiced/quiet decision as in calls
    voiced = np.array([detector.is_voiced(f) for f in frames])
    levels = np.array([level_db(f) for f in frames])
    cuts, start = [], 0
    while len(frames) - start > max_f:
        lo, hi = start + min_f, start + max_f
        best, best_len, run = None, 0, 0
        for i in range(lo, hi):
            run = 0 if voiced[i] else run + 1
            if run > best_len:
                best, best_len = i - run // 2, run      # middle of the quiet run
        cut = best if best is not None and best_len >= 5 else lo + int(np.argmin(levels[lo:hi]))
        cuts.append(cut)
        start = cut
    return cuts


def transcribe_pcm(engine: AsrEngine, pcm: bytes, endpointing: EndpointingConfig,
                   rate: int = TELEPHONY_RATE) -> FileTranscript:
    """The text of a whole recording (16-bit mono PCM at ``rate``)."""
    step = frame_bytes(rate, FRAME_MS)
    bounds = [0] + [c * step for c in pause_cuts(pcm, endpointing, rate)] + [len(pcm)]
    rec = engine.recognizer(rate)
    texts = []
    t0 = time.perf_counter()
    for a, b in zip(bounds, bounds[1:]):
        rec.accept(pcm[a:b])
        text = rec.finish().text.strip()
        if text:
            texts.append(text)
    decode_s = time.perf_counter() - t0
    rec.close()
    return FileTranscript(" ".join(texts), len(pcm) / 2 / rate, decode_s, len(bounds) - 1)
