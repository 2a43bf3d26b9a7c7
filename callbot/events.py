"""The one vocabulary of a call: what the core decides and what happens on the line.

Two kinds of records live here, both plain data:

* The dialogue's **decisions** — :class:`Say`, :class:`Transfer`, :class:`HangUp`,
  :class:`CallbackRequested` — gathered in a :class:`Turn` (one exchange: what the caller
  did, what the bot decided), with the register look-ups (:class:`CompanyLookup`) the turn
  made.
* The **call events** a :class:`~callbot.session.CallSession` emits, in call order, to every
  :class:`CallObserver`: speech started, partial, final, turn decided (with its latency),
  barge-in, a turn taken back, a holding prompt for a slow answer, the answer's first frame
  (what the caller waited), the bot done speaking, the call's audio, the ending handed
  over, a callback requested after a failed transfer, a failure. The transcript recorder, the simulator, the SIP runner (its log and its
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
    reason: str              # caller_goodbye | no_input | callback_requested | callback_declined
                             # | callback_no_number

    def to_json(self) -> dict:
        return {"type": "hangup", "reason": self.reason}


@dataclass(frozen=True)
class CallbackRequested:
    """The transfer failed (queue closed or unreachable) and the caller asked to be called
    back on ``number``. The dialogue decides it (``at_ms`` 0); the session emits it to its
    observers with the call clock, and the transcript recorder stores it for the advisors'
    callback list."""

    number: str              # ten French digits, "0612345678"
    source: str              # "caller_id" (from the call) | "keypad" (typed by the caller)
    reason: str              # why the transfer failed, as the carrier said ("486 Busy Here")
    intent: str | None       # what the caller wanted an advisor for
    siren: str | None        # checked SIREN, if the caller gave one
    summary: str = ""        # the advisor's one line, as a transfer would have carried it
    at_ms: int = 0

    def to_json(self) -> dict:
        return {"type": "callback", "number": self.number, "source": self.source,
                "reason": self.reason, "intent": self.intent, "siren": self.siren}




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



Decision = Say | Transfer | HangUp | CallbackRequested | CompanyLookup
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
    silence_ms: int | None = None    # silence heard after the last voiced frame: the wait for
                                     # the end of turn (None: not from audio)


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
    nlu_ms: float | None = None      # understanding the words (classifier and dialogue)


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
class AnswerStarted:
    """The first frame of the answer to the caller's words left for the line: what the
    caller waited, from the end of their speech (``waited_ms``), and its parts, wall-clock:
    the silence that ended the turn, the recognizer's work, and the rest (understanding,
    speech synthesis or cache, the frames queued before it, a holding prompt)."""

    waited_ms: float
    end_of_turn_ms: float
    recognition_ms: float
    answer_ms: float
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
             | AnswerStarted | PlaybackDrained | CallAudio | Ended | Failed
             | CallbackRequested)


class CallObserver(Protocol):
    """Receives every event of one call, on the thread that drives the call (under the
    session's lock).

    It must be quick (it runs inside the call's 20 ms step) and should not raise: an
    observer that raises is logged once and dropped, so a broken output never breaks a call.
    """

    def on_event(self, event: CallEvent) -> None: ...
