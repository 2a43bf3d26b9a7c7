"""Vosk (Kaldi) recognizer: streaming, 8 kHz input accepted as is.

The ``vosk.Model`` (graph + acoustic model, hundreds of MB) is loaded once and shared: Vosk
documents a model as shareable between threads, each thread using its own
``KaldiRecognizer``. Kaldi's own endpointer may close a segment in the middle of what our
endpointer considers one utterance (a pause); such segments are accumulated so that
``finish`` returns the whole utterance, as the :class:`~callbot.asr.base.Recognizer`
contract says.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import Transcript, check_rate


class VoskEngine:
    """A loaded Vosk model, shared by all calls of the process."""

    name = "vosk"

    def __init__(self, model_dir: Path) -> None:
        import vosk

        vosk.SetLogLevel(-1)  # Kaldi logs every load step on stderr otherwise
        self.model = Path(model_dir).name
        self._vosk = vosk
        self._model = vosk.Model(str(model_dir))

    def recognizer(self, sample_rate: int = 8000) -> "VoskRecognizer":
        rec = self._vosk.KaldiRecognizer(self._model, check_rate(sample_rate))
        rec.SetWords(True)  # per-word confidences, for Transcript.confidence
        return VoskRecognizer(rec, sample_rate)


class VoskRecognizer:
    """One KaldiRecognizer; partials are returned only when their text changes."""

    def __init__(self, rec, sample_rate: int) -> None:
        self._rec = rec
        self.sample_rate = sample_rate
        self._texts: list[str] = []     # segments closed by Kaldi's endpointer
        self._confs: list[float] = []   # word confidences of those segments
        self._partial = ""
        self._odd = b""                 # a trailing odd byte waits for its other half

    def _take(self, result_json: str) -> None:
        result = json.loads(result_json)
        if result.get("text"):
            self._texts.append(result["text"])
            self._confs.extend(float(w.get("conf", 0.0)) for w in result.get("result", []))

    def accept(self, pcm: bytes) -> Transcript | None:
        data = self._odd + pcm
        cut = len(data) // 2 * 2
        data, self._odd = data[:cut], data[cut:]
        if not data:
            return None
        if self._rec.AcceptWaveform(data):
            self._take(self._rec.Result())
            current = ""
        else:
            current = json.loads(self._rec.PartialResult()).get("partial", "")
        text = " ".join([*self._texts, current]).strip()
        if not text or text == self._partial:
            return None  # nothing new (an empty partial only means Kaldi closed a segment)
        self._partial = text
        # Partials carry no word confidences in Vosk: confidence 0 means "not scored yet".
        return Transcript(text, 0.0, "vosk", False)

    def finish(self) -> Transcript:
        self._take(self._rec.FinalResult())
        text = " ".join(self._texts).strip()
        conf = sum(self._confs) / len(self._confs) if self._confs and text else 0.0
        self._rec.Reset()
        self._texts, self._confs, self._partial, self._odd = [], [], "", b""
        return Transcript(text, max(0.0, min(1.0, conf)), "vosk", True)
