"""Speech synthesis: pick and load the engine the configuration asks for.

The call session wraps the engine in :class:`SpeechCache`:
``SpeechCache(load_tts(config), cache_root(config))``.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Config
from ..errors import ModelMissing
from .base import OUTPUT_RATE, TtsEngine
from .cache import SpeechCache, cache_root

__all__ = ["OUTPUT_RATE", "SpeechCache", "TtsEngine", "cache_root", "load_tts", "resolve_tts"]


def _piper_ready(path: Path) -> bool:
    return (path / f"{path.name}.onnx").is_file() and (path / f"{path.name}.onnx.json").is_file()


def resolve_tts(config: Config, engine: str | None = None) -> tuple[str, str]:
    """(engine, voice) that ``load_tts`` would use, without loading anything.

    "auto" prefers Piper (natural voice) when the configured voice is installed, else the
    always-available espeak-ng.
    """
    engine = engine or config.tts.engine
    if engine == "auto":
        ready = _piper_ready(config.paths.models / config.tts.piper_voice)
        engine = "piper" if ready else "espeak"
    if engine == "piper":
        return "piper", config.tts.piper_voice
    if engine == "espeak":
        return "espeak", config.tts.espeak_voice
    raise ValueError(f"unknown TTS engine {engine!r} (auto, piper or espeak)")


def load_tts(config: Config, engine: str | None = None) -> TtsEngine:
    """Load the TTS engine once per process; raises ModelMissing with the fix when absent."""
    name, voice = resolve_tts(config, engine)
    if name == "piper":
        path = config.paths.models / voice
        if not _piper_ready(path):
            raise ModelMissing(
                f"Piper voice {voice} is not installed in {path}: run `callbot models install` "
                f"(offline: put {voice}.onnx and {voice}.onnx.json in a folder DIR and run "
                f"`callbot models install --from DIR`)")
        from .piper import PiperEngine

        return PiperEngine(path, slow_factor=config.tts.slow_factor)
    from .espeak import EspeakEngine

    return EspeakEngine(voice, rate=config.tts.espeak_rate, slow_factor=config.tts.slow_factor)
