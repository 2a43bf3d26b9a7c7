"""The offline twin of a call: a scripted (or typed) caller talks to a real CallSession.

Caller turns are text (the recognizer is skipped), WAV files (they go through endpointing and
the recognizer at 8 kHz, exactly as on a phone line) or DTMF keys. The simulated caller waits
for the bot to finish speaking before each turn, and stays silent once its script runs out,
so the call ends the way a real one would: no-input prompts, SIREN capture giving up,
transfer or hang-up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from .audio import FRAME_MS, TELEPHONY_RATE, frame_bytes, read_wav, split_frames
from .events import (BargeIn, CallbackRequested, CallEvent, CompanyLookup, Ended, HangUp,
                     Transfer, Turn, TurnDecided)
from .session import CallSession, Engines

if TYPE_CHECKING:
    from .transcripts import CallRecorder


@dataclass(frozen=True)
class CallerTurn:
    kind: str          # "text" | "wav" | "dtmf"
    value: str

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.value}"


@dataclass
class SimulationResult:
    turns: list[Turn]
    outcome: str                   # transferred | hung_up | ongoing
    ending: Transfer | HangUp | None
    bot_audio: bytes = b""
    caller_audio: bytes = b""
    duration_ms: int = 0
    barge_ins: int = 0
    decided: list[TurnDecided] = field(default_factory=list)   # every turn, with its latency

    def to_json(self) -> dict:
        transfer = None
        if isinstance(self.ending, Transfer):
            transfer = self.ending.to_json()
            transfer.pop("type")
        out = {"turns": [t.to_json() for t in self.turns], "outcome": self.outcome,
               "transfer": transfer}
        if isinstance(self.ending, HangUp):
            out["hangup"] = {"reason": self.ending.reason}
        return out


def prepare(turns: Iterable[CallerTurn]) -> list[CallerTurn]:
    """Check every WAV up front, so a bad file fails before the call starts."""
    out = list(turns)
    for t in out:
        if t.kind == "wav":
            read_wav(t.value)
    return out


class _Watcher:
    """The simulator's own observer: turns as they are decided, barge-ins, the ending."""

    def __init__(self, on_turn: Callable[[Turn], None] | None) -> None:
        self.on_turn = on_turn
        self.decided: list[TurnDecided] = []
        self.barge_ins = 0
        self.ended: Transfer | HangUp | None = None
        self.error: BaseException | None = None   # from on_turn: stops the simulation

    def on_event(self, event: CallEvent) -> None:
        if isinstance(event, TurnDecided):
            self.decided.append(event)
            if self.on_turn is not None and self.error is None:
                try:
                    self.on_turn(event.turn)
                except BaseException as exc:     # e.g. `callbot simulate | head`: stop
                    self.error = exc
        elif isinstance(event, BargeIn):
            self.barge_ins += 1
        elif isinstance(event, Ended):
            self.ended = event.ending

    def check(self) -> None:
        """Raise what on_turn raised (the session itself never lets an observer stop it)."""
        if self.error is not None:
            raise self.error


def simulate(engines: Engines, turns: Iterable[CallerTurn],
             on_turn: Callable[[Turn], None] | None = None,
             max_ms: int | None = None, recorder: "CallRecorder | None" = None
             ) -> SimulationResult:
    """Play a whole call; returns when it ends (or at ``max_ms`` of call time: ongoing).

    ``recorder``: a :class:`callbot.transcripts.CallRecorder` that keeps the transcript, as
    for a real call (closed at the end).
    """
    config = engines.config
    silence = b"\x00" * frame_bytes(TELEPHONY_RATE, FRAME_MS)
    bot: list[bytes] = []
    caller: list[bytes] = []
    watcher = _Watcher(on_turn)
    session = CallSession(engines, call_id="simulation",
                          observers=[watcher] + ([recorder] if recorder is not None else []))
    if max_ms is None:
        ep = config.endpointing
        max_ms = 60_000 + ep.no_input_ms * (config.dialogue.no_input_limit
                                            + config.dialogue.siren_attempts + 2)
    limit = [max_ms]

    def tick(frame: bytes = silence) -> None:
        session.push(frame)
        caller.append(frame)
        bot.append(session.pull())
        watcher.check()

    def wait_until_quiet() -> None:
        while session.speaking and not session.ended.is_set() and session.clock_ms < limit[0]:
            tick()

    session.start()
    watcher.check()
    iterator: Iterator[CallerTurn] = iter(turns)
    for turn in iterator:
        wait_until_quiet()
        if session.ended.is_set() or session.ending is not None:
            break
        limit[0] = session.clock_ms + max_ms
        before = len(watcher.decided)
        if turn.kind == "text":
            tick()
            session.hear(turn.value)
            watcher.check()
        elif turn.kind == "dtmf":
            for digit in turn.value:
                tick()
                session.dtmf(digit)
                watcher.check()
                for _ in range(5):   # keys arrive about 100 ms apart
                    tick()
        elif turn.kind == "wav":
            pcm = read_wav(turn.value).tobytes()
            for frame in split_frames(pcm, TELEPHONY_RATE, FRAME_MS):
                tick(frame)
            # Let the endpointer hear the end of speech and the bot answer (or time out).
            while len(watcher.decided) == before and not session.ended.is_set() \
                    and session.clock_ms < limit[0]:
                tick()
        else:
            raise ValueError(f"unknown caller turn kind {turn.kind!r}")
    # Script over: the caller stays silent until the call ends.
    limit[0] = session.clock_ms + max_ms
    while not session.ended.is_set() and session.clock_ms < limit[0]:
        tick()
    ending = watcher.ended
    session.close()
    if recorder is not None:
        recorder.close()
    outcome = ("transferred" if isinstance(ending, Transfer)
               else "hung_up" if isinstance(ending, HangUp) else "ongoing")
    return SimulationResult(turns=[d.turn for d in watcher.decided], outcome=outcome,
                            ending=ending, bot_audio=b"".join(bot),
                            caller_audio=b"".join(caller), duration_ms=session.clock_ms,
                            barge_ins=watcher.barge_ins, decided=watcher.decided)


def transcript_lines(turn: Turn) -> list[str]:
    """A readable transcript of one turn."""
    lines = []
    if turn.caller is not None:
        what = f"  ({turn.intent} {turn.confidence:.2f})" if turn.confidence is not None \
            else f"  ({turn.intent})" if turn.intent else ""
        lines.append(f"caller: {turn.caller}{what}")
    elif turn.dtmf is not None:
        lines.append(f"caller: [key {turn.dtmf}]")
    elif not any(getattr(e, "key", "") == "prompt:greeting" for e in turn.events):
        lines.append("caller: [silence]")
    for e in turn.events:
        if isinstance(e, Transfer):
            lines.append(f"-> transfer ({e.reason}): {e.context.summary}")
        elif isinstance(e, HangUp):
            lines.append(f"-> hang up ({e.reason})")
        elif isinstance(e, CallbackRequested):
            lines.append(f"-> callback requested on {e.number} ({e.source}; {e.reason})")
        elif isinstance(e, CompanyLookup):
            lines.append(f"-> register look-up: {e.result}")
        else:
            lines.append(f"bot:    {e.text}" + ("  [slowly]" if e.slow else ""))
    return lines


def caller_turns_from_lines(lines: Iterable[str]) -> Iterator[CallerTurn]:
    """Interactive or piped caller: one turn per line; 'dtmf:123' for keys, 'wav:FILE' for
    audio, '...' or an empty line to stay silent until the bot reacts."""
    for raw in lines:
        line = raw.strip()
        if line.startswith("dtmf:"):
            yield CallerTurn("dtmf", line[5:].strip())
        elif line.startswith("wav:"):
            path = line[4:].strip()
            if not Path(path).exists():
                raise FileNotFoundError(path)
            yield CallerTurn("wav", path)
        elif line in ("", "..."):
            continue
        else:
            yield CallerTurn("text", line)
