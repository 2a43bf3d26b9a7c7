"""Real calls for the transcript and console tests: a CallSession driven by text and keys,
recorded by a CallRecorder exactly the way the SIP worker wires it."""

from __future__ import annotations

import math
import struct
import time

from callbot.session import CallSession
from callbot.transcripts import CallInfo, CallRecorder

FRAME = 320                      # 20 ms at 8 kHz, 16-bit mono
SILENCE = b"\x00" * FRAME


def tone(freq: float = 440.0, amp: int = 8000) -> bytes:
    """One 20 ms frame of a sine wave (a caller who makes noise, for recordings)."""
    return b"".join(struct.pack("<h", int(amp * math.sin(2 * math.pi * freq * i / 8000)))
                    for i in range(FRAME // 2))


def tick(session: CallSession, frame: bytes = SILENCE) -> None:
    session.push(frame)
    session.pull()


def until_quiet(session: CallSession, limit_ms: int = 120_000, frame: bytes = SILENCE) -> None:
    end = session.clock_ms + limit_ms
    while session.speaking and not session.ended.is_set() and session.clock_ms < end:
        tick(session, frame)


def run_call(engines, store, call_id: str, steps: list[tuple], *, caller: str = "+33612345678",
             worker: str = "test-worker", started_at: float | None = None,
             sip_call_id: str | None = None, frame: bytes = SILENCE, close: bool = True,
             observers: tuple = ()) -> tuple[CallRecorder, CallSession]:
    """Play ``steps`` — ("say", text), ("dtmf", keys), ("barge", digit) (a key pressed while
    the bot speaks), ("hangup",) — then let the call end by itself (silences) unless hung up."""
    info = CallInfo(call_id, sip_call_id or f"sip-{call_id}", caller, worker,
                    started_at if started_at is not None else time.time())
    recorder = CallRecorder(store, info)
    session = CallSession(engines, call_id, observers=[recorder, *observers])
    session.start()
    hung_up = False
    for step in steps:
        kind = step[0]
        if kind == "barge":
            for _ in range(10):
                tick(session, frame)
            session.dtmf(step[1])
            continue
        until_quiet(session, frame=frame)
        if session.ended.is_set():
            break
        if kind == "say":
            tick(session, frame)
            session.hear(step[1])
        elif kind == "dtmf":
            for digit in step[1]:
                tick(session, frame)
                session.dtmf(digit)
        elif kind == "hangup":
            hung_up = True
            break
        for _ in range(3):
            tick(session, frame)
    if not hung_up:
        end = session.clock_ms + 120_000
        while not session.ended.is_set() and session.clock_ms < end:
            tick(session, frame)
    if close:
        recorder.close()
    return recorder, session
