"""Personal data out of exported transcripts: SIREN/SIRET, phone numbers, e-mail addresses.

Callers give numbers as digits ("732 829 320", "06.12.34.56.78") or as words, digit by
digit or in groups, with hesitations ("sept cent trente deux euh huit deux neuf"). Any run
of number words and digits that spells six digits or more is replaced, whatever it is: a
SIREN (9), a SIRET (14) and a French phone number (10) all are; prices, dates and years
("deux mille vingt-quatre") are not. In a SIREN-capture turn every number goes, because
callers spread the nine digits over several utterances; so do the keys typed then, and the
number of a register look-up.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..siren import spoken_digits
from ..text import strip_accents

NUMBER = "[numéro]"
EMAIL = "[e-mail]"
MIN_DIGITS = 6

_NUMBER_WORDS = frozenset(
    "zero un une deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze "
    "quinze seize vingt vingts trente quarante cinquante soixante cent cents et".split())
_FILLERS = frozenset({"euh", "heu", "hum", "ben", "bah", "hein"})
_TOKEN = re.compile(r"\+?\d+|[^\W\d_]+")
_WRITTEN_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SPOKEN_EMAIL = re.compile(
    r"\b[\w-]+(?:\s+(?:point|tiret|underscore|tiret\s+bas)\s+[\w-]+)*\s+(?:arobase|arrobase|"
    r"arobas|arrobas)\s+[\w-]+(?:\s+point\s+[\w-]+)+", re.IGNORECASE)


def _kind(token: str) -> str:
    if token.lstrip("+").isdigit():
        return "num"
    word = strip_accents(token.lower())
    if word in _FILLERS:
        return "filler"
    return "num" if word in _NUMBER_WORDS else "word"


def _redact_numbers(text: str, min_digits: int) -> str:
    tokens = list(_TOKEN.finditer(text))
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if _kind(tokens[i].group()) != "num":
            i += 1
            continue
        j = i
        last = i
        while j + 1 < len(tokens) and _kind(tokens[j + 1].group()) in ("num", "filler"):
            j += 1
            if _kind(tokens[j].group()) == "num":
                last = j
        start, end = tokens[i].start(), tokens[last].end()
        if len(spoken_digits(text[start:end])) >= min_digits:
            spans.append((start, end))
        i = last + 1
    for start, end in reversed(spans):
        text = text[:start] + NUMBER + text[end:]
    return text


def redact_text(text: str | None, all_numbers: bool = False) -> str | None:
    """``text`` without e-mail addresses and long numbers (any number if ``all_numbers``)."""
    if not text:
        return text
    text = _WRITTEN_EMAIL.sub(EMAIL, text)
    text = _SPOKEN_EMAIL.sub(EMAIL, text)
    return _redact_numbers(text, 1 if all_numbers else MIN_DIGITS)


def _redact_event(event: dict[str, Any]) -> dict[str, Any]:
    event = dict(event)
    if "text" in event:
        event["text"] = redact_text(event["text"])
    ctx = event.get("context")
    if isinstance(ctx, dict):
        ctx = dict(ctx)
        if ctx.get("siren"):
            ctx["siren"] = NUMBER
        for key in ("summary", "last_utterance"):
            ctx[key] = redact_text(ctx.get(key))
        event["context"] = ctx
    if event.get("type") == "lookup" and event.get("number"):
        event["number"] = NUMBER          # a register look-up: the number the caller gave
    return event


def redact_turn(turn: dict[str, Any]) -> dict[str, Any]:
    """A turn row (events and alternatives decoded) with its personal data removed."""
    out = dict(turn)
    capture = turn.get("decision") == "capture" or turn.get("state") == "siren_capture"
    out["text"] = redact_text(turn.get("text"), all_numbers=capture)
    if turn.get("dtmf") and (turn.get("intent") == "siren"
                             or turn.get("state") in ("siren_capture", "ended")):
        out["dtmf"] = "*"
    events = turn.get("events")
    if isinstance(events, str):
        events = json.loads(events)
    if events:
        out["events"] = [_redact_event(e) for e in events]
    return out


def redact_call(call: dict[str, Any]) -> dict[str, Any]:
    """A call row (with its "turns", if any) with its personal data removed."""
    out = dict(call)
    if out.get("caller_number"):
        out["caller_number"] = NUMBER
    out["summary"] = redact_text(out.get("summary"))
    out["detail"] = redact_text(out.get("detail"))
    if "turns" in out:
        out["turns"] = [redact_turn(t) for t in out["turns"]]
    return out


def mask_number(number: str | None) -> str:
    """A caller number as a read-only supervisor sees it: only the last two digits."""
    if not number:
        return ""
    digits = [c for c in number if c.isdigit()]
    if len(digits) <= 2:
        return "••"
    return "•" * (len(digits) - 2) + "".join(digits[-2:])
