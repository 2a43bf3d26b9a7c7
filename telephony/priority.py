"""Keep the media clock on time: compute runs at a lower CPU priority than the clock thread.

Every call's 20 ms frames are produced on pjsua's one clock thread. When Whisper's threads
and the clock thread compete for the cores, the clock wakes late, RTP leaves in bursts and
the caller's jitter buffer runs dry (heard as clicks; measured: frame gaps up to ~60 ms,
"jb_empty" at the caller). Linux nice values are per thread and inherited by the threads a
thread creates, and *raising* one's own nice value needs no privilege. So the speech
engines are loaded from a thread at nice +``COMPUTE_NICE`` (the recognizer's worker threads
are born there and inherit it) and the call runner threads lower themselves too, while the
main loop and the clock thread keep the process's normal priority.
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
