"""espeak-ng, called as a program: the only French synthesizer always installable here.

It is a separate process on purpose: espeak-ng is GPL-3.0+, and a subprocess keeps it out
of our address space; it also costs only ~5 ms per sentence (formant synthesis).
"""

from __future__ import annotations

import shutil
import struct
import subprocess

import numpy as np

from ..audio import pcm_to_array, resample, to_int16
from ..errors import CallbotError, ModelMissing
from .base import OUTPUT_RATE

BINARY = "espeak-ng"
MIN_RATE, MAX_RATE = 80, 450  # words per minute accepted by espeak-ng


def wav_pcm(wav: bytes) -> tuple[np.ndarray, int]:
    """Samples and rate of espeak-ng's streamed WAV.

    With --stdout the RIFF and data sizes are placeholders (the length is unknown while
    streaming), so the sizes are ignored: read the fmt chunk, then take everything after
    the 'data' chunk header.
    """
    if wav[:4] != b"RIFF" or wav[8:12] != b"WAVE":
        raise CallbotError("espeak-ng did not write a WAV file on its standard output")
    pos, rate, fmt = 12, 0, None
    while pos + 8 <= len(wav):
        cid, size = wav[pos:pos + 4], struct.unpack("<I", wav[pos + 4:pos + 8])[0]
        if cid == b"fmt ":
            fmt = struct.unpack("<HHIIHH", wav[pos + 8:pos + 24])
            rate = fmt[2]
        elif cid == b"data":
            if fmt is None or fmt[0] != 1 or fmt[1] != 1 or fmt[5] != 16:
                raise CallbotError(f"espeak-ng wrote an unexpected WAV format {fmt}")
            data = wav[pos + 8:]
            return pcm_to_array(data[: len(data) // 2 * 2]), rate
        pos += 8 + size + (size & 1)
    raise CallbotError("espeak-ng wrote a WAV file without audio data")


class EspeakEngine:
    name = "espeak"

    def __init__(self, voice: str = "fr", rate: int = 165, slow_factor: float = 0.8) -> None:
        self.binary = shutil.which(BINARY)
        if self.binary is None:
            raise ModelMissing("espeak-ng is not installed: apt-get install espeak-ng")
        self.voice = voice
        self.rate = rate
        self.slow_factor = slow_factor

    def synthesize(self, text: str, slow: bool = False) -> bytes:
        if not text.strip():
            return b""
        rate = round(self.rate * self.slow_factor) if slow else self.rate
        rate = max(MIN_RATE, min(MAX_RATE, rate))
        # Text goes through stdin: a sentence starting with "-" must never read as an option.
        proc = subprocess.run([self.binary, "-v", self.voice, "-s", str(rate), "--stdout"],
                              input=text.encode("utf-8"), capture_output=True, timeout=30)
        if proc.returncode != 0:
            err = proc.stderr.decode("utf-8", "replace").strip()
            raise CallbotError(f"espeak-ng failed for voice {self.voice!r}: {err} "
                               f"(list voices with `espeak-ng --voices=fr`)")
        samples, src_rate = wav_pcm(proc.stdout)
        return to_int16(resample(samples, src_rate, OUTPUT_RATE)).tobytes()
