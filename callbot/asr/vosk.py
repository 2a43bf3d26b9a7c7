"""Vosk (Kaldi) recognizer: streaming, 8 kHz input accepted as is.

The ``vosk.Model`` (graph + acoustic model, hundreds of MB) is loaded once and shared: Vosk
documents a model as shareable between threads, each thread using its own
``KaldiRecognizer``. Kaldi's own endpointer may close a segment in the middle of what our
endpointer considers one utterance (a pause); such segments are accumulated so that
``finish`` returns the whole utterance, as the :class:`~callbot.asr.base.Recognizer`
contract says.

Recognizers are pooled and reused from call to call. A Vosk model with a lookahead graph
(HCLr + Gr, as the small models have) composes the decoding graph on the fly and caches
it *per recognizer*: measured on this machine, a fresh recognizer decodes at 0.55-0.65 of
real time, one that has already heard some speech at 0.2-0.3, and its final result comes
2x sooner. So :meth:`VoskEngine.warm` prepares one recognizer per possible call on real
speech before the first call, and a finished call hands its recognizer back
(:meth:`VoskRecognizer.close`) instead of throwing its cache away. Kaldi's speaker
adaptation (the online i-vector) also carries over to the next call; it re-adapts within
an utterance, and the measured effect is a word here and there, against a 2x slower decode.
"""

from __future__ import annotations

import json
import threading
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
        self._pool: dict[int, list] = {}   # sample rate -> idle warm KaldiRecognizers
        self._lock = threading.Lock()
        self.pool_max = 16

    def recognizer(self, sample_rate: int = 8000) -> "VoskRecognizer":
        check_rate(sample_rate)
        with self._lock:
            idle = self._pool.get(sample_rate)
            rec = idle.pop() if idle else None
        if rec is None:
            rec = self._vosk.KaldiRecognizer(self._model, sample_rate)
            rec.SetWords(True)  # per-word confidences, for Transcript.confidence
        return VoskRecognizer(rec, sample_rate, self)

    def release(self, rec, sample_rate: int) -> None:
        """Take back a reset KaldiRecognizer for the next call."""
        with self._lock:
            idle = self._pool.setdefault(sample_rate, [])
            if len(idle) < self.pool_max:
                idle.append(rec)

    @property
    def idle(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._pool.values())

    def warm(self, speech: bytes, count: int = 1) -> None:
        recs = [self.recognizer(8000) for _ in range(count)]
        for r in recs:
            for i in range(0, len(speech), 320):
                r.accept(speech[i:i + 320])
            r.finish()
        for r in recs:
            r.close()


class VoskRecognizer:
    """One KaldiRecognizer; partials are returned only when their text changes."""

    def __init__(self, rec, sample_rate: int, engine: VoskEngine | None = None) -> None:
        self._rec = rec
        self._engine = engine
        self.sample_rate = sample_rate
        self._texts: list[str] = []     # segments closed by Kaldi's endpointer
        self._confs: list[float] = []   # word confidences of those segments
        self._partial = ""
        self._odd = b""                 # a trailing odd byte waits for its other half
        self._closed = False            # speculate() closed the segment; only silence since

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
        if current:
            self._closed = False        # the caller went on after a speculative close
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
        self._reset()
        return Transcript(text, max(0.0, min(1.0, conf)), "vosk", True)

    def _reset(self) -> None:
        self._rec.Reset()
        self._texts, self._confs, self._partial, self._odd = [], [], "", b""
        self._closed = False

    # Early end of turn. A partial lags the audio by up to one decoding chunk (~240 ms
    # measured) plus the acoustic model's right context, so the words a caller has just
    # said may be missing from it, or still wrong. When the caller pauses, speculate()
    # closes Kaldi's segment instead (its final pass, 50-150 ms, done while the silence is
    # being timed): the hypothesis is then the real final text of everything said. If the
    # caller goes on, the next words make a new segment, accumulated like those Kaldi's own
    # endpointer closes; only the language model's context restarts there.
    def speculate(self) -> None:
        if self._partial and not self._closed:
            self._take(self._rec.FinalResult())
            self._closed = True
            self._partial = " ".join(self._texts).strip()

    def drop_speculation(self) -> None:
        self._closed = False    # more speech: the closed segment stays part of the utterance

    def hypothesis(self) -> Transcript | None:
        text = " ".join(self._texts).strip()
        if not self._closed or not text:
            return None
        conf = sum(self._confs) / len(self._confs) if self._confs else 0.0
        return Transcript(text, max(0.0, min(1.0, conf)), "vosk", False)

    def commit(self, hypothesis: Transcript) -> Transcript:
        """Only silence came after the segment was closed: nothing left to decode."""
        self._reset()
        return Transcript(hypothesis.text, hypothesis.confidence, "vosk", True)

    def close(self) -> None:
        if self._engine is not None and self._rec is not None:
            self._reset()
            self._engine.release(self._rec, self.sample_rate)
        self._rec = None
