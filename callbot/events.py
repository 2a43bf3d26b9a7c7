"""What the core tells the outside world: plain records, no behaviour.

The dialogue emits :class:`Say`, :class:`Transfer` and :class:`HangUp`; the call session
turns ``Say`` into audio and passes the two others to whoever carries the call (the SIP
side, or the simulator). ``Transfer`` carries everything a human advisor needs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


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


Event = Say | Transfer | HangUp


@dataclass(frozen=True)
class BargeIn:
    """The caller spoke over the bot: playback was cut after ``played_ms``."""

    played_ms: int

    def to_json(self) -> dict:
        return {"type": "barge_in", "played_ms": self.played_ms}


@dataclass
class Turn:
    """One exchange: what the caller did (or nothing) and what the bot decided."""

    caller: str | None                 # None: the greeting, a silence, a key press
    events: list = field(default_factory=list)
    intent: str | None = None
    confidence: float | None = None
    alternatives: list = field(default_factory=list)
    decision: str | None = None
    dtmf: str | None = None
    asr_engine: str | None = None
    asr_confidence: float | None = None
    state: str = ""

    @property
    def bot_text(self) -> str:
        return " ".join(e.text for e in self.events if isinstance(e, Say))

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
