"""Rendered sentences kept on disk and in memory: prompts are the same thousands of times.

Files are real 8 kHz WAV (supervisors can listen to what callers hear) named by a hash
of everything that changes the audio: engine, voice, slow flag and the exact text. A new
voice therefore never serves stale audio, and old files are simply never read again.
Writes go to a temporary file in the same folder and are renamed into place, so several
worker processes can share the folder without ever reading a half-written file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import wave
from collections import OrderedDict
from pathlib import Path

from ..config import Config
from ..audio import write_wav
from .base import OUTPUT_RATE, TtsEngine

MEMORY_ITEMS = 2000  # ~2000 sentences x ~50 kB: bounded even if answers embed caller data


def cache_root(config: Config) -> Path:
    return config.paths.models / "tts-cache"


class SpeechCache:
    """Wraps a TtsEngine; also satisfies the TtsEngine protocol (``synthesize`` = ``get``)."""

    def __init__(self, engine: TtsEngine, root: Path) -> None:
        self.engine = engine
        self.name = engine.name
        self.voice = engine.voice
        self.folder = Path(root) / engine.name / engine.voice
        self.hits = 0
        self.misses = 0
        self._memory: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, text: str, slow: bool = False) -> str:
        raw = "\x00".join([self.engine.name, self.engine.voice, "slow" if slow else "normal", text])
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()

    def path(self, text: str, slow: bool = False) -> Path:
        return self.folder / f"{self.key(text, slow)}.wav"

    def contains(self, text: str, slow: bool = False) -> bool:
        with self._lock:
            if self.key(text, slow) in self._memory:
                return True
        return self.path(text, slow).is_file()

    def get(self, text: str, slow: bool = False) -> bytes:
        """Cached PCM (8 kHz 16-bit mono), rendering and storing it on a miss."""
        key = self.key(text, slow)
        with self._lock:
            pcm = self._memory.get(key)
            if pcm is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return pcm
        path = self.folder / f"{key}.wav"
        pcm = self._read(path)
        hit = pcm is not None
        if pcm is None:
            pcm = self.engine.synthesize(text, slow=slow)
            self._write(path, pcm)
        with self._lock:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
            self._memory[key] = pcm
            while len(self._memory) > MEMORY_ITEMS:
                self._memory.popitem(last=False)
        return pcm

    synthesize = get

    @staticmethod
    def _read(path: Path) -> bytes | None:
        try:
            with wave.open(str(path), "rb") as w:
                if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (OUTPUT_RATE, 1, 2):
                    return None  # not ours (edited by hand?): render again, overwrite
                return w.readframes(w.getnframes())
        except (FileNotFoundError, wave.Error, EOFError):
            return None

    def _write(self, path: Path, pcm: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
        os.close(fd)
        try:
            write_wav(tmp, pcm, OUTPUT_RATE)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
