"""Text normalization: one form for what callers say, whatever wrote it down.

Vosk writes "j'ai pas reçu mon siret", Whisper writes "J'ai pas reçu mon SIRET, 3 semaines
après.", the knowledge base is typed by people. The classifier, the KB checks and the SIREN
capture all compare text through :func:`normalize`.
"""

from __future__ import annotations

import re
import unicodedata

from .numbers import digits_to_words

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'", "ʼ": "'", "´": "'"})
_LIGATURES = str.maketrans({"œ": "oe", "æ": "ae", "Œ": "oe", "Æ": "ae"})
_NON_WORD = re.compile(r"[^a-z0-9]+")
_PLURAL_NUMBERS = re.compile(r"\b(vingt|cent)s\b")


def strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", text)
                   if not unicodedata.combining(c))


def normalize(text: str, numbers_as_words: bool = True) -> str:
    """Lowercase, no accents, no punctuation, numbers as words, single spaces.

    Apostrophes and hyphens become spaces ("l'insee" -> "l insee", "dix-sept" -> "dix sept"),
    so that every source splits words the same way.
    """
    t = text.translate(_APOSTROPHES).translate(_LIGATURES).lower()
    t = strip_accents(t)
    # "1er", "2e" -> numbers; "14h" -> "14 h"
    t = re.sub(r"\b1er\b", "premier", t)
    t = re.sub(r"(\d)(eme|e)\b", r"\1", t)
    t = re.sub(r"(?<=\d)[ .\u202f\u00a0](?=\d{3}\b)", "", t)   # "1 000" / "1.000" -> "1000"
    if numbers_as_words:
        t = digits_to_words(t)
    t = _NON_WORD.sub(" ", t)
    t = _PLURAL_NUMBERS.sub(r"\1", t)
    return " ".join(t.split())


def spoken_words(text: str) -> int:
    """Number of words a listener hears (numbers counted as spoken)."""
    return len(normalize(text).split())
