"""Has the caller finished? Smart Turn v3.2 reads it from the voice, not the words.

The words alone cannot tell a finished "je voudrais mon numéro Siret" from "je voudrais…
euh…": the quick end of turn only fires for requests the dialogue understands, and every
other turn waits the whole ``end_silence_ms``. Smart Turn (Daily, BSD-2-Clause) is a
Whisper-tiny encoder with a classifier head, trained on 23 languages including French, that
scores the last 8 s of a turn: probability that the speaker is done (falling intonation,
closed phrase) rather than mid-sentence (rising pitch, a hesitation, a hanging article).

The model is the 8 MB ONNX file shipped inside the pipecat-ai wheel, installed alone through
the model manifest (``smart-turn-v3.2``), run with onnxruntime on one thread. Its input is
Whisper's 80-band log-mel spectrogram of 8 s at 16 kHz, the audio padded with zeros at the
front (the same computation as Whisper's feature extractor: centred 25 ms Hann frames every
10 ms, Slaney mel filters, log10 clamped to 8 below the peak, scaled to about [-1, 1]).

One model per process (:func:`load_smart_turn`), shared by every call: a prediction holds
no state.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from .audio import resample
from .errors import ModelMissing

NAME = "smart-turn-v3.2"
FILE = "smart-turn-v3.2-cpu.onnx"
RATE = 16000
SECONDS = 8
N_FFT, HOP, N_MELS = 400, 160, 80


def _mel_filters() -> np.ndarray:
    """(N_FFT/2+1, N_MELS) Slaney-scale, area-normalised triangular filters (as Whisper)."""
    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        mel = 3.0 * f / 200.0
        return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0)
                        * (27.0 / np.log(6.4)), mel)

    def mel_to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        hz = 200.0 * m / 3.0
        return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), hz)

    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(RATE / 2), N_MELS + 2))
    bins = np.linspace(0, RATE // 2, N_FFT // 2 + 1)
    slopes = edges[None, :] - bins[:, None]
    down = -slopes[:, :-2] / np.diff(edges)[:-1]
    up = slopes[:, 2:] / np.diff(edges)[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:N_MELS + 2] - edges[:N_MELS]))[None, :]


_FILTERS = _mel_filters()
_WINDOW = np.hanning(N_FFT + 1)[:-1]          # periodic Hann


def log_mel(audio16k: np.ndarray) -> np.ndarray:
    """(80, 800) float32 features of the last 8 s of ``audio16k`` (float, 16 kHz)."""
    n = RATE * SECONDS
    x = np.asarray(audio16k, dtype=np.float32)[-n:]
    x = np.pad(x, (n - x.size, 0))                       # zeros before: the end is what counts
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    padded = np.pad(x.astype(np.float64), (N_FFT // 2, N_FFT // 2), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2
    mel = np.log10(np.maximum(1e-10, power @ _FILTERS)).T[:, :-1]
    mel = np.maximum(mel, mel.max() - 8.0)
    return ((mel + 4.0) / 4.0).astype(np.float32)


class SmartTurn:
    """The end-of-turn model: :meth:`done` is the probability that the caller has finished."""

    name = NAME

    def __init__(self, model_file: Path, threads: int = 1) -> None:
        if not model_file.is_file():
            raise ModelMissing(f"end-of-turn model {NAME} is not installed in "
                               f"{model_file.parent}: run `callbot models install`")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(model_file), sess_options=options,
                                             providers=["CPUExecutionProvider"])

    def done(self, pcm: np.ndarray, rate: int) -> float:
        """Probability (0-1) that the speech in ``pcm`` (int16 or float in [-1, 1], at
        ``rate``; the turn so far, its last 8 s are read) ends a finished turn."""
        x = np.asarray(pcm)
        if x.dtype == np.int16:
            x = x.astype(np.float32) / 32768.0
        if rate != RATE:
            x = resample(x, rate, RATE)
        features = log_mel(x)[None]
        out = self._session.run(None, {"input_features": features})[0]
        return float(np.asarray(out).reshape(-1)[0])


_MODELS: dict[Path, SmartTurn] = {}
_LOCK = threading.Lock()


def load_smart_turn(models_dir: Path) -> SmartTurn:
    """The process's end-of-turn model (loaded once, shared by every call)."""
    path = Path(models_dir) / NAME / FILE
    with _LOCK:
        if path not in _MODELS:
            _MODELS[path] = SmartTurn(path)
        return _MODELS[path]
