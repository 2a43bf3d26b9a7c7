"""The one vocabulary of a call: what the core decides and what happens on the line.

Two kinds of records live here, both plain data:

* The dialogue's **decisions** — :class:`Say`, :class:`Transfer`, :class:`HangUp` — gathered
  in a :class:`Turn` (one exchange: what the caller did, what the bot decided), with the
  register look-ups (:class:`CompanyLookup`) the turn made.
* The **call events** a :class:`~callbot.session.CallSession` emits, in call order, to every
  :class:`CallObserver`: speech started, partial, final, turn decided (with its latency),
  barge-in, a turn taken back, a holding prompt for a slow answer, the bot done speaking, the call's audio, the ending handed
  over, a failure. The transcript recorder, the simulator, the SIP runner (its log and its
  messages to the SIP main loop) are observers; a metrics exporter is one more. Whoever
  drives a session pushes frames and pulls audio; what happened comes back as events.

Every call event carries ``at_ms``, the call clock (20 ms per caller frame) when it happened.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol


# --- the dialogue's decisions ---------------------------------------------------------------
@dataclass(frozen=True)
class Say:
    text: str
    key: str                 # "answer:<intent>", "prompt:<name>", "confirm:<intent>"
    slow: bool = False       # spoken more slowly (the caller asked to repeat)

    def to_json(self) -> dict:
        return {"type": "say", "key": self.key, "text": self.text, "slow": self.slow}


@dataclass(frozen=True)
class TransferContext:
    reason: str              # caller_request | not_understood | personal_case
    intent: str | None       # the intent that led to the transfer, if any
    intents: tuple[str, ...] # the caller's intents so far, oldest first
    siren: str | None        # captured and checked (Luhn) SIREN, if any
    summary: str             # one line for the advisor
    last_utterance: str | None = None


@dataclass(frozen=True)
class Transfer:
    reason: str
    context: TransferContext

    def to_json(self) -> dict:
        return {"type": "transfer", "reason": self.reason, "context": asdict(self.context)}


@dataclass(frozen=True)
class HangUp:
    reason: str              # caller_goodbye | no_input

    def to_json(self) -> dict:
        return {"type": "hangup", "reason": self.reason}


@dataclass(frozen=True)
class CompanyLookup:
    """A number looked up in the Sirene register during the turn, and what came of it.

    Kept in the turn's events so the transcript says which number the caller had checked
    and what the bot could tell; exports redact ``number`` like every SIREN.
    """

    number: str              # the digits the caller gave (a SIREN once Luhn-checked)
    result: str              # found | not_found | partial | invalid

    def to_json(self) -> dict:
        return {"type": "lookup", "number": self.number, "result": self.result}


Decision = Say | Transfer | HangUp | CompanyLookup
Ending = Transfer | HangUp


@dataclass
class Turn:
    """One exchange: what the caller did (or nothing) and what the bot decided."""

    caller: str | None                 # None: the greeting, a silence, a key press
    events: list[Decision] = field(default_factory=list)
    intent: str | None = None
    confidence: float | None = None
    alternatives: list = field(default_factory=list)
    decision: str | None = None
    dtmf: str | None = None
    asr_engine: str | None = None
    asr_confidence: float | None = None
    state: str = ""
    answers: int = 0                   # answers on a topic of the KB (not yes, thanks, ...)

    @property
    def bot_text(self) -> str:
        return " ".join(e.text for e in self.events if isinstance(e, Say))

    @property
    def ending(self) -> Ending | None:
        """The transfer or hang-up this turn decided, if any."""
        return next((e for e in self.events if isinstance(e, (Transfer, HangUp))), None)

    def to_json(self) -> dict:
        out = {"caller": self.caller, "intent": self.intent,
               "confidence": None if self.confidence is None else round(self.confidence, 4),
               "bot": self.bot_text, "events": [e.to_json() for e in self.events]}
        if self.dtmf is not None:
            out["dtmf"] = self.dtmf
        if self.asr_engine is not None:
            out["asr"] = {"engine": self.asr_engine,
                          "confidence": None if self.asr_confidence is None
                          else round(self.asr_confidence, 4)}
        return out


# --- what happens on the line -----------------------------------------------------------------
@dataclass(frozen=True)
class SpeechStarted:
    """The endpointer heard the caller start speaking."""

    at_ms: int


@dataclass(frozen=True)
class Partial:
    """A streaming recognizer's hypothesis for the utterance so far."""

    text: str
    at_ms: int = 0


@dataclass(frozen=True)
class Final:
    """The caller's turn as text: the recognizer's result for the utterance, joined to the
    words of a taken-back request if there was one (an empty result is no turn)."""

    text: str
    confidence: float | None  # None: not scored (a streaming partial closed early)
    engine: str
    speech_ms: int          # length of the utterance given to the recognizer
    decode_ms: float        # time the recognizer took after the end of speech
    cut: bool = False       # stopped at the maximum utterance length
    quick: bool = False     # ended early: the request was complete, or the voice was done
    at_ms: int = 0
    turn_done: float | None = None   # the end-of-turn model's last verdict (0-1), if asked


@dataclass(frozen=True)
class TurnDecided:
    """The bot decided a turn (greeting, answer, prompt, silence, key) and queued its audio.

    ``latency_ms``: from the caller's final transcript to the answer's audio queued (None for
    turns no caller words started); ``decode_ms`` and ``speech_ms`` come from the recognizer.
    """

    turn: Turn
    at_ms: int
    latency_ms: float | None = None
    decode_ms: float | None = None
    speech_ms: int | None = None
    quick: bool = False


@dataclass(frozen=True)
class BargeIn:
    """The caller spoke over the bot: playback was cut after ``played_ms``."""

    played_ms: int
    at_ms: int = 0

    def to_json(self) -> dict:
        return {"type": "barge_in", "played_ms": self.played_ms}


@dataclass(frozen=True)
class TakenBack:
    """The caller went on right after a quick end of turn: its answer was withdrawn, and
    ``text`` will be heard again with what follows."""

    text: str
    at_ms: int


@dataclass(frozen=True)
class HeldOn:
    """The answer was slow: the holding prompt (``text``, "Un instant…") was played
    ``waited_ms`` after the caller's last voiced frame."""

    text: str
    waited_ms: int
    at_ms: int


@dataclass(frozen=True)
class PlaybackDrained:
    """Everything the bot had to say so far has been played: it is silent now."""

    at_ms: int


@dataclass(frozen=True)
class CallAudio:
    """One call frame of each side (16-bit PCM, 8 kHz), in call order: for recordings."""

    caller: bytes
    bot: bytes
    at_ms: int


@dataclass(frozen=True)
class Ended:
    """The transfer or hang-up, handed over once its announcement has been played."""

    ending: Ending
    at_ms: int


@dataclass(frozen=True)
class Failed:
    """The call's pipeline broke (the call is ended by whoever carries it)."""

    error: str
    where: str
    at_ms: int


CallEvent = (SpeechStarted | Partial | Final | TurnDecided | BargeIn | TakenBack | HeldOn
             | PlaybackDrained | CallAudio | Ended | Failed)


class CallObserver(Protocol):
    """Receives every event of one call, on the thread that drives the call (under the
    session's lock).

    It must be quick (it runs inside the call's 20 ms step) and should not raise: an
    observer that raises is logged once and dropped, so a broken output never breaks a call.
    """

    def on_event(self, event: CallEvent) -> None: ...
