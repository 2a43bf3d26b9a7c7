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

Thread safety and order: one :class:`WhisperEngine` (one CTranslate2 model) is shared by
every call of the process, or of the machine (:mod:`callbot.recognition`). Utterances go
into one queue ordered by when each caller stopped speaking, the caller who has waited
longest first, and ``decoders`` threads take them, each decode on ``threads // decoders``
CPU threads (CTranslate2 ``num_workers``: a replica of the model per decoder, +115 MB
each). One thread per decode is the fast way on a small CPU: measured on 2 cores, "Au
revoir" (10 s window) decodes in 427 ms on 2 threads, 366 ms on one, and two decoders of
one thread each get through 8 utterances at 194 ms per utterance against 427 one at a
time. Decodes from several processes, each with its own model, fight for the same cores
and make each other late: hence one service per machine.

Speculation. When the caller pauses, the turn taker asks for a hypothesis before the
utterance is over (:meth:`WhisperRecognizer.speculate`): the decode runs in the background
(after every caller already waiting) while the silence is still being timed, so that when
the turn ends the transcript is usually ready. If the caller speaks again the speculative
result is dropped (or kept as a settled part, see :class:`WhisperRecognizer`).
"""

from __future__ import annotations

import heapq
from collections import deque
import math
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from ..audio import pcm_to_array, resample
from .base import AsrOverloaded, Transcript, check_rate

WHISPER_RATE = 16000
FRAMES_PER_S = 100          # Whisper's mel frames (10 ms hop)
FULL_WINDOW_S = 30
PAD_S = 5.0                 # silence after the speech inside the window (see above)
SILENCE_BELOW_MAX = 2.0     # log10 floor of 8 below the peak, scaled by 1/4
# Tokens allowed per decode: French runs at about 5 tokens per second of fast speech; a
# runaway repetition loop stops here (and the compression-ratio check drops it).
TOKENS_PER_S, MAX_TOKENS = 12, 448
# Hallucination guard (Whisper invents "Sous-titrage ST' 501" on noise): a result that the
# model itself thinks is probably not speech *and* decoded with low confidence is dropped;
# so is a repetition loop (gzip compression ratio above Whisper's own 2.4 threshold).
NO_SPEECH_MAX = 0.6
LOGPROB_MIN = -1.0
COMPRESSION_MAX = 2.4
PREV_TOKENS = 64            # previous text given to the decoder
MAX_PROMPT_TOKENS = 223     # Whisper's limit for everything before the transcript


class WhisperEngine:
    """A loaded Whisper model, shared by all calls of the process."""

    name = "whisper"

    def __init__(self, model_dir: Path, language: str = "fr", beam_size: int = 1,
                 threads: int = 2, window_s: float = 10.0, prompt: str = "",
                 batch: int = 1, early_decode_s: float = 0.0, decoders: int = 1) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        self.model = Path(model_dir).name
        self.language = language
        self.beam_size = beam_size
        self.window_s = min(float(window_s), FULL_WINDOW_S) if window_s > 0 else FULL_WINDOW_S
        # ``decoders`` utterances decode at once, each on threads // decoders threads (see
        # the module's docstring for why one thread each).
        self.decoders = max(1, int(decoders))
        self._whisper = WhisperModel(str(model_dir), device="cpu", compute_type="int8",
                                     cpu_threads=max(1, threads // self.decoders),
                                     num_workers=self.decoders)
        tok = Tokenizer(self._whisper.hf_tokenizer, self._whisper.model.is_multilingual,
                        task="transcribe", language=language)
        self._tokenizer = tok
        self._prompt = [tok.sot, tok.language, tok.transcribe, tok.no_timestamps] \
            if self._whisper.model.is_multilingual else [tok.sot, tok.no_timestamps]
        if prompt.strip():   # words to expect, as previous text (Whisper's initial prompt)
            self._prompt = [tok.sot_prev] + tok.encode(" " + prompt.strip()) + self._prompt
        self._suppress = list(get_suppressed_tokens(tok, [-1]))
        self.early_decode_s = float(early_decode_s)
        self._busy = 0                  # utterances queued or being decoded
        self._decoding: dict[int, float] = {}   # decoder thread -> start of its decode
        # (background, queued ms, decode ms) of the last decodes, for benchmarks
        self.timings: deque[tuple[bool, float, float]] = deque(maxlen=4000)
        # Batching (batch > 1): utterances waiting while a decode runs go together into the
        # next one, the longest-waiting first (see _batcher).
        self.batch = max(1, int(batch))
        self._waiting: list[tuple[int, float, int, np.ndarray, int, str, Future]] = []
        self._waiting_cond = threading.Condition()
        self._seq = 0
        self._batcher_threads: list[threading.Thread] = []

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def decoding_since(self) -> float | None:
        """When the oldest decode under way started (the service's health probe)."""
        return min(self._decoding.values(), default=None)

    def recognizer(self, sample_rate: int = 8000) -> "WhisperRecognizer":
        return WhisperRecognizer(self, check_rate(sample_rate))

    def warm(self, speech: bytes, count: int = 1) -> None:
        # One decode allocates CTranslate2's buffers and starts its threads; recognizers
        # hold no model state, so one is enough whatever ``count``.
        rec = self.recognizer(8000)
        rec.accept(speech)
        rec.finish()

    def submit(self, samples: np.ndarray, sample_rate: int, prev: str = "",
               background: bool = False) -> "Future[Transcript]":
        """Decode ahead of the end of the turn (speculation, settled parts)."""
        return self.enqueue(samples, sample_rate, None, prev, background)

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
                   since: float | None = None, prev: str = "") -> Transcript:
        """Decode one utterance of int16-scale samples; safe to call from several threads.

        ``since``: when the caller stopped speaking (``time.monotonic()``), the order in
        which waiting utterances are decoded (default: now). ``prev``: what the caller said
        just before this audio, in the same utterance (Whisper's previous-text context)."""
        if samples.size == 0:
            return Transcript("", 0.0, self.name, True)
        return self.enqueue(samples, sample_rate, since, prev).result()

    def enqueue(self, samples: np.ndarray, sample_rate: int, since: float | None = None,
                prev: str = "", background: bool = False) -> "Future[Transcript]":
        """Queue one utterance; the decoder thread takes the longest-waiting caller first.

        Several threads entering CTranslate2 at once are served in arrival order (and with
        more than one model, each slows all the others): a queue ordered by ``since`` puts
        the caller who has waited longest first, whoever asked first. ``background``: a
        decode nobody waits for yet (a caller still speaking), taken only when no caller
        is waiting; it may be cancelled (``Future.cancel``) until it starts."""
        fut: Future[Transcript] = Future()
        if samples.size == 0:
            fut.set_result(Transcript("", 0.0, self.name, True))
            return fut
        fut.add_done_callback(self._forget_cancelled)
        fut.queued_at = time.monotonic()        # type: ignore[attr-defined]
        with self._waiting_cond:
            self._busy += 1
            self._seq += 1
            heapq.heappush(self._waiting, (int(background),
                                           time.monotonic() if since is None else since,
                                           self._seq, samples, sample_rate, prev, fut))
            if not self._batcher_threads:
                self._batcher_threads = [
                    threading.Thread(target=self._batcher, daemon=True,
                                     name=f"whisper-decoder-{i}")
                    for i in range(self.decoders)]
                for t in self._batcher_threads:
                    t.start()
            self._waiting_cond.notify()
        return fut

    def _forget_cancelled(self, fut: Future) -> None:
        """A decode cancelled while it waited no longer counts as work queued."""
        if fut.cancelled():
            with self._waiting_cond:
                self._busy -= 1

    def _batcher(self) -> None:
        """One decode at a time; each takes every utterance waiting (up to ``batch``), the
        callers who have waited longest first. No utterance waits for a batch to fill: a
        lone one is decoded at once, and what arrives during a decode goes in the next."""
        while True:
            with self._waiting_cond:
                while not self._waiting:
                    self._waiting_cond.wait()
                items = []
                while self._waiting and len(items) < self.batch:
                    it = heapq.heappop(self._waiting)
                    if it[6].set_running_or_notify_cancel():
                        items.append(it)           # (a cancelled one was counted off)
            if not items:
                continue
            me = threading.get_ident()
            start = self._decoding[me] = time.monotonic()
            try:
                results = self._decode_batch([(it[3], it[4]) for it in items],
                                             [it[5] for it in items])
            except Exception as exc:   # noqa: BLE001 - handed to every caller of the batch
                results = [exc] * len(items)
            end = time.monotonic()
            self._decoding.pop(me, None)
            for it in items:
                self.timings.append((bool(it[0]), 1000 * (start - it[6].queued_at),
                                     1000 * (end - start)))
            with self._waiting_cond:
                self._busy -= len(items)
            for it, result in zip(items, results):
                if isinstance(result, Exception):
                    it[6].set_exception(result)
                else:
                    it[6].set_result(result)

    def _prompt_for(self, prev: str) -> list[int]:
        """The decoder's prompt; words said just before in the same utterance go first as
        previous text (the last ``PREV_TOKENS`` of them), as Whisper does between windows."""
        if not prev.strip():
            return self._prompt
        base = self._prompt
        room = max(0, min(PREV_TOKENS, MAX_PROMPT_TOKENS - len(base)))
        if room == 0:
            return base
        tokens = self._tokenizer.encode(" " + prev.strip())[-room:]
        if base[0] == self._tokenizer.sot_prev:       # a configured prompt: prev after it
            sot = base.index(self._tokenizer.sot)
            return base[:sot] + tokens + base[sot:]
        return [self._tokenizer.sot_prev] + tokens + base

    def _decode_batch(self, utterances: list[tuple[np.ndarray, int]],
                      prevs: list[str] | None = None) -> list[Transcript]:
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
            encoded, [self._prompt_for(p) for p in (prevs or [""] * len(feats))],
            beam_size=self.beam_size,
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
    """Per-call buffer in front of the shared engine; no partials (batch engine).

    Decoding while the caller speaks. A speculative decode starts at each pause (the turn
    taker's :meth:`speculate`). When the caller goes on, the decode is not thrown away if it
    covers at least ``engine.early_decode_s`` of new audio: its words become the settled
    start of the utterance, and everything after the pause is a new part. At the end of
    the turn only the last part is left to decode (with the settled words as Whisper's
    previous text), instead of the whole utterance. A part that failed is decoded again
    with the rest, from its start.
    """

    def __init__(self, engine: WhisperEngine, sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self._buf = bytearray()
        self._cut = 0                   # bytes of _buf covered by settled parts
        self._parts: list[tuple[int, int, Future]] = []   # (start, end, decode) settled
        self._spec: Future[Transcript] | None = None
        self._spec_end = 0
        self._min_part = int(getattr(engine, "early_decode_s", 0.0) * sample_rate) * 2

    def accept(self, pcm: bytes) -> Transcript | None:
        self._buf += pcm
        return None

    def _samples(self, start: int = 0, end: int | None = None) -> np.ndarray:
        data = bytes(self._buf[start:end])
        return pcm_to_array(data[: len(data) // 2 * 2])

    def _settled_text(self) -> str | None:
        """The settled parts' words, or None while one of them is still being decoded."""
        if any(not f.done() or f.exception() is not None for _, _, f in self._parts):
            return None
        return " ".join(t for _, _, f in self._parts if (t := f.result().text))

    def speculate(self) -> None:
        """A pause: decode what was said since the settled parts, in the background. It is
        taken only when no caller is waiting for a decode, and cancelled at the end of the
        turn if it has not started: under load it costs nothing, idle it answers early."""
        if self._spec is not None or len(self._buf) <= self._cut:
            return
        self._spec_end = len(self._buf)
        self._spec = self.engine.submit(self._samples(self._cut), self.sample_rate,
                                        self._settled_text() or "", background=True)

    def drop_speculation(self) -> None:
        """The caller spoke again: a long enough part is kept, settled (see above)."""
        spec, self._spec = self._spec, None
        if spec is None:
            return
        failed = spec.done() and (spec.cancelled() or spec.exception() is not None)
        if not failed and self._min_part and self._spec_end - self._cut >= self._min_part:
            self._parts.append((self._cut, self._spec_end, spec))
            self._cut = self._spec_end
        else:
            spec.cancel()       # if not started; a decode under way cannot be interrupted

    def hypothesis(self) -> Transcript | None:
        if self._spec is None or not self._spec.done() or self._spec.exception() is not None:
            return None
        settled = self._settled_text()
        if settled is None:
            return None
        return self._joined([f.result() for _, _, f in self._parts] + [self._spec.result()])

    def _joined(self, parts: list[Transcript]) -> Transcript:
        """One transcript from consecutive parts; confidence weighted by their words."""
        spoken = [t for t in parts if t.text]
        if not spoken:
            return Transcript("", 0.0, self.engine.name, True)
        words = [len(t.text.split()) for t in spoken]
        conf = sum(w * (t.confidence or 0.0) for w, t in zip(words, spoken)) / sum(words)
        return Transcript(" ".join(t.text for t in spoken), conf, self.engine.name, True)

    def _reset(self) -> None:
        self._buf, self._cut, self._parts = bytearray(), 0, []
        self._spec, self._spec_end = None, 0

    def commit(self, hypothesis: Transcript) -> Transcript:
        self._reset()
        return Transcript(hypothesis.text, hypothesis.confidence, hypothesis.engine, True)

    def finish(self) -> Transcript:
        """The speculative decode, when the caller stayed silent since it started (the audio
        after it is only the end-of-turn silence); a decode of what is left otherwise, after
        the settled parts. A part or speculation still queued is cancelled and its audio
        decoded now, with the tail, at the priority of a waiting caller."""
        spec, parts, cut = self._spec, self._parts, self._cut
        done: list[Transcript] = []
        wait = getattr(self.engine, "wait_s", None)
        for i, (start, _, fut) in enumerate(parts):
            result = None
            if not fut.cancel():
                try:
                    result = fut.result(timeout=wait)
                except Exception:   # noqa: BLE001 - decode again from this part's start
                    result = None
            if result is None:
                cut = start
                for _, _, later in parts[i + 1:]:
                    later.cancel()
                if spec is not None:
                    spec.cancel()
                spec = None
                break
            done.append(result)
        if spec is not None and spec.cancel():
            spec = None
        prev = " ".join(t.text for t in done if t.text)
        tail = self._samples(cut)
        self._reset()
        if spec is not None:
            try:
                return self._joined(done + [spec.result(timeout=wait)])
            except Exception:   # noqa: BLE001 - decode again below, and raise from there
                pass
        try:
            last = self.engine.transcribe(tail, self.sample_rate, prev=prev)
        except AsrOverloaded:
            # The end of the request could not be heard: acting on its start alone could
            # answer another question; the caller is asked to repeat.
            return Transcript("", 0.0, self.engine.name, True)
        return self._joined(done + [last])

    def close(self) -> None:
        """The call is over: what is still queued for it is dropped."""
        for _, _, fut in self._parts:
            fut.cancel()
        if self._spec is not None:
            self._spec.cancel()
        self._reset()
