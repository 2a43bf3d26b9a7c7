"""One call's recorder: a CallSession's events in, transcript rows out, nothing ever blocking.

Wiring (SIP worker or simulator)::

    recorder = CallRecorder(store, CallInfo(call_id, sip_call_id, caller_number, worker))
    session = CallSession(engines, call_id, observers=[recorder])
    ...
    recorder.transfer_result("sip:conseillers@pbx", "accepted")   # when the SIP side knows
    recorder.close()                  # outcome taken from what the call did

It is a :class:`~callbot.events.CallObserver`: each :class:`~callbot.events.TurnDecided`
becomes a caller row (speech, key or silence, with the answer's latency) and a bot row (what
it said, the answer id, every event), one operation journaled for the writer thread;
``CallAudio`` events feed the stereo recording and the call clock.
A failure here is logged once and swallowed: recording must never break a call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from typing import Any

from ..events import (AnswerStarted, BargeIn, CallAudio, CallEvent, Ended, Failed, Final, HangUp, Say,
                      Transfer, TurnDecided)
from . import writes
from .records import (
    CALLER_HANGUP,
    NO_INPUT,
    RESOLVED,
    TRANSFERRED,
    CallInfo,
    local_day,
)
from .store import TranscriptStore
from .wavfile import StereoWavWriter
from .writes import Operation

log = logging.getLogger("callbot.transcripts")


def _recording_name(info: CallInfo) -> str:
    """A file name safe whatever the call id holds, unique per call id."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", info.call_id)[:60].strip("._") or "call"
    digest = hashlib.sha1(info.call_id.encode()).hexdigest()[:8]
    return f"{local_day(info.started_at)}/{safe}-{digest}.wav"


def outcome_of(ending: Transfer | HangUp | None, played: bool) -> str:
    """How a call ended, from the last event the dialogue emitted.

    A goodbye cut short by the caller hanging up is still a resolved call; a transfer
    whose announcement was cut short never reached an advisor.
    """
    if isinstance(ending, HangUp):
        return NO_INPUT if ending.reason == "no_input" else RESOLVED
    if isinstance(ending, Transfer) and played:
        return TRANSFERRED
    return CALLER_HANGUP


class CallRecorder:
    """Records one call; create it when the call is answered, close it when it is over."""

    def __init__(self, store: TranscriptStore, info: CallInfo):
        self.store = store
        self.info = info
        self.ending: Transfer | HangUp | None = None   # played to the end
        self.decided: Transfer | HangUp | None = None  # decided (maybe cut by a hang-up)
        self.failure: Failed | None = None
        self.clock_ms = 0
        self.closed = False
        self.caller_turns = 0
        self.answers = 0
        self._seq = 0
        self._last_bot_seq: int | None = None
        self._last_speech_seq: int | None = None    # the caller's last spoken turn
        self._final: Final | None = None       # the recognizer's result the next turn answers
        self._said_error = False
        self._wav: StereoWavWriter | None = None
        self._wav_lock = threading.Lock()
        self.recording: str | None = None
        self.enabled = store.config.transcripts.enabled
        if not self.enabled:          # [transcripts] enabled = false: a recorder that does
            self.closed = True        # nothing, so the wiring never depends on the setting
            return
        store.recover_worker(info.worker)
        if store.config.recording.enabled:
            name = _recording_name(info)
            try:
                self._wav = StereoWavWriter(store.recordings / name)
                self.recording = name
            except OSError as exc:
                log.error("transcripts: cannot record call %s to %s: %s", info.call_id,
                          store.recordings, exc.strerror)
        store.submit(Operation.of(writes.insert_call, row=self._call_row()))

    # --- events -----------------------------------------------------------------------------
    def on_event(self, event: CallEvent) -> None:
        """Never raises (a failure is logged once): recording cannot break a call."""
        try:
            if isinstance(event, CallAudio):
                self.clock_ms = event.at_ms
                if self._wav is not None:
                    self._audio(event.caller, event.bot)
            elif self.closed:
                return
            elif isinstance(event, Final):
                self._final = event
            elif isinstance(event, AnswerStarted):
                self._answered(event)
            elif isinstance(event, TurnDecided):
                self._turn(event)
            elif isinstance(event, BargeIn):
                if self._last_bot_seq is not None:
                    self._update_turn(self._last_bot_seq, {"barge_in_ms": event.played_ms})
            elif isinstance(event, Ended):
                self.ending = event.ending
                if isinstance(event.ending, Transfer):
                    self.store.submit(Operation.of(
                        writes.update_call, call_id=self.info.call_id,
                        fields={"transfer_reason": event.ending.reason,
                                "summary": event.ending.context.summary}))
            elif isinstance(event, Failed):
                self.failure = event
        except Exception:
            self._error("on_event")

    def _audio(self, caller: bytes, bot: bytes) -> None:
        """One 20 ms frame of each side, into the stereo recording."""
        with self._wav_lock:
            if self._wav is None:
                return
            try:
                self._wav.write(caller, bot)
            except (OSError, ValueError) as exc:
                log.error("transcripts: recording of call %s stopped: %s", self.info.call_id,
                          exc)
                self._close_wav()

    def transfer_result(self, target: str, result: str) -> None:
        """Where the SIP side sent the caller, and how it went (accepted, failed, ...)."""
        if not self.enabled:
            return
        try:
            self.store.submit(Operation.of(
                writes.update_call, call_id=self.info.call_id,
                fields={"transfer_target": target, "transfer_result": result}))
        except Exception:
            self._error("transfer_result")

    def close(self, outcome: str | None = None, detail: str | None = None) -> None:
        """The call is over. ``outcome`` None: taken from the call (resolved, transferred, no
        input, hung up by the caller, or an error the session reported); the SIP side may
        pass "error" with a ``detail``."""
        if self.closed:
            return
        self.closed = True
        try:
            ending = self.ending or self.decided
            if outcome is None and self.failure is not None:
                outcome = "error"
                detail = detail or f"{self.failure.where}: {self.failure.error}"[:300]
            if outcome is None:
                outcome = outcome_of(ending, played=self.ending is not None)
            if detail is None and isinstance(ending, HangUp):
                detail = ending.reason
            elif detail is None and isinstance(ending, Transfer) and self.ending is None:
                detail = "hung up during the transfer announcement"
            with self._wav_lock:
                self._close_wav()
            now = time.time()
            clock = self.clock_ms
            row = self._call_row()
            row.update(ended_at=now, outcome=outcome, detail=detail,
                       duration_ms=int(clock) if clock else int((now - self.info.started_at)
                                                                 * 1000),
                       caller_turns=self.caller_turns, answers=self.answers)
            if isinstance(ending, Transfer):
                row.update(transfer_reason=ending.reason, summary=ending.context.summary)
            self.store.submit(Operation.of(writes.close_call, row=row))
        except Exception:
            self._error("close")

    # --- internals --------------------------------------------------------------------------
    def _call_row(self) -> dict[str, Any]:
        i = self.info
        return {"id": i.call_id, "sip_call_id": i.sip_call_id, "started_at": i.started_at,
                "day": local_day(i.started_at), "caller_number": i.caller_number,
                "worker": i.worker, "recording": self.recording}

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def _turn(self, decided: TurnDecided) -> None:
        turn, now, offset = decided.turn, time.time(), decided.at_ms
        final, self._final = self._final, None
        if turn.ending is not None:
            self.decided = turn.ending
        says = [e for e in turn.events if isinstance(e, Say)]
        greeting = any(s.key == "prompt:greeting" for s in says) and turn.caller is None
        kind = ("speech" if turn.caller is not None else "dtmf" if turn.dtmf is not None
                else None if greeting else "silence")
        rows: list[dict[str, Any]] = []
        if kind is not None:
            seq = self._next()
            if kind == "speech":
                self._last_speech_seq = seq
            rows.append({
                "call_id": self.info.call_id, "seq": seq, "at": now, "offset_ms": offset,
                "speaker": "caller", "kind": kind, "text": turn.caller,
                "asr_engine": turn.asr_engine, "asr_confidence": turn.asr_confidence,
                "intent": turn.intent, "confidence": turn.confidence,
                "decision": turn.decision if kind == "speech" else None,
                "alternatives": json.dumps([[i, round(float(p), 4)]
                                            for i, p in turn.alternatives])
                if turn.alternatives else None,
                "dtmf": turn.dtmf, "state": turn.state,
                "latency_ms": None if decided.latency_ms is None
                else round(decided.latency_ms, 2),
                "decode_ms": None if decided.decode_ms is None
                else round(decided.decode_ms, 2),
                # the end-of-turn wait, for the caller-perceived latency (with decode_ms and
                # latency_ms); None for words that came without audio
                "endpoint_ms": final.silence_ms if final is not None and kind == "speech"
                else None})
        if turn.events:
            seq = self._next()
            self._last_bot_seq = seq
            rows.append({
                "call_id": self.info.call_id, "seq": seq, "at": now, "offset_ms": offset,
                "speaker": "bot", "kind": "say", "text": turn.bot_text or None,
                "answer_id": says[0].key if says else None,
                "events": json.dumps([e.to_json() for e in turn.events], ensure_ascii=False),
                "state": turn.state})
        answers = turn.answers
        caller = 1 if kind == "speech" else 0
        self.caller_turns += caller
        self.answers += answers
        if rows:
            self.store.submit(Operation.of(writes.insert_turns, rows=rows,
                                           call_id=self.info.call_id, caller_turns=caller,
                                           answers=answers))

    def _answered(self, a: AnswerStarted) -> None:
        """The answer's first frame was played: the caller's wait as measured, in its three
        parts (their sum is the wait), replaces the estimate written with the turn (the
        silence on the call clock, the decode alone, the answer until queued)."""
        if self._last_speech_seq is None:
            return
        self._update_turn(self._last_speech_seq, {
            "endpoint_ms": round(a.end_of_turn_ms, 2), "decode_ms": round(a.recognition_ms, 2),
            "latency_ms": round(a.answer_ms, 2)})

    def _update_turn(self, seq: int, fields: dict[str, Any]) -> None:
        self.store.submit(Operation.of(writes.update_turn, call_id=self.info.call_id, seq=seq,
                                       fields=fields))

    def _close_wav(self) -> None:
        if self._wav is not None:
            try:
                self._wav.close()
            except OSError:
                pass
            self._wav = None

    def _error(self, where: str) -> None:
        if not self._said_error:
            self._said_error = True
            log.exception("transcripts: recording call %s failed in %s; the call goes on "
                          "unrecorded", self.info.call_id, where)
