"""One call, top to bottom: caller frames → endpointing → ASR → intent → dialogue → TTS → bot frames.

A :class:`CallSession` is what the SIP side (or the simulator) drives. It is clocked by the
caller's frames: every :meth:`push` is 20 ms of call time, so the no-input timer and the
end of playback mean the same thing in a simulation and on a live line. Bot audio waits in
a shallow :class:`Playback` queue that :meth:`pull` drains one frame at a time (cheap,
safe from another thread) and that a barge-in empties at once.

:class:`Engines` holds what is loaded once per process and shared by every call.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from .asr.base import AsrEngine
from .audio import FRAME_MS, TELEPHONY_RATE, frame_bytes, split_frames
from .config import Config
from .errors import CallbotError
from .dialogue import Dialogue, State
from .events import BargeIn, HangUp, Say, Transfer, Turn
from .intents import IntentClassifier, load_classifier
from .kb import KnowledgeBase, load_kb
from .listener import Final, Listener, SpeechStarted
from .tts.cache import SpeechCache

GAP_MS = 150   # pause between two sentences of one reply
# A caller who speaks again this soon after the answer to a quick end of turn began was
# still finishing the request: the answer is taken back and both parts are heard as one.
RESUME_MS = 1500


@dataclass
class _Resumable:
    """A turn ended early (quick end) that the caller may turn out not to have finished."""

    memento: dict
    text: str
    turns: int        # len(session.turns) once it was answered
    at_ms: int        # call clock when it was answered


@dataclass
class Engines:
    """Per-process resources: knowledge base, classifier, recognizer engine, speech cache.

    A retrained classifier (``callbot train``, or the console's retrain) replaces the model
    file atomically; :meth:`refresh`, called as each call starts, picks it up (with the
    knowledge base it was trained from), so new calls use it and calls in progress finish
    with the one they started with.
    """

    config: Config
    kb: KnowledgeBase
    classifier: IntentClassifier
    tts: SpeechCache
    asr: AsrEngine | None = None
    model_stamp: tuple[int, int, int] = (0, 0, 0)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, config: Config, asr: bool = True) -> "Engines":
        from .asr import load_asr
        from .tts import cache_root, load_tts

        stamp = _stamp(config)
        kb = load_kb(config.paths.kb)
        classifier = load_classifier(config)
        tts = SpeechCache(load_tts(config), cache_root(config))
        return cls(config, kb, classifier, tts, load_asr(config) if asr else None, stamp)

    def refresh(self) -> bool:
        """Reload the classifier and the KB if the model file changed; True if reloaded."""
        stamp = _stamp(self.config)
        if stamp == self.model_stamp:
            return False
        with self._lock:
            if stamp == self.model_stamp:
                return False
            try:
                kb, classifier = load_kb(self.config.paths.kb), load_classifier(self.config)
            except CallbotError:
                return False          # half-edited KB or model: keep serving the old one
            self.kb, self.classifier, self.model_stamp = kb, classifier, stamp
            return True


def _stamp(config: Config) -> tuple[int, int, int]:
    """Identity of the model file: a save renames a new file into place (new inode)."""
    try:
        st = (config.paths.models / config.nlu.model).stat()
        return st.st_ino, st.st_mtime_ns, st.st_size
    except OSError:
        return (0, 0, 0)


class Playback:
    """Bot audio waiting to be sent, as whole frames. Thread-safe for one reader and one writer."""

    def __init__(self, frame_len: int):
        self.frame_len = frame_len
        self.silence = b"\x00" * frame_len
        self.frames: deque[bytes] = deque()

    def extend(self, pcm: bytes, frame_ms: int, rate: int = TELEPHONY_RATE) -> None:
        self.frames.extend(split_frames(pcm, rate, frame_ms))

    def pull(self) -> bytes:
        try:
            return self.frames.popleft()
        except IndexError:
            return self.silence

    def flush(self) -> int:
        n = len(self.frames)
        self.frames.clear()
        return n

    @property
    def playing(self) -> bool:
        return bool(self.frames)


@dataclass
class LatencyMark:
    """From the final transcript to the first answer frame queued (ms)."""

    final_to_audio_ms: float
    decode_ms: float
    speech_ms: int


class CallSession:
    """The pipeline of one call. Drive it from one thread; :meth:`pull` may run on another."""

    def __init__(self, engines: Engines, call_id: str = "",
                 observer: Callable[[object], None] | None = None,
                 audio_tap: Callable[[bytes, bytes], None] | None = None):
        engines.refresh()
        self.engines = engines
        self.config = engines.config
        self.call_id = call_id
        self.frame_ms = FRAME_MS
        self.dialogue = Dialogue(engines.kb, engines.classifier, self.config.dialogue)
        self.listener = (Listener(engines.asr, self.config.endpointing, TELEPHONY_RATE,
                                  complete=self.dialogue.complete)
                         if engines.asr is not None else None)
        self.playback = Playback(frame_bytes(TELEPHONY_RATE, self.frame_ms))
        self.observer = observer or (lambda event: None)
        # audio_tap(caller_frame, bot_frame) once per call frame, for call recording. Bot
        # frames are taken in pull() (the clock thread) and paired here, in call order.
        self.audio_tap = audio_tap
        self._sent: deque[bytes] = deque(maxlen=50)
        self.turns: list[Turn] = []
        self.latencies: list[LatencyMark] = []
        self.clock_ms = 0
        self.quiet_ms = 0                  # caller silence since the bot stopped speaking
        self.ending: Transfer | HangUp | None = None
        self.ended = threading.Event()     # set once the last words are played
        self._resumable: _Resumable | None = None
        self._continuing: str | None = None   # first part of a request being finished
        self._lock = threading.Lock()

    # --- inputs ----------------------------------------------------------------------------
    def start(self) -> Turn:
        return self._play(self.dialogue.start())

    def push(self, frame: bytes) -> None:
        """20 ms of caller audio (8 kHz 16-bit mono); advances the call clock."""
        with self._lock:
            self.clock_ms += self.frame_ms
            if self.audio_tap is not None:
                try:
                    bot = self._sent.popleft()
                except IndexError:
                    bot = self.playback.silence
                self.audio_tap(frame, bot)
            if self.ended.is_set():
                return
            events = self.listener.feed(frame) if self.listener else []
            speaking = self.listener.in_speech if self.listener else False
            for ev in events:
                if isinstance(ev, SpeechStarted):
                    self._take_back()
                    self._barge_in()
                elif isinstance(ev, Final):
                    self._final(ev)
            if self.playback.playing or speaking or self.ending is not None:
                self.quiet_ms = 0
            else:
                self.quiet_ms += self.frame_ms
                if self.quiet_ms >= self.config.endpointing.no_input_ms:
                    self.quiet_ms = 0
                    self._play(self.dialogue.silence())
            self._maybe_end()

    def hear(self, text: str) -> Turn:
        """A caller utterance already in text (simulation, or an external recognizer)."""
        with self._lock:
            turn = self._heard(text, None, None, 0.0, 0)
            self._maybe_end()
            return turn

    def dtmf(self, digit: str) -> Turn:
        with self._lock:
            self._barge_in()
            turn = self._play(self.dialogue.key(digit))
            self._maybe_end()
            return turn

    def announce(self, text: str) -> None:
        """Speak a sentence outside the dialogue (the carrier's own words, e.g. the fallback
        when a transfer fails). It goes through the speech cache like every answer."""
        with self._lock:
            self.playback.extend(self.engines.tts.get(text), self.frame_ms)

    def close(self) -> None:
        """The call is over (whoever hung up): release what the call held."""
        if self.listener is not None:
            self.listener.close()

    def pull(self) -> bytes:
        """The next 20 ms of bot audio (silence when there is nothing to say)."""
        frame = self.playback.pull()
        if self.audio_tap is not None:
            self._sent.append(frame)
        return frame

    @property
    def speaking(self) -> bool:
        return self.playback.playing

    @property
    def state(self) -> State:
        return self.dialogue.state

    # --- internals -------------------------------------------------------------------------
    def _final(self, ev: Final) -> None:
        text = ev.text
        if self._continuing is not None:
            # The rest of a request cut by a quick end (or nothing: a cough; then the first
            # part alone is answered again).
            text = f"{self._continuing} {text}".strip()
            self._continuing = None
        if not text:
            return
        memento = self.dialogue.memento() if ev.quick else None
        turn = self._heard(text, ev.engine, ev.confidence, ev.decode_ms, ev.speech_ms)
        self._resumable = None
        if memento is not None and not any(isinstance(e, (Transfer, HangUp))
                                           for e in turn.events):
            self._resumable = _Resumable(memento, text, len(self.turns), self.clock_ms)

    def _take_back(self) -> None:
        """The caller speaks while the answer to a quick end is starting: take it back."""
        r, self._resumable = self._resumable, None
        if (r is not None and self.playback.playing and len(self.turns) == r.turns
                and self.clock_ms - r.at_ms <= RESUME_MS):
            self.dialogue.restore(r.memento)
            self._continuing = r.text

    def _heard(self, text: str, engine: str | None, confidence: float | None,
               decode_ms: float, speech_ms: int) -> Turn:
        t0 = time.perf_counter()
        self.quiet_ms = 0
        turn = self.dialogue.hear(text)
        turn.asr_engine, turn.asr_confidence = engine, confidence
        self._play(turn)
        if any(isinstance(e, Say) for e in turn.events):
            self.latencies.append(LatencyMark((time.perf_counter() - t0) * 1000, decode_ms,
                                              speech_ms))
        return turn

    def _barge_in(self) -> None:
        if self.playback.playing:
            dropped = self.playback.flush()
            self.observer(BargeIn(played_ms=dropped * self.frame_ms))

    def _play(self, turn: Turn) -> Turn:
        first = True
        for event in turn.events:
            if isinstance(event, Say):
                if not first:
                    self.playback.extend(b"\x00" * (TELEPHONY_RATE * GAP_MS // 1000 * 2),
                                         self.frame_ms)
                self.playback.extend(self.engines.tts.get(event.text, event.slow), self.frame_ms)
                first = False
            elif isinstance(event, (Transfer, HangUp)):
                self.ending = event
        self.turns.append(turn)
        self.observer(turn)
        return turn

    def _maybe_end(self) -> None:
        """Hand the transfer or hang-up over once its announcement has been played."""
        if self.ending is not None and not self.playback.playing and not self.ended.is_set():
            self.ended.set()
            self.observer(self.ending)
