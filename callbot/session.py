"""One call, top to bottom: caller frames → endpointing → ASR → intent → dialogue → TTS → bot frames.

A :class:`CallSession` is what the SIP side (or the simulator) drives; what happens in the call
reaches the outside world only as :mod:`callbot.events`, sent to its observers. It is clocked by the
caller's frames: every :meth:`push` is 20 ms of call time, so the no-input timer and the
end of playback mean the same thing in a simulation and on a live line. Bot audio waits in
a shallow :class:`Playback` queue that :meth:`pull` drains one frame at a time (cheap,
safe from another thread) and that a barge-in empties at once.

:class:`Engines` holds what is loaded once per process and shared by every call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable

from .asr.base import AsrEngine
from .embedding import SentenceEncoder
from .company import CompanyRegister, open_register
from .audio import FRAME_MS, TELEPHONY_RATE, frame_bytes, split_frames
from .config import Config
from .errors import CallbotError
from .dialogue import Dialogue, State
from .events import (AnswerStarted, BargeIn, CallAudio, CallbackRequested, CallEvent,
                     CallObserver, Ended,
                     Ending, Failed, Final, HeldOn, PlaybackDrained, Say, SpeechStarted, Turn,
                     TurnDecided)
from .holding import process_alarm
from .intents import IntentClassifier, load_classifier
from .kb import KnowledgeBase, load_kb
from .listener import Listener
from .tts.cache import SpeechCache
from .turns import TurnEndModel, TurnTaker

GAP_MS = 150   # pause between two sentences of one reply
log = logging.getLogger("callbot.session")


@dataclass(frozen=True)
class Understanding:
    """The knowledge base and the classifier trained from it: swapped together, never one
    without the other."""

    kb: KnowledgeBase
    classifier: IntentClassifier
    stamp: tuple[int, int, int]


@dataclass
class Engines:
    """Per-process resources: knowledge base, classifier, recognizer engine, speech cache,
    the Sirene register.

    A retrained classifier (``callbot train``, or the console's retrain) replaces the model
    file atomically. :meth:`refresh`, called as each call starts, only looks at the file; a
    new one is loaded by a thread of its own (unpickling took 1-2 s on the call path before,
    every call of the worker frozen meanwhile), put in service for the calls that start
    after it is ready, in one assignment, then frozen out of the garbage collector's reach
    (a full collection over the models' objects stalled calls ~90 ms). Calls in progress
    finish with the one they started with.
    """

    config: Config
    kb: KnowledgeBase
    classifier: IntentClassifier
    tts: SpeechCache
    asr: AsrEngine | None = None
    turn_model: TurnEndModel | None = None     # reads the end of a turn from the voice
    model_stamp: tuple[int, int, int] = (0, 0, 0)
    # The sentence encoder by name, when it is served by the machine's recognition service
    # (None: each classifier loads it in this process).
    encoders: Callable[[str], SentenceEncoder] | None = None
    log: Callable[..., None] | None = None     # log(event, **fields): reloads said
    # The Sirene register ([sirene]) the dialogue looks callers' numbers up in, used while
    # it is available (a register imported later serves the next look-ups; None: none).
    register: CompanyRegister | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _loader: threading.Thread | None = field(default=None, repr=False)
    _tried: tuple[int, int, int] = (0, 0, 0)   # the last file a load was started for
    _current: Understanding | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._current = Understanding(self.kb, self.classifier, self.model_stamp)

    @classmethod
    def load(cls, config: Config, asr: bool = True,
             log: Callable[..., None] | None = None) -> "Engines":
        """``log(event, **fields)`` hears what the recognition client has to say (lost
        service, local fallback) and the model reloads."""
        from .asr import load_asr
        from .tts import cache_root, load_tts

        stamp = _stamp(config)
        kb = load_kb(config.paths.kb)
        asr_engine, encoders = None, None
        if asr and config.recognition.socket:
            from .recognition import remote_engines
            asr_engine, encoders = remote_engines(config, log)
        elif asr:
            asr_engine = load_asr(config)
        classifier = load_classifier(config, encoders)
        tts = SpeechCache(load_tts(config), cache_root(config))
        turn_model = None
        if asr and config.endpointing.turn_model:
            from .smartturn import load_smart_turn
            turn_model = load_smart_turn(config.paths.models)
        register = open_register(config, kb)
        return cls(config, kb, classifier, tts, asr_engine, turn_model, stamp, encoders, log,
                   register)

    def understanding(self) -> Understanding:
        """The knowledge base and classifier in service now (one read: a consistent pair)."""
        assert self._current is not None
        return self._current

    def refresh(self) -> bool:
        """Start loading the model file if it changed (never waits for it); True if a load
        was started."""
        stamp = _stamp(self.config)
        if stamp == self._current.stamp or stamp == self._tried:
            return False
        with self._lock:
            if stamp == self._current.stamp or stamp == self._tried \
                    or (self._loader is not None and self._loader.is_alive()):
                return False
            self._tried = stamp
            self._loader = threading.Thread(target=self._reload, args=(stamp,),
                                            name="model-reload", daemon=True)
            self._loader.start()
            return True

    def wait_reload(self, timeout: float | None = None) -> None:
        """Wait for a load under way (tests, tools)."""
        loader = self._loader
        if loader is not None:
            loader.join(timeout)

    def _reload(self, stamp: tuple[int, int, int]) -> None:
        import gc

        t0 = time.perf_counter()
        try:
            kb = load_kb(self.config.paths.kb)
            classifier = load_classifier(self.config, self.encoders)
        except CallbotError as exc:   # half-edited KB or model: keep serving the old one
            log.warning("new model not loaded (%s); calls go on with the previous one", exc)
            if self.log is not None:
                self.log("model_reload_failed", error=str(exc))
            return
        self._current = Understanding(kb, classifier, stamp)
        self.kb, self.classifier, self.model_stamp = kb, classifier, stamp
        gc.collect()
        gc.freeze()
        if self.log is not None:
            self.log("model_reloaded", load_s=round(time.perf_counter() - t0, 2),
                     accuracy=classifier.report.get("cv_accuracy"))


def _stamp(config: Config) -> tuple[int, int, int]:
    """Identity of the model file: a save renames a new file into place (new inode)."""
    try:
        st = (config.paths.models / config.nlu.model).stat()
        return st.st_ino, st.st_mtime_ns, st.st_size
    except OSError:
        return (0, 0, 0)


class Playback:
    """Bot audio waiting to be sent, as whole frames. Thread-safe for one reader and one writer.

    ``taken`` counts the frames that left the queue (played or flushed by a barge-in), so
    a frame queued now is known by its position ``end`` until it is played.
    """

    def __init__(self, frame_len: int):
        self.frame_len = frame_len
        self.silence = b"\x00" * frame_len
        self.frames: deque[bytes] = deque()
        self.taken = 0
        self._lock = threading.Lock()

    def extend(self, pcm: bytes, rate: int = TELEPHONY_RATE) -> None:
        self.frames.extend(split_frames(pcm, rate, FRAME_MS))

    def pull(self) -> bytes:
        with self._lock:
            try:
                frame = self.frames.popleft()
            except IndexError:
                return self.silence
            self.taken += 1
            return frame

    def flush(self) -> int:
        with self._lock:
            n = len(self.frames)
            self.frames.clear()
            self.taken += n
            return n

    @property
    def end(self) -> int:
        """The position the next queued frame will have."""
        with self._lock:
            return self.taken + len(self.frames)

    @property
    def playing(self) -> bool:
        return bool(self.frames)


@dataclass
class _Awaited:
    """An answer queued, waiting for its first frame to be played (caller-perceived latency)."""

    first: int          # the position of its first frame in the playback queue
    voice_at: float     # time.monotonic() of the caller's last voiced frame
    ended_at: float     # ...of the frame that ended the turn (the decode followed)
    heard_at: float     # ...when the words reached the dialogue
    played_at: float = 0.0


class CallSession:
    """The pipeline of one call. Drive it from one thread; :meth:`pull` may run on another.

    Per caller frame: the turn taker (endpointing, recognizer, quick end of turn) may end the
    caller's turn; the dialogue decides; the answer is synthesized (speech cache) into the
    playback queue; every step is emitted as a call event to the observers.
    """

    def __init__(self, engines: Engines, call_id: str = "",
                 observers: Iterable[CallObserver] = ()):
        engines.refresh()
        self.engines = engines
        self.config = engines.config
        self.call_id = call_id
        understanding = engines.understanding()
        self.dialogue = Dialogue(understanding.kb, understanding.classifier,
                                 self.config.dialogue, engines.register)
        self.listener = (Listener(engines.asr, self.config.endpointing, TELEPHONY_RATE)
                         if engines.asr is not None else None)
        self.turn_taker = (TurnTaker(self.listener, self.dialogue, self.config.endpointing,
                                     engines.turn_model)
                           if self.listener is not None else None)
        self.playback = Playback(frame_bytes(TELEPHONY_RATE, FRAME_MS))
        self.observers: list[CallObserver] = list(observers)
        # Bot frames are taken in pull() (the clock thread) and paired with the caller's in
        # push(), in call order, for the CallAudio events.
        self._sent: deque[bytes] = deque(maxlen=50)
        self.turns: list[Turn] = []
        self.clock_ms = 0
        self.quiet_ms = 0                  # caller silence since the bot stopped speaking
        self.ending: Ending | None = None  # decided; handed over (Ended) once played
        self.ended = threading.Event()     # set once the last words are played
        self._was_playing = False          # at the previous frame (for PlaybackDrained)
        self._lock = threading.Lock()
        # No dead air (callbot.holding): the alarm may queue the holding prompt while a
        # decode holds self._lock; _hold_lock orders it with the answer's audio.
        self._hold_text = understanding.kb.prompts.get("holding", "")
        self._hold_ms = self.config.endpointing.hold_after_ms if self._hold_text else 0
        self._hold_lock = threading.Lock()
        self._hold_armed = False           # the caller is silent in an utterance, unanswered
        self._hold_deadline = 0.0          # when the alarm is set for (time.monotonic())
        self._held: int | None = None      # the prompt was played, waited_ms (not yet told)
        self._held_in_turn = False         # played for this turn already
        # Caller-perceived latency: the answer waiting for its first frame (set on the call
        # thread, marked played on the clock thread, told as AnswerStarted on the call thread).
        self._voice_at = 0.0               # time.monotonic() of the last voiced caller frame
        self._push_at = 0.0                # ...of the frame being pushed
        self._awaited: _Awaited | None = None

    # --- inputs ----------------------------------------------------------------------------
    def start(self) -> Turn:
        with self._lock:
            return self._decided(self.dialogue.start())

    def push(self, frame: bytes) -> None:
        """20 ms of caller audio (8 kHz 16-bit mono); advances the call clock."""
        with self._lock:
            self._push_at = time.monotonic()
            self.clock_ms += FRAME_MS
            try:
                bot = self._sent.popleft()
            except IndexError:
                bot = self.playback.silence
            self._emit(CallAudio(frame, bot, self.clock_ms))
            playing = self.playback.playing
            if self._was_playing and not playing:
                self._emit(PlaybackDrained(self.clock_ms))
            self._was_playing = playing
            if self.ended.is_set():
                return
            self._arm_hold()
            events = (self.turn_taker.feed(frame, self.clock_ms, self.playback.playing)
                      if self.turn_taker is not None else [])
            if self.listener is not None and self.listener.voiced:
                self._voice_at = self._push_at
            for ev in events:
                self._emit(ev)
                if isinstance(ev, SpeechStarted):
                    self._barge_in()
                    self._held_in_turn = False
                elif isinstance(ev, Final):
                    self._heard(ev.text, ev)
            self._arm_hold()
            self._tell_held()
            self._tell_answered()
            speaking = self.listener.in_speech if self.listener else False
            if self.playback.playing or speaking or self.ending is not None:
                self.quiet_ms = 0
            else:
                self.quiet_ms += FRAME_MS
                if self.quiet_ms >= self.config.endpointing.no_input_ms:
                    self.quiet_ms = 0
                    self._decided(self.dialogue.silence())
            self._maybe_end()

    def hear(self, text: str) -> Turn:
        """A caller utterance already in text (simulation, or an external recognizer)."""
        with self._lock:
            turn = self._heard(text, None)
            self._maybe_end()
            return turn

    def dtmf(self, digit: str) -> Turn:
        with self._lock:
            self._barge_in()
            self.quiet_ms = 0        # a key is the caller's input: a typed number is not silence
            turn = self._decided(self.dialogue.key(digit))
            self._maybe_end()
            return turn

    def announce(self, text: str) -> bool:
        """Speak a sentence outside the dialogue (the carrier's own words, e.g. the fallback
        when a transfer fails). It goes through the speech cache like every answer; a
        PlaybackDrained event follows once it is played. False: nothing to play."""
        with self._lock:
            pcm = self.engines.tts.get(text)
            self.playback.extend(pcm)
            return bool(pcm)

    def transfer_failed(self, why: str, caller_number: str | None) -> Turn:
        """The carrier could not hand the caller over (``why``: its reason, e.g. "486 Busy
        Here", "timeout"): the call goes on with the dialogue's callback offer, and ends
        again (Ended) once the caller has answered it. ``caller_number``: the caller id,
        None if withheld."""
        with self._lock:
            turn = self.dialogue.transfer_failed(why, caller_number)
            if turn.events:
                self.ending = None
                self.ended.clear()
                self.quiet_ms = 0
                self._decided(turn)
            return turn

    def fail(self, error: str, where: str) -> None:
        """Whoever drives the call saw it break: tell the observers (the call is ended by
        its carrier)."""
        with self._lock:
            self._emit(Failed(error, where, self.clock_ms))

    def hung_up(self, frames: Iterable[bytes] = ()) -> None:
        """The line is closed. The caller's last words (the audio received but not yet
        heard, and an utterance still under way) are decoded and recorded as a turn of
        their own, unanswered (``decision = "hung_up"``): a supervisor sees what a caller
        said as they hung up, instead of a call that ends on the bot's last prompt."""
        with self._lock:
            if self.listener is None:
                return
            finals = []
            for frame in frames:
                self.clock_ms += FRAME_MS
                finals += [e for e in self.listener.feed(frame, self.clock_ms)
                           if isinstance(e, Final)]
            if self.listener.in_speech:
                finals.append(self.listener.end_now(self.clock_ms))
            for final in finals:
                if not final.text:
                    continue
                self._emit(final)
                turn = Turn(caller=final.text, decision="hung_up", asr_engine=final.engine,
                            asr_confidence=final.confidence, state=self.dialogue.state.value)
                self._emit(TurnDecided(turn, self.clock_ms, None, final.decode_ms,
                                       final.speech_ms))

    def close(self) -> None:
        """The call is over (whoever hung up): release what the call held."""
        self._disarm_hold()
        if self.listener is not None:
            self.listener.close()

    def pull(self) -> bytes:
        """The next 20 ms of bot audio (silence when there is nothing to say)."""
        frame = self.playback.pull()
        self._sent.append(frame)
        awaited = self._awaited
        if awaited is not None and not awaited.played_at and self.playback.taken > awaited.first:
            awaited.played_at = time.monotonic()
        return frame

    @property
    def speaking(self) -> bool:
        return self.playback.playing

    @property
    def state(self) -> State:
        return self.dialogue.state

    # --- internals -------------------------------------------------------------------------
    def _emit(self, event: CallEvent) -> None:
        for observer in list(self.observers):
            try:
                observer.on_event(event)
            except Exception:   # noqa: BLE001 - an output must never break the call
                log.exception("call %s: observer %s failed on %s; it gets no more events of "
                              "this call", self.call_id, type(observer).__name__,
                              type(event).__name__)
                self.observers.remove(observer)

    def _heard(self, text: str, final: Final | None) -> Turn:
        """The caller's words for this turn: decide, queue the answer, tell the observers."""
        t0 = time.perf_counter()
        heard_at = time.monotonic()
        self.quiet_ms = 0
        turn = self.dialogue.hear(text)
        nlu_ms = (time.perf_counter() - t0) * 1000
        if final is not None:
            turn.asr_engine, turn.asr_confidence = final.engine, final.confidence
        self._disarm_hold()          # from here the answer's audio follows any holding prompt
        self._tell_held()
        # Known before the answer is queued: the clock thread may play it at once.
        awaited = _Awaited(self.playback.end, self._voice_at, self._push_at, heard_at) \
            if final is not None and self._voice_at else None
        self._awaited = awaited
        self._play(turn)
        if awaited is not None and self.playback.end == awaited.first:
            self._awaited = None     # nothing to say (the answer was only a transfer or none)
        latency = (time.perf_counter() - t0) * 1000 if turn.bot_text else None
        quick = final is not None and final.quick
        self._emit(TurnDecided(turn, self.clock_ms, latency,
                               final.decode_ms if final is not None else None,
                               final.speech_ms if final is not None else None, quick, nlu_ms))
        self._tell_callbacks(turn)
        if self.turn_taker is not None:
            self.turn_taker.answered(turn, quick)
        return turn

    def _tell_answered(self) -> None:
        """Emit AnswerStarted once the clock thread has played the answer's first frame."""
        awaited = self._awaited
        if awaited is None or not awaited.played_at:
            return
        self._awaited = None
        a = awaited
        self._emit(AnswerStarted(
            waited_ms=(a.played_at - a.voice_at) * 1000,
            end_of_turn_ms=max(0.0, (a.ended_at - a.voice_at) * 1000),
            recognition_ms=max(0.0, (a.heard_at - a.ended_at) * 1000),
            answer_ms=(a.played_at - a.heard_at) * 1000, at_ms=self.clock_ms))

    def _decided(self, turn: Turn) -> Turn:
        """A turn no caller words started (greeting, silence, key, failed transfer)."""
        self._play(turn)
        self._emit(TurnDecided(turn, self.clock_ms))
        self._tell_callbacks(turn)
        if self.turn_taker is not None:
            self.turn_taker.answered(turn, quick=False)
        return turn

    # --- no dead air ------------------------------------------------------------------------
    def _arm_hold(self) -> None:
        """On the frame that ends the caller's turn (the decode follows, and may hold the
        session), set the alarm for ``hold_after_ms`` after the last voiced frame; otherwise
        keep it off. Never during a pause within the turn: a call thread that falls behind
        under load must not make the bot speak over a caller who has not finished (a soak
        showed callers taking such a prompt for the answer and going on)."""
        if not self._hold_ms or self.listener is None or self._held_in_turn:
            return
        silence = self.listener.silence_ms
        ending = silence > 0 and silence + FRAME_MS >= self.listener.end_silence_ms
        if ending and not self.playback.playing and self.ending is None:
            deadline = time.monotonic() + (self._hold_ms - silence) / 1000
            with self._hold_lock:
                self._hold_armed = True
                self._hold_deadline = deadline
            process_alarm().set(self, deadline, self._hold_fire)
        elif self._hold_armed:
            self._disarm_hold()

    def _disarm_hold(self) -> None:
        with self._hold_lock:
            was = self._hold_armed
            self._hold_armed = False
        if was:
            process_alarm().cancel(self)

    def _hold_fire(self) -> None:
        """On the alarm's thread: the answer is late; queue the holding prompt (once)."""
        with self._hold_lock:
            if not self._hold_armed:
                return                     # answered (or the caller spoke) meanwhile
            self._hold_armed = False
            self._held_in_turn = True
            self.playback.extend(self.engines.tts.get(self._hold_text))
            self._held = self._hold_ms + round((time.monotonic() - self._hold_deadline) * 1000)

    def _tell_held(self) -> None:
        """Emit HeldOn on the call's own thread (observers are called there only)."""
        with self._hold_lock:
            waited, self._held = self._held, None
        if waited is not None:
            self._emit(HeldOn(self._hold_text, waited, self.clock_ms))

    def _barge_in(self) -> None:
        if self.playback.playing:
            dropped = self.playback.flush()
            awaited = self._awaited
            if awaited is not None and not awaited.played_at:
                self._awaited = None      # the answer never reached the caller
            self._emit(BargeIn(played_ms=dropped * FRAME_MS, at_ms=self.clock_ms))

    def _play(self, turn: Turn) -> Turn:
        first = True
        for event in turn.events:
            if isinstance(event, Say):
                if not first:
                    self.playback.extend(b"\x00" * (TELEPHONY_RATE * GAP_MS // 1000 * 2))
                self.playback.extend(self.engines.tts.get(event.text, event.slow))
                first = False
        if turn.ending is not None:
            self.ending = turn.ending
        self.turns.append(turn)
        return turn

    def _tell_callbacks(self, turn: Turn) -> None:
        """A callback the dialogue decided, to the observers with the call clock."""
        for event in turn.events:
            if isinstance(event, CallbackRequested):
                self._emit(replace(event, at_ms=self.clock_ms))

    def _maybe_end(self) -> None:
        """Hand the transfer or hang-up over once its announcement has been played."""
        if self.ending is not None and not self.playback.playing and not self.ended.is_set():
            self.ended.set()
            self._emit(Ended(self.ending, self.clock_ms))
