"""What the core needs from a speech synthesizer, whatever the engine.

Every engine returns telephony audio (8 kHz 16-bit mono PCM) so that the caller, the
cache and the telephony layer never resample.
"""

from __future__ import annotations

from typing import Protocol

OUTPUT_RATE = 8000


class TtsEngine(Protocol):
    """Loaded once per process; ``synthesize`` may be called from several threads."""

    name: str   # "piper" | "espeak"
    voice: str  # voice name (Piper model folder, or espeak-ng voice)

    def synthesize(self, text: str, slow: bool = False) -> bytes:
        """8 kHz 16-bit mono PCM; ``slow`` speaks at ``tts.slow_factor`` times the rate."""
        ...
