"""The per-call worker thread: caller frames → ``CallSession.push``, off the clock thread.

``push`` may run Whisper for about a second at the end of an utterance, so it never runs on
pjsua's clock thread (all calls share it) nor on the SIP main loop. The runner never calls
pjsua either: whatever must happen on the SIP side (hang up, transfer) is posted to the main
loop as an :class:`Action`. Commands go the other way (a DTMF digit, "say this, then tell
me") through the runner's own queue, so the session is only ever driven from this thread.

Runner threads come from a small pool registered with pjlib once: a garbage collection that
frees a pjsua2 object can run in any Python thread, and an unregistered thread touching
pjlib aborts the process.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from callbot.audio import FRAME_MS
from callbot.events import (BargeIn, CallbackRequested, CallEvent, CallObserver, Ended, Failed,
                            HangUp, HeldOn, PlaybackDrained, Say, TakenBack, Transfer, Turn,
                            TurnDecided)
from callbot.session import CallSession, Engines

from .jsonlog import JsonLog
from .media import SILENCE
from .priority import COMPUTE_NICE, lower_this_thread

log = logging.getLogger("telephony.runner")

FRAME_S = FRAME_MS / 1000
IDLE_S = 0.1          # no frame for this long (no RTP, bridge hiccup): push silence instead


@dataclass(frozen=True)
class Action:
    """A request from a runner to the main loop."""

    kind: str          # "ended" | "said" | "failed"
    key: int           # the worker's key of the call
    payload: Any = None


Log = JsonLog   # workers log through the SIP side's one JSON-lines format


def turn_fields(turn: Turn) -> dict[str, Any]:
    """What a turn's log line says of it without personal data: what kind of turn, what was
    understood and how surely, which answers and prompts were played, how it ended."""
    kind = ("speech" if turn.caller is not None else "dtmf" if turn.dtmf is not None
            else "none")
    ending = next((e for e in turn.events if isinstance(e, (Transfer, HangUp))), None)
    fields: dict[str, Any] = {
        "kind": kind, "intent": turn.intent,
        "confidence": None if turn.confidence is None else round(turn.confidence, 4),
        "decision": turn.decision, "state": turn.state,
        "said": [e.key for e in turn.events if isinstance(e, Say)]}
    if ending is not None:
        fields["ending"] = {"type": "transfer" if isinstance(ending, Transfer) else "hangup",
                            "reason": ending.reason}
    if turn.asr_engine is not None:
        fields["asr"] = {"engine": turn.asr_engine,
                         "confidence": None if turn.asr_confidence is None
                         else round(turn.asr_confidence, 4)}
    return fields


class LogObserver:
    """A call's events as JSON lines in the worker's log (turns, barge-ins, take-backs, the
    ending, a failure), with ids and outcomes only unless the log takes personal data. It
    also counts the turns, for the call's "hangup" line."""

    def __init__(self, log: Log, call_id: str) -> None:
        self.log = log
        self.call_id = call_id
        self.turns = 0

    def _personal(self, **fields: Any) -> dict[str, Any]:
        personal = getattr(self.log, "personal", None)   # a plain callable logs none
        return personal(**fields) if personal is not None else {}

    def on_event(self, event: CallEvent) -> None:
        if isinstance(event, TurnDecided):
            self.turns += 1
            turn = event.turn
            fields = turn_fields(turn)
            if event.latency_ms is not None:
                fields["latency_ms"] = round(event.latency_ms, 1)
            fields.update(self._personal(caller=turn.caller, bot=turn.bot_text, dtmf=turn.dtmf,
                                         events=[e.to_json() for e in turn.events]))
            self.log("turn", call=self.call_id, **fields)
        elif isinstance(event, BargeIn):
            self.log("barge_in", call=self.call_id, played_ms=event.played_ms)
        elif isinstance(event, TakenBack):
            self.log("taken_back", call=self.call_id, **self._personal(text=event.text))
        elif isinstance(event, HeldOn):
            self.log("held_on", call=self.call_id, waited_ms=event.waited_ms)
        elif isinstance(event, Ended):
            ending = event.ending
            fields = {"type": "transfer" if isinstance(ending, Transfer) else "hangup",
                      "reason": ending.reason}
            if isinstance(ending, Transfer):
                fields.update(intent=ending.context.intent,
                              intents=list(ending.context.intents),
                              siren_given=ending.context.siren is not None)
                fields.update(self._personal(context=ending.to_json()["context"]))
            self.log("ending", call=self.call_id, **fields)
        elif isinstance(event, Failed):
            self.log("error", call=self.call_id, where=event.where, error=event.error)
        elif isinstance(event, CallbackRequested):
            self.log("callback_requested", call=self.call_id, source=event.source,
                     reason=event.reason, intent=event.intent)


class CallRunner:
    """Drives one CallSession from a pool thread until the call is over.

    The call's outputs are observers of its session: the runner itself (it posts the ending,
    and the end of its own sentences, to the main loop), the JSON log, and ``outputs``: the
    transcript recorder (it also gets the caller/bot audio when [recording]
    is on) and the call's metrics, when there are.
    """

    def __init__(self, key: int, engines: Engines, call_id: str,
                 inbox: "queue.SimpleQueue[bytes]", post: Callable[[Action], None], log: Log,
                 outputs: list[CallObserver] | None = None) -> None:
        self.key = key
        self.post = post
        self.saying = False          # a sentence of ours (say_then_report) is being played
        self.logged = LogObserver(log, call_id)
        observers: list[CallObserver] = [self, self.logged, *(outputs or [])]
        self.session = CallSession(engines, call_id, observers=observers)
        self.inbox = inbox
        self.commands: "queue.SimpleQueue[tuple[str, Any]]" = queue.SimpleQueue()
        self.stop = threading.Event()
        self.done = threading.Event()
        self.started_at = 0.0
        self._after: list[Callable[[], None]] = []
        self._after_lock = threading.Lock()

    # --- called from the main loop ----------------------------------------------------------
    @property
    def speaking(self) -> bool:
        """The bot's audio is still playing (read by the main loop: a deque length)."""
        return self.session.speaking

    def pull(self) -> bytes:
        """The next 20 ms of bot audio: the call port's clock thread calls this."""
        return self.session.pull()

    @property
    def turns(self) -> int:
        """Turns decided so far (the greeting included)."""
        return self.logged.turns

    def dtmf(self, digit: str) -> None:
        self.commands.put(("dtmf", digit))

    def when_done(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once the call's thread has finished its last step (now if it has): a
        caller who hangs up while their words are being decoded still gets them written."""
        with self._after_lock:
            if not self.done.is_set():
                self._after.append(fn)
                return
        fn()

    def transfer_failed(self, why: str, caller_number: str | None) -> None:
        """The transfer failed: the session offers the caller a callback (it posts "ended"
        again once the caller has answered)."""
        self.commands.put(("transfer_failed", (why, caller_number)))

    def say_then_report(self, text: str) -> None:
        """Queue ``text`` (from the speech cache) after whatever plays; post "said" when done."""
        self.commands.put(("say", text))

    # --- the thread ---------------------------------------------------------------------------
    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a broken call must not take the worker down
            self.session.fail(f"{type(exc).__name__}: {exc}", "runner")
            self.post(Action("failed", self.key, repr(exc)))
        finally:
            try:
                self.session.hung_up(self._received())
            except Exception:  # noqa: BLE001 - last words are a bonus, never a failure
                log.exception("call %s: last words not decoded", self.key)
            try:
                self.session.close()
            except Exception:  # noqa: BLE001 - releasing a recognizer must not block the end
                pass
            with self._after_lock:
                self.done.set()
                after, self._after = self._after, []
            for fn in after:
                try:
                    fn()
                except Exception:  # noqa: BLE001 - one closing step must not skip the others
                    log.exception("call %s: closing step failed", self.key)

    def _received(self) -> list[bytes]:
        """Caller audio that arrived but was not heard before the call ended."""
        frames = []
        while True:
            try:
                frames.append(self.inbox.get_nowait())
            except queue.Empty:
                return frames

    def _run(self) -> None:
        session = self.session
        self.started_at = time.monotonic()
        session.start()
        pushed = 0
        while not self.stop.is_set():
            self._commands()
            try:
                frame = self.inbox.get(timeout=IDLE_S)
                session.push(frame)
                pushed += 1
            except queue.Empty:
                # No caller frames (no RTP yet, or none at all): keep the call clock honest
                # so the no-input prompts and the hang-up still happen.
                elapsed = time.monotonic() - self.started_at
                behind = int(elapsed / FRAME_S) - pushed
                for _ in range(max(0, min(behind, 50))):
                    session.push(SILENCE)
                    pushed += 1

    def on_event(self, event: CallEvent) -> None:
        """What the SIP main loop must act on, posted as it happens (this thread)."""
        if isinstance(event, Ended):
            self.post(Action("ended", self.key, event.ending))
        elif isinstance(event, PlaybackDrained) and self.saying:
            self.saying = False
            self.post(Action("said", self.key))

    def _commands(self) -> None:
        while True:
            try:
                kind, arg = self.commands.get_nowait()
            except queue.Empty:
                return
            if kind == "dtmf":
                self.session.dtmf(arg)
            elif kind == "transfer_failed":
                self.session.transfer_failed(*arg)
            elif kind == "say":
                if self.session.announce(arg):
                    self.saying = True          # "said" is posted once it has been played
                else:
                    self.post(Action("said", self.key))


class RunnerPool:
    """``size`` long-lived threads, each registered with pjlib once, running CallRunners."""

    def __init__(self, size: int, register: Callable[[str], None],
                 nice: int = COMPUTE_NICE) -> None:
        self.nice = nice
        self.jobs: "queue.SimpleQueue[CallRunner | None]" = queue.SimpleQueue()
        self.threads = [threading.Thread(target=self._loop, args=(register, i),
                                         name=f"call-runner-{i}", daemon=True)
                        for i in range(size)]
        for t in self.threads:
            t.start()

    def submit(self, runner: CallRunner) -> None:
        self.jobs.put(runner)

    def _loop(self, register: Callable[[str], None], i: int) -> None:
        register(f"call-runner-{i}")
        if self.nice:
            lower_this_thread(self.nice)   # recognition and dialogue yield to the media clock
        while True:
            runner = self.jobs.get()
            if runner is None:
                return
            runner.run()
            del runner

    def close(self, timeout: float = 5.0) -> None:
        for _ in self.threads:
            self.jobs.put(None)
        for t in self.threads:
            t.join(timeout)
