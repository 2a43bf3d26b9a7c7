"""SIREN numbers as callers give them: spoken digits, groups of digits, or typed keys.

A SIREN is 9 digits with a Luhn key; a SIRET is the SIREN followed by 5 digits (the
establishment), and its first 9 digits are the SIREN. Callers say them in groups ("sept cent
trente deux, huit cent vingt neuf...") or one digit at a time, and the recognizer writes
either words or digits: :func:`spoken_digits` reads both.
"""

from __future__ import annotations

from .numbers import number_at
from .text import normalize


def spoken_digits(text: str) -> str:
    """All the digits a caller said, in order: "sept cent trente deux 8 2 9" -> "732829".

    Each spoken number contributes its decimal digits, so groups ("trois cent vingt") and
    single digits ("trois deux zéro") both work. Other words are ignored.
    """
    tokens = normalize(text, numbers_as_words=False).split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.isdigit():
            out.append(tok)
            i += 1
            continue
        value, j = number_at(tokens, i)
        if value is None or j == i:
            i += 1
            continue
        out.append(str(value))
        i = j
    return "".join(out)


def luhn_ok(digits: str) -> bool:
    """Luhn key, as used by SIREN (9 digits) and SIRET (14 digits)."""
    if not digits.isdigit():
        return False
    total = 0
    for pos, ch in enumerate(reversed(digits)):
        d = int(ch)
        if pos % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def siren_from_digits(digits: str) -> str | None:
    """A valid SIREN from what the caller gave: 9 digits, or a SIRET's first 9."""
    if len(digits) == 9 and luhn_ok(digits):
        return digits
    if len(digits) == 14 and luhn_ok(digits[:9]):
        return digits[:9]
    return None
