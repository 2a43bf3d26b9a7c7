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

import json
import queue
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from callbot.audio import FRAME_MS
from callbot.events import BargeIn, HangUp, Transfer, Turn
from callbot.session import CallSession, Engines

from .media import SILENCE
from .priority import COMPUTE_NICE, lower_this_thread

FRAME_S = FRAME_MS / 1000
IDLE_S = 0.1          # no frame for this long (no RTP, bridge hiccup): push silence instead


@dataclass(frozen=True)
class Action:
    """A request from a runner to the main loop."""

    kind: str          # "ended" | "said" | "failed"
    key: int           # the worker's key of the call
    payload: Any = None


class Log:
    """One JSON object per line on stdout: what a supervisor or a test reads."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), "event": event, **fields},
                          ensure_ascii=False, default=str)
        with self._lock:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass


class CallRunner:
    """Drives one CallSession from a pool thread until the call is over."""

    def __init__(self, key: int, engines: Engines, call_id: str,
                 inbox: "queue.SimpleQueue[bytes]", post: Callable[[Action], None], log: Log,
                 recorder: Any = None) -> None:
        self.key = key
        # recorder: a callbot.transcripts.CallRecorder (or None); it sees every session
        # event after the JSON log, and the caller/bot audio when [recording] is on.
        self.recorder = recorder
        self.session = CallSession(engines, call_id, observer=self.observe,
                                   audio_tap=recorder.audio_tap if recorder else None)
        if recorder is not None:
            recorder.attach(self.session)
        self.inbox = inbox
        self.post = post
        self.log = log
        self.commands: "queue.SimpleQueue[tuple[str, Any]]" = queue.SimpleQueue()
        self.stop = threading.Event()
        self.done = threading.Event()
        self.started_at = 0.0

    # --- called from the main loop ----------------------------------------------------------
    def dtmf(self, digit: str) -> None:
        self.commands.put(("dtmf", digit))

    def say_then_report(self, text: str) -> None:
        """Queue ``text`` (from the speech cache) after whatever plays; post "said" when done."""
        self.commands.put(("say", text))

    # --- the thread ---------------------------------------------------------------------------
    def observe(self, event: object) -> None:
        """The session's observer (called on this thread, inside push/dtmf/start)."""
        sid = self.session.call_id
        if isinstance(event, Turn):
            self.log("turn", call=sid, **event.to_json())
        elif isinstance(event, BargeIn):
            self.log("barge_in", call=sid, played_ms=event.played_ms)
        elif isinstance(event, (Transfer, HangUp)):
            self.log("ending", call=sid, **event.to_json())
        if self.recorder is not None:
            self.recorder.observe(event)     # never raises: recording cannot break a call

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a broken call must not take the worker down
            self.log("error", call=self.session.call_id, where="runner",
                     error=f"{type(exc).__name__}: {exc}")
            self.post(Action("failed", self.key, repr(exc)))
        finally:
            try:
                self.session.close()
            except Exception:  # noqa: BLE001 - releasing a recognizer must not block the end
                pass
            self.done.set()

    def _run(self) -> None:
        session = self.session
        self.started_at = time.monotonic()
        session.start()
        reported = False
        saying = False
        pushed = 0
        while not self.stop.is_set():
            if self._commands():
                saying = True
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
            if session.ended.is_set() and not reported:
                reported = True
                self.post(Action("ended", self.key, session.ending))
            if saying and not session.playback.playing:
                saying = False
                self.post(Action("said", self.key))

    def _commands(self) -> bool:
        """Run pending commands; True when one queued speech of its own."""
        saying = False
        while True:
            try:
                kind, arg = self.commands.get_nowait()
            except queue.Empty:
                return saying
            if kind == "dtmf":
                self.session.dtmf(arg)
            elif kind == "say":
                self.session.announce(arg)
                saying = True


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
