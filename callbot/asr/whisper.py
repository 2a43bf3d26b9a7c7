"""Whisper (faster-whisper / CTranslate2) recognizer: batch, one decode per utterance.

Whisper has no streaming mode: ``accept`` only buffers, ``finish`` decodes the whole
utterance. The caller's endpointer decides where utterances end, so the built-in VAD is
off (it would cut twice and add latency).

The encoder window. Whisper was trained on 30 s windows and faster-whisper pads every input
to 30 s, so a one-second "au revoir" costs as much encoder time as 30 s of speech. A phone
utterance is short (``endpointing.max_utterance_ms`` = 15 s at most), and CTranslate2
accepts shorter inputs, so the utterance is padded to ``window_s`` seconds only (at least
its own length plus 5 s of padding, at most 30). The padding is the log-mel of silence, as
in Whisper's training (faster-whisper pads its features with zeros, which the model reads
as a sound). Measured on 120 real French prompts (asterisk-core-sounds-fr, 8 kHz, greedy,
``bench/asr_eval.py``'s sample): 10 s window WER 16.6 %, the full 30 s window 16.6 %, for a
decode p50 of 0.49 s against 1.81 s on 2 cores; 8 s: 16.9 %; 10 s padded with zeros: 17.0 %.
``window_s = 30`` is the original behaviour.

The decoder is called directly (prompt = start of transcript, language, no timestamps)
rather than through ``WhisperModel.transcribe``: that one mutates the shared feature
extractor when given a window length, which several calls at once must not do.

Thread safety: one :class:`WhisperEngine` (one CTranslate2 model) is shared by every call.
CTranslate2 models accept concurrent calls from several Python threads: with
``num_workers=1`` they are queued inside CTranslate2 and run one at a time on
``cpu_threads`` threads, which is what a 2-core machine wants.

Speculation. When the caller pauses, the turn taker asks for a hypothesis before the
utterance is over (:meth:`WhisperRecognizer.speculate`): the decode runs on the engine's
small thread pool while the silence is still being timed, so that when the turn ends the
transcript is usually ready. If the caller speaks again the speculative result is dropped.
"""

from __future__ import annotations

import heapq
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..audio import pcm_to_array, resample
from .base import Transcript, check_rate

WHISPER_RATE = 16000
FRAMES_PER_S = 100          # Whisper's mel frames (10 ms hop)
FULL_WINDOW_S = 30
PAD_S = 5.0                 # silence after the speech inside the window (see above)
SILENCE_BELOW_MAX = 2.0     # log10 floor of 8 below the peak, scaled by 1/4
SPECULATE_WHEN_BUSY_BELOW = 2   # decodes already under way in the process
# Tokens allowed per decode: French runs at about 5 tokens per second of fast speech; a
# runaway repetition loop stops here (and the compression-ratio check drops it).
TOKENS_PER_S, MAX_TOKENS = 12, 448
# Hallucination guard (Whisper invents "Sous-titrage ST' 501" on noise): a result that the
# model itself thinks is probably not speech *and* decoded with low confidence is dropped;
# so is a repetition loop (gzip compression ratio above Whisper's own 2.4 threshold).
NO_SPEECH_MAX = 0.6
LOGPROB_MIN = -1.0
COMPRESSION_MAX = 2.4


class WhisperEngine:
    """A loaded Whisper model, shared by all calls of the process."""

    name = "whisper"

    def __init__(self, model_dir: Path, language: str = "fr", beam_size: int = 1,
                 threads: int = 2, window_s: float = 10.0, prompt: str = "",
                 batch: int = 1) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = Path(model_dir).name
        self.language = language
        self.beam_size = beam_size
        self.window_s = min(float(window_s), FULL_WINDOW_S) if window_s > 0 else FULL_WINDOW_S
        self._whisper = WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                     cpu_threads=threads)
        tok = Tokenizer(self._whisper.hf_tokenizer, self._whisper.model.is_multilingual,
                        task="transcribe", language=language)
        self._tokenizer = tok
        self._prompt = [tok.sot, tok.language, tok.transcribe, tok.no_timestamps] \
            if self._whisper.model.is_multilingual else [tok.sot, tok.no_timestamps]
        if prompt.strip():   # words to expect, as previous text (Whisper's initial prompt)
            self._prompt = [tok.sot_prev] + tok.encode(" " + prompt.strip()) + self._prompt
        self._suppress = list(get_suppressed_tokens(tok, [-1]))
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0                  # decodes under way in this process
        self._busy_lock = threading.Lock()
        # Batching (batch > 1): utterances waiting while a decode runs go together into the
        # next one, the longest-waiting first (see _batcher).
        self.batch = max(1, int(batch))
        self._waiting: list[tuple[float, int, np.ndarray, int, Future]] = []
        self._waiting_cond = threading.Condition()
        self._seq = 0
        self._batcher_thread: threading.Thread | None = None

    @property
    def busy(self) -> int:
        return self._busy

    def recognizer(self, sample_rate: int = 8000) -> "WhisperRecognizer":
        return WhisperRecognizer(self, check_rate(sample_rate))

    def warm(self, speech: bytes, count: int = 1) -> None:
        # One decode allocates CTranslate2's buffers and starts its threads; recognizers
        # hold no model state, so one is enough whatever ``count``.
        rec = self.recognizer(8000)
        rec.accept(speech)
        rec.finish()

    def submit(self, samples: np.ndarray, sample_rate: int) -> "Future[Transcript]":
        """Decode in the background (speculation); threads are created on first use and
        inherit the priority of the thread that first asks (a lowered call thread)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="whisper")
        return self._pool.submit(self.transcribe, samples, sample_rate)

    def window_frames(self, n_frames: int) -> int:
        """The encoder window for ``n_frames`` of speech, rounded up to whole seconds.

        Every distinct input length leaves kernels and buffers cached in CTranslate2: with
        windows of any length, 150 decodes of 0.8-9 s took a process from 295 to 359 MB and
        still rising; rounded to whole seconds (at most 21 lengths), the same decodes stay at
        290 MB. The extra padding is at most one second of silence-level features."""
        want = max(self.window_s * FRAMES_PER_S, n_frames + PAD_S * FRAMES_PER_S)
        want = math.ceil(want / FRAMES_PER_S) * FRAMES_PER_S
        return int(min(FULL_WINDOW_S * FRAMES_PER_S, want))

    def transcribe(self, samples: np.ndarray, sample_rate: int,
                   since: float | None = None) -> Transcript:
        """Decode one utterance of int16-scale samples; safe to call from several threads.

        ``since``: when the caller stopped speaking (``time.monotonic()``), the order in
        which waiting utterances are decoded when batching (default: now)."""
        if samples.size == 0:
            return Transcript("", 0.0, self.name, True)
        with self._busy_lock:
            self._busy += 1
        try:
            if self.batch <= 1:
                return self._decode_batch([(samples, sample_rate)])[0]
            return self._queued(samples, sample_rate, since).result()
        finally:
            with self._busy_lock:
                self._busy -= 1

    # --- batching -------------------------------------------------------------------------
    def _queued(self, samples: np.ndarray, sample_rate: int, since: float | None) -> Future:
        fut: Future[Transcript] = Future()
        with self._waiting_cond:
            self._seq += 1
            heapq.heappush(self._waiting, (time.monotonic() if since is None else since,
                                           self._seq, samples, sample_rate, fut))
            if self._batcher_thread is None:
                self._batcher_thread = threading.Thread(target=self._batcher, daemon=True,
                                                        name="whisper-batcher")
                self._batcher_thread.start()
            self._waiting_cond.notify()
        return fut

    def _batcher(self) -> None:
        """One decode at a time; each takes every utterance waiting (up to ``batch``), the
        callers who have waited longest first. No utterance waits for a batch to fill: a
        lone one is decoded at once, and what arrives during a decode goes in the next."""
        while True:
            with self._waiting_cond:
                while not self._waiting:
                    self._waiting_cond.wait()
                items = [heapq.heappop(self._waiting)
                         for _ in range(min(self.batch, len(self._waiting)))]
            try:
                results = self._decode_batch([(it[2], it[3]) for it in items])
            except Exception as exc:   # noqa: BLE001 - handed to every caller of the batch
                for it in items:
                    it[4].set_exception(exc)
                continue
            for it, result in zip(items, results):
                it[4].set_result(result)

    def _decode_batch(self, utterances: list[tuple[np.ndarray, int]]) -> list[Transcript]:
        """Encode and decode utterances in one CTranslate2 call: each padded with silence
        to the largest window among them."""
        from faster_whisper.transcribe import get_ctranslate2_storage

        feats, lengths = [], []
        for samples, sample_rate in utterances:
            audio = (resample(samples, sample_rate, WHISPER_RATE) / 32768.0).astype(np.float32)
            audio = audio[: FULL_WINDOW_S * WHISPER_RATE]
            feats.append(self._whisper.feature_extractor(audio))   # (mels, frames), unpadded
            lengths.append(audio.size)
        target = max(self.window_frames(f.shape[-1]) for f in feats)
        batch = np.empty((len(feats), feats[0].shape[0], target), dtype=np.float32)
        for i, f in enumerate(feats):
            n = min(f.shape[-1], target)
            batch[i, :, :n] = f[:, :n]
            # Pad with the log-mel of silence (Whisper's normalisation maps digital silence
            # to the utterance's maximum minus 2), not with 0, which the model reads as noise.
            batch[i, :, n:] = float(f.max()) - SILENCE_BELOW_MAX
        model = self._whisper.model
        encoded = model.encode(get_ctranslate2_storage(batch), to_cpu=False)
        results = model.generate(
            encoded, [self._prompt] * len(feats), beam_size=self.beam_size,
            max_length=min(MAX_TOKENS, 32 + int(TOKENS_PER_S * max(lengths) / WHISPER_RATE)),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
            suppress_tokens=self._suppress)
        return [self._transcript(r) for r in results]

    def _transcript(self, result) -> Transcript:
        from faster_whisper.transcribe import get_compression_ratio

        tokens = [t for t in result.sequences_ids[0] if t < self._tokenizer.eot]
        text = self._tokenizer.decode(tokens).strip()
        # avg log-probability as faster-whisper computes it (length penalty 1)
        logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        no_speech = float(result.no_speech_prob)
        if (not any(c.isalnum() for c in text)        # "..." is what Whisper says to silence
                or (no_speech > NO_SPEECH_MAX and logprob < LOGPROB_MIN)
                or get_compression_ratio(text) > COMPRESSION_MAX):
            return Transcript("", 0.0, self.name, True)
        confidence = math.exp(min(logprob, 0.0)) * (1.0 - no_speech)
        return Transcript(text, max(0.0, min(1.0, confidence)), self.name, True)


class WhisperRecognizer:
    """Per-call buffer in front of the shared engine; no partials (batch engine)."""

    def __init__(self, engine: WhisperEngine, sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self._buf = bytearray()
        self._spec: Future[Transcript] | None = None

    def accept(self, pcm: bytes) -> Transcript | None:
        self._buf += pcm
        return None

    def _samples(self) -> np.ndarray:
        data = bytes(self._buf)
        return pcm_to_array(data[: len(data) // 2 * 2])

    def speculate(self) -> None:
        # Under load a speculative decode that the caller's next words make useless is
        # CPU taken from the decodes callers are waiting for: speculate only when idle.
        if self._spec is None and self._buf and self.engine.busy < SPECULATE_WHEN_BUSY_BELOW:
            self._spec = self.engine.submit(self._samples(), self.sample_rate)

    def drop_speculation(self) -> None:
        self._spec = None       # CTranslate2 cannot be interrupted; its result is ignored

    def hypothesis(self) -> Transcript | None:
        if self._spec is None or not self._spec.done() or self._spec.exception() is not None:
            return None
        return self._spec.result()

    def commit(self, hypothesis: Transcript) -> Transcript:
        self._buf, self._spec = bytearray(), None
        return Transcript(hypothesis.text, hypothesis.confidence, hypothesis.engine, True)

    def finish(self) -> Transcript:
        """The speculative decode, when the caller stayed silent since it started (the audio
        after it is only the end-of-turn silence); a decode of the whole utterance otherwise."""
        spec, self._spec = self._spec, None
        samples = self._samples()
        self._buf = bytearray()
        if spec is not None:
            try:
                return spec.result()
            except Exception:   # noqa: BLE001 - decode again below, and raise from there
                pass
        return self.engine.transcribe(samples, self.sample_rate)

    def close(self) -> None:
        self._buf, self._spec = bytearray(), None
