"""The knowledge base from the console: a reviewed utterance becomes a training phrasing.

A phrasing is appended to ``kb/phrasings/<intent>.txt`` (or ``hors_sujet.txt``) under a
comment saying where it came from (``# console 2026-11-23 by alice, call 1234``), so every
line the console added can be traced back to the call and the person. An utterance that is
already a phrasing of another intent is refused: the knowledge-base check would reject it
and the next training would fail. What the caller said is redacted before it is written.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..kb import OUT_OF_SCOPE, load_kb
from ..numbers import digits_to_words
from ..text import normalize
from ..transcripts.redact import redact_text

_lock = threading.Lock()   # one writer of kb/ per console process


class KbEditError(Exception):
    """The phrasing cannot be added; the message says why, for the supervisor."""


@dataclass(frozen=True)
class Added:
    intent: str
    text: str
    path: Path
    added: bool            # False: it was already a phrasing of this intent


def phrasing_text(utterance: str) -> str:
    """An utterance written the way kb/phrasings are: its personal data removed, lowercase,
    numbers in words, no punctuation but apostrophes and hyphens, single spaces (accents
    kept).

    kb/ is versioned, copied to every machine and read by everyone who edits it: a caller's
    name, number or address must never reach it. They go without a placeholder ("mon siren
    c'est [numéro]" would teach the classifier the word "numéro"), leaving what the caller
    asked for.
    """
    t = redact_text(utterance, placeholders=False) or ""
    t = t.replace("’", "'").lower()
    t = digits_to_words(t)
    t = re.sub(r"[^\w'\- ]+", " ", t)
    return " ".join(t.split())


def origin_comment(user: str, call_id: str, when: float | None = None) -> str:
    day = time.strftime("%Y-%m-%d", time.localtime(time.time() if when is None else when))
    return f"# console {day} by {user}, call {call_id}"


def add_phrasing(kb_root: Path, intent: str, utterance: str, user: str, call_id: str) -> Added:
    """Append ``utterance`` to the phrasings of ``intent`` with its origin comment."""
    text = phrasing_text(utterance)
    key = normalize(text)
    if not key:
        raise KbEditError("nothing is left of the utterance once written as a phrasing "
                          "without its personal data: dismiss it instead")
    if "\n" in user or "\n" in call_id:
        raise KbEditError("a user name or call id cannot hold a line break")
    with _lock:
        kb = load_kb(kb_root)
        if intent != OUT_OF_SCOPE and intent not in kb.taxonomy_ids:
            raise KbEditError(f"unknown intent {intent!r}")
        for p in kb.phrasings:
            if normalize(p.text) == key:
                if p.intent == intent:
                    return Added(intent, text, p.source, added=False)
                raise KbEditError(f"«{text}» is already a phrasing of {p.intent} "
                                  f"({kb.rel(p.source)}:{p.line})")
        path = kb_root / "phrasings" / f"{intent}.txt"
        prefix = ""
        if path.exists():
            content = path.read_bytes()
            if content and not content.endswith(b"\n"):
                prefix = "\n"
        with open(path, "a", encoding="utf-8") as f:
            f.write(f"{prefix}{origin_comment(user, call_id)}\n{text}\n")
    return Added(intent, text, path, added=True)
