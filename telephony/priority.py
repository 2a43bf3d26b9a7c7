"""Keep the media clock on time: compute runs at a lower CPU priority than the clock thread.

Every call's 20 ms frames are produced on pjsua's one clock thread. When Whisper's threads
and the clock thread compete for the cores, the clock wakes late, RTP leaves in bursts and
the caller's jitter buffer runs dry (heard as clicks; measured: frame gaps up to ~60 ms,
"jb_empty" at the caller). Linux nice values are per thread and inherited by the threads a
thread creates, and *raising* one's own nice value needs no privilege. So the speech
engines are loaded from a thread at nice +``COMPUTE_NICE`` (the recognizer's worker threads
are born there and inherit it) and the call runner threads lower themselves too, while the
main loop and the clock thread keep the process's normal priority.

Where the system allows it, the clock thread goes further and runs under the real-time
round-robin policy (``workers.media_priority = "realtime"``), as Asterisk's and
FreeSWITCH's media threads do: then no ordinary process on the machine (a recognizer in
another worker, a backup, a burst of test callers) can make a frame late. It needs root or
CAP_SYS_NICE (systemd: ``AmbientCapabilities=CAP_SYS_NICE``); without it the worker says so
once and carries on at normal priority. The clock thread only copies 640 bytes per call
every 20 ms and sleeps in between, so it cannot starve the machine. With such a clock the
compute threads no longer need to step back (:func:`compute_nice`).
"""

from __future__ import annotations

import os
import threading
from typing import Callable, TypeVar

T = TypeVar("T")
COMPUTE_NICE = 5


def lower_this_thread(by: int = COMPUTE_NICE) -> bool:
    """Add ``by`` to the calling thread's nice value; False where the OS does not allow it."""
    try:
        tid = threading.get_native_id()
        now = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, now + by))
        return True
    except (AttributeError, OSError):
        return False


REALTIME_PRIORITY = 10      # low in the real-time range (1-99): above every normal thread


def make_this_thread_realtime(priority: int = REALTIME_PRIORITY) -> str:
    """SCHED_RR for the calling thread; returns the policy obtained ("realtime"/"normal")."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(priority))  # 0: this thread
        return "realtime"
    except (AttributeError, OSError):
        return "normal"


def can_realtime(priority: int = REALTIME_PRIORITY) -> bool:
    """Whether a thread of this process may take SCHED_RR (asked from a throw-away thread)."""
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(make_this_thread_realtime(priority)),
                         name="rt-probe")
    t.start()
    t.join()
    return out == ["realtime"]


def compute_nice(media_priority: str) -> int:
    """How far compute threads step back. Only to protect a media clock that cannot have
    real-time priority: when it has it, lowering recognition only hands its CPU to other
    processes (measured, 16 calls and 16 local callers at equal priority: answer p95
    855 ms with recognition at nice +5, 530 ms at nice 0, no late frame either way)."""
    return 0 if media_priority == "realtime" and can_realtime() else COMPUTE_NICE


RECOGNITION_NICE = -5


def recognition_nice(media_priority: str) -> int:
    """The machine's recognition service: what every waiting caller waits for, so above
    everything else on the machine but the media clocks (which run real-time, above it).
    Measured at 32 calls with the test callers on the same 2 cores, recognition at nice 0
    got 28 % of one core and short answers waited p50 2.9 s. Without a real-time clock
    (no CAP_SYS_NICE) it steps back like every compute thread."""
    return RECOGNITION_NICE if compute_nice(media_priority) == 0 else COMPUTE_NICE


class OnFirstCall:
    """Runs ``fn`` once, on whichever thread calls first (here: the media clock thread,
    which pjmedia creates and which Python only sees through the frame callbacks)."""

    __slots__ = ("fn", "done")

    def __init__(self, fn: Callable[[], None] | None) -> None:
        self.fn = fn
        self.done = fn is None

    def __call__(self) -> None:
        if not self.done:
            self.done = True
            try:
                self.fn()  # type: ignore[misc]
            except Exception:  # noqa: BLE001 - never unwind into the clock thread
                pass


def run_lowered(fn: Callable[[], T], by: int = COMPUTE_NICE) -> T:
    """Run ``fn`` in a short-lived thread at a lower priority; threads it starts inherit it."""
    out: dict[str, object] = {}

    def body() -> None:
        lower_this_thread(by)
        try:
            out["value"] = fn()
        except BaseException as exc:  # re-raised in the calling thread
            out["error"] = exc

    t = threading.Thread(target=body, name="load-engines")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
