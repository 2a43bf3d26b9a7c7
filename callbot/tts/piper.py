"""Piper (VITS, onnxruntime) voice: the production choice once a French voice is installed.

Piper phonemizes with its bundled espeak-ng *library*, whose state is global and not
thread-safe, so one lock serializes ``synthesize``; onnxruntime already uses every core
for one sentence, so the lock costs no throughput on the target machine.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from ..audio import resample, to_int16
from ..errors import ModelMissing
from .base import OUTPUT_RATE

SENTENCE_PAUSE_S = 0.2  # Piper returns one chunk per sentence, with no pause between them


class PiperEngine:
    name = "piper"

    def __init__(self, voice_dir: Path, slow_factor: float = 0.8) -> None:
        from piper import PiperVoice

        self.voice = Path(voice_dir).name
        onnx = Path(voice_dir) / f"{self.voice}.onnx"
        conf = Path(voice_dir) / f"{self.voice}.onnx.json"
        for f in (onnx, conf):
            if not f.is_file():
                raise ModelMissing(f"Piper voice file {f} is missing: run `callbot models install`")
        self.slow_factor = slow_factor
        self._voice = PiperVoice.load(str(onnx), config_path=str(conf))
        self._lock = threading.Lock()

    def synthesize(self, text: str, slow: bool = False) -> bytes:
        from piper import SynthesisConfig

        if not text.strip():
            return b""
        base = self._voice.config.length_scale
        # Slower speech = longer phonemes: rate x slow_factor means length / slow_factor.
        syn = SynthesisConfig(length_scale=base / self.slow_factor if slow else base)
        with self._lock:
            chunks = list(self._voice.synthesize(text, syn_config=syn))
        if not chunks:
            return b""
        rate = chunks[0].sample_rate
        pause = np.zeros(int(rate * SENTENCE_PAUSE_S), dtype=np.int16)
        parts = [part for c in chunks for part in (pause, c.audio_int16_array)][1:]
        samples = np.concatenate(parts)
        return to_int16(resample(samples, rate, OUTPUT_RATE)).tobytes()
