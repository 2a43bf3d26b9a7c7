"""What the core needs from a speech recognizer, whatever the engine.

The engine (model weights) is loaded once per process and shared by every call; each call
gets its own :class:`Recognizer`, because recognizers hold per-utterance audio state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Transcript:
    """A recognition result. ``final`` is False for streaming partials (Vosk only)."""

    text: str
    confidence: float  # 0..1; 0 for an empty result
    engine: str
    final: bool


class Recognizer(Protocol):
    """One per call; not shared between threads."""

    sample_rate: int

    def accept(self, pcm: bytes) -> Transcript | None:
        """Feed 16-bit mono PCM at ``sample_rate`` (any length, usually 20 ms).

        Returns a partial transcript (``final=False``) when the engine has a new one.
        """
        ...

    def finish(self) -> Transcript:
        """Final result for everything accepted since the last finish(); then reset."""
        ...


class AsrEngine(Protocol):
    """Loaded once per process, shared by all calls."""

    name: str   # "whisper" | "vosk"
    model: str  # model name (folder under paths.models)

    def recognizer(self, sample_rate: int = 8000) -> Recognizer:
        ...


SAMPLE_RATES = (8000, 16000)


def check_rate(sample_rate: int) -> int:
    """Refuse rates the core never produces, so a wrong caller fails at once, not with noise."""
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate must be 8000 or 16000, not {sample_rate}")
    return sample_rate
