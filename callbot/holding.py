"""Never leave dead air: a short "Un instant…" when an answer is slow to come.

A caller who has stopped speaking and hears nothing for more than about a second wonders
whether the line is still up, and starts again ("allô ?"), which restarts the turn. When
the answer is not queued ``hold_after_ms`` (1.2 s) after the caller's last voiced frame,
the session plays the pre-rendered ``holding`` prompt once, then the answer as soon as it is
ready.

The recognizer's decode runs inside the session's step and holds it for as long as it
takes, so the session cannot notice the deadline itself while it waits. :class:`Alarm` is
one thread per process that runs a callback at a wall-clock deadline; the session re-arms it
at every silent frame of an utterance with ``now + (hold_after_ms - silence so far)``, so
the deadline follows the call clock (live calls and fast simulations alike) until the step
blocks, and the wall clock while it does.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from typing import Callable, Hashable


class Alarm:
    """Callbacks at wall-clock deadlines (``time.monotonic()``), one per key, on one thread.

    Setting a key again replaces its deadline; a callback runs on the alarm's thread and
    must be quick (it only queues audio)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Hashable]] = []
        self._current: dict[Hashable, tuple[int, Callable[[], None]]] = {}
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def set(self, key: Hashable, deadline: float, fn: Callable[[], None]) -> None:
        with self._cond:
            seq = next(self._seq)
            self._current[key] = (seq, fn)
            heapq.heappush(self._heap, (deadline, seq, key))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="callbot-alarm",
                                                daemon=True)
                self._thread.start()
            if self._heap[0][1] == seq:
                self._cond.notify()        # sooner than what the thread waits for

    def cancel(self, key: Hashable) -> None:
        with self._cond:
            self._current.pop(key, None)      # its heap entry is skipped when it comes up

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    # drop entries replaced or cancelled since they were pushed
                    while self._heap and self._current.get(self._heap[0][2], (None,))[0] \
                            != self._heap[0][1]:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                _, _, key = heapq.heappop(self._heap)
                _, fn = self._current.pop(key)
            try:
                fn()
            except Exception:   # noqa: BLE001 - one call's callback never stops the others
                import logging
                logging.getLogger("callbot.holding").exception("holding callback failed")


_ALARM: Alarm | None = None
_ALARM_LOCK = threading.Lock()


def process_alarm() -> Alarm:
    """The process's alarm thread (started on first use), shared by every call."""
    global _ALARM
    with _ALARM_LOCK:
        if _ALARM is None:
            _ALARM = Alarm()
        return _ALARM
