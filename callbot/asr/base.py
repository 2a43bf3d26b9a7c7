"""What the core needs from a speech recognizer, whatever the engine.

The engine (model weights) is loaded once per process and shared by every call; each call
gets its own :class:`Recognizer`, because recognizers hold per-utterance audio state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Transcript:
    """A recognition result. ``final`` is False for hypotheses not yet closed."""

    text: str
    confidence: float | None  # 0..1; 0 for an empty result; None: not scored (a partial)
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

    # --- early end of turn ------------------------------------------------------------------
    # The turn taker (callbot/turns.py) may end a turn after a short silence when what was
    # said so far is already a complete request. It needs the engine's best guess before the
    # utterance is closed.

    def speculate(self) -> None:
        """The caller has paused: start working out :meth:`hypothesis` for the audio so far
        (a batch engine starts decoding in the background; a streaming one has it already)."""
        ...

    def drop_speculation(self) -> None:
        """The caller spoke again: the speculative hypothesis no longer covers the utterance."""
        ...

    def hypothesis(self) -> Transcript | None:
        """The best transcript of the audio so far if it is ready now (never blocks)."""
        ...

    def commit(self, hypothesis: Transcript) -> Transcript:
        """Close the utterance with ``hypothesis`` as its result (cheaper than finish()); reset."""
        ...

    def close(self) -> None:
        """The call is over: the recognizer may be reused by another call (warm caches)."""
        ...


class AsrEngine(Protocol):
    """Loaded once per process, shared by all calls."""

    name: str   # "whisper" | "vosk"
    model: str  # model name (folder under paths.models)

    def recognizer(self, sample_rate: int = 8000) -> Recognizer:
        ...

    def warm(self, speech: bytes, count: int = 1) -> None:
        """Prepare ``count`` recognizers (8 kHz) on real speech before the first call, so that
        no caller pays for first-use costs (thread start-up, decoder caches)."""
        ...


SAMPLE_RATES = (8000, 16000)


def check_rate(sample_rate: int) -> int:
    """Refuse rates the core never produces, so a wrong caller fails at once, not with noise."""
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"sample_rate must be 8000 or 16000, not {sample_rate}")
    return sample_rate


class AsrOverloaded(Exception):
    """The recognizer cannot decode this utterance in time (the machine's queue is full or
    too slow): the turn is heard as nothing, and the caller asked to repeat."""
