"""Whisper (faster-whisper / CTranslate2) recognizer: batch, one decode per utterance.

Whisper has no streaming mode: ``accept`` only buffers, ``finish`` decodes the whole
utterance. The caller's endpointer decides where utterances end, so the built-in VAD is
off (it would cut twice and add latency).

Thread safety: one :class:`WhisperEngine` (one ``WhisperModel``) is shared by every call.
``WhisperModel.transcribe`` keeps no per-call state on the model object (the feature
extractor is only mutated when ``chunk_length`` is passed, which we never do; the
tokenizer is built per call), and CTranslate2 models accept concurrent calls from several
Python threads: with ``num_workers=1`` (the default used here) they are queued inside
CTranslate2 and run one at a time on ``cpu_threads`` threads, which is what a 2-core
machine wants. So no Python lock is needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..audio import pcm_to_array, resample
from .base import Transcript, check_rate

WHISPER_RATE = 16000
# Hallucination guard (Whisper invents "Sous-titrage ST' 501" on noise): a segment that the
# model itself thinks is probably not speech *and* decoded with low confidence is dropped;
# so is a repetition loop (gzip compression ratio above Whisper's own 2.4 threshold).
NO_SPEECH_MAX = 0.6
LOGPROB_MIN = -1.0
COMPRESSION_MAX = 2.4


class WhisperEngine:
    """A loaded Whisper model, shared by all calls of the process."""

    name = "whisper"

    def __init__(self, model_dir: Path, language: str = "fr", beam_size: int = 1,
                 threads: int = 2) -> None:
        from faster_whisper import WhisperModel

        self.model = Path(model_dir).name
        self.language = language
        self.beam_size = beam_size
        self._whisper = WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                     cpu_threads=threads)

    def recognizer(self, sample_rate: int = 8000) -> "WhisperRecognizer":
        return WhisperRecognizer(self, check_rate(sample_rate))

    def transcribe(self, samples: np.ndarray, sample_rate: int) -> Transcript:
        """Decode one utterance of int16-scale samples; safe to call from several threads."""
        if samples.size == 0:
            return Transcript("", 0.0, self.name, True)
        audio = resample(samples, sample_rate, WHISPER_RATE) / 32768.0
        segments, _info = self._whisper.transcribe(
            audio.astype(np.float32), language=self.language, beam_size=self.beam_size,
            # One temperature: no fallback re-decodes, so latency stays bounded on bad audio.
            temperature=0.0, condition_on_previous_text=False, without_timestamps=True,
            vad_filter=False)
        kept = [s for s in segments
                if not (s.no_speech_prob > NO_SPEECH_MAX and s.avg_logprob < LOGPROB_MIN)
                and s.compression_ratio <= COMPRESSION_MAX and s.text.strip()]
        text = " ".join(s.text.strip() for s in kept)
        if not kept:
            return Transcript("", 0.0, self.name, True)
        logprob = sum(s.avg_logprob for s in kept) / len(kept)
        no_speech = sum(s.no_speech_prob for s in kept) / len(kept)
        confidence = math.exp(min(logprob, 0.0)) * (1.0 - no_speech)
        return Transcript(text, max(0.0, min(1.0, confidence)), self.name, True)


class WhisperRecognizer:
    """Per-call buffer in front of the shared engine; no partials (batch engine)."""

    def __init__(self, engine: WhisperEngine, sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self._buf = bytearray()

    def accept(self, pcm: bytes) -> Transcript | None:
        self._buf += pcm
        return None

    def finish(self) -> Transcript:
        data, self._buf = bytes(self._buf), bytearray()
        data = data[: len(data) // 2 * 2]
        return self.engine.transcribe(pcm_to_array(data), self.sample_rate)
