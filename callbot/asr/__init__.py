"""Speech recognition: pick and load the engine the configuration asks for.

Engines are imported lazily so that ``callbot models list`` and the tests of other layers
never pay for loading CTranslate2 or Kaldi.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..errors import ModelMissing
from .base import AsrEngine, Recognizer, Transcript

__all__ = ["AsrEngine", "Recognizer", "Transcript", "load_asr", "resolve_asr"]

INSTALL_HINT = "run `callbot models install`"


def _vosk_ready(path: Path) -> bool:
    return (path / "am" / "final.mdl").is_file()


def _whisper_ready(path: Path) -> bool:
    return (path / "model.bin").is_file()


def resolve_asr(config: Config, engine: str | None = None) -> tuple[str, str]:
    """(engine, model name) that ``load_asr`` would use, without loading anything.

    "auto" prefers Vosk only when the configured (French) Vosk model is installed: it
    streams and is lighter; Whisper is the model that is always obtainable.
    """
    engine = engine or config.asr.engine
    if engine == "auto":
        engine = "vosk" if _vosk_ready(config.paths.models / config.asr.vosk_model) else "whisper"
    if engine == "vosk":
        return "vosk", config.asr.vosk_model
    if engine == "whisper":
        return "whisper", config.asr.whisper_model
    raise ValueError(f"unknown ASR engine {engine!r} (auto, vosk or whisper)")


def load_asr(config: Config, engine: str | None = None, recordings: bool = False) -> AsrEngine:
    """Load the ASR engine once per process; raises ModelMissing with the fix when absent.

    ``recordings``: for files (``callbot transcribe``), decoded as accurately as the
    configuration allows (``asr.recordings_beam_size``), since nobody waits on a line."""
    name, model = resolve_asr(config, engine)
    path = config.paths.models / model
    if name == "vosk":
        if not _vosk_ready(path):
            raise ModelMissing(f"Vosk model {model} is not installed in {path}: {INSTALL_HINT} "
                               f"(offline: `callbot models install --from DIR`)")
        from .vosk import VoskEngine

        return VoskEngine(path)
    if not _whisper_ready(path):
        raise ModelMissing(f"Whisper model {model} is not installed in {path}: {INSTALL_HINT}")
    from .whisper import WhisperEngine

    beam = config.asr.recordings_beam_size if recordings else config.asr.beam_size
    threads = config.asr.threads or (os.cpu_count() or 1)
    return WhisperEngine(path, language=config.asr.language, beam_size=beam,
                         prompt=config.asr.prompt, threads=threads,
                         decoders=config.asr.decoders or threads,
                         window_s=config.asr.whisper_window_s,
                         batch=1 if recordings else config.asr.whisper_batch,
                         early_decode_s=0.0 if recordings else config.asr.early_decode_s)
