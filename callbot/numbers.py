"""French numbers, both ways.

Speech recognizers write numbers as digits ("3 semaines", "732 829 320") or as words
("trois semaines", "sept cent trente deux"). The classifier wants one form (words); the
SIREN capture wants the other (digits, :mod:`callbot.siren`). Both read numbers here so that
they agree.
"""

from __future__ import annotations

import re

UNITS = ["zero", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf",
         "dix", "onze", "douze", "treize", "quatorze", "quinze", "seize"]
TENS = {2: "vingt", 3: "trente", 4: "quarante", 5: "cinquante", 6: "soixante"}


def _below_100(n: int) -> str:
    if n <= 16:
        return UNITS[n]
    if n < 20:
        return "dix " + UNITS[n - 10]
    t, u = divmod(n, 10)
    if t in (7, 9):
        base = "soixante" if t == 7 else "quatre vingt"
        rest = n - (60 if t == 7 else 80)
        sep = " et " if n == 71 else " "
        return base + sep + _below_100(rest)
    if t == 8:
        return "quatre vingt" + ("" if u == 0 else " " + UNITS[u])
    word = TENS[t]
    if u == 0:
        return word
    if u == 1:
        return word + " et un"
    return word + " " + UNITS[u]


def _below_1000(n: int) -> str:
    h, r = divmod(n, 100)
    parts = []
    if h:
        parts.append("cent" if h == 1 else UNITS[h] + " cent")
    if r or not h:
        parts.append(_below_100(r))
    return " ".join(parts)


def int_to_words(n: int) -> str:
    """French words for a non-negative integer, lowercase, unaccented, no hyphens."""
    if n < 0:
        return "moins " + int_to_words(-n)
    if n < 1000:
        return _below_1000(n)
    if n < 1_000_000:
        th, r = divmod(n, 1000)
        head = "mille" if th == 1 else _below_1000(th) + " mille"
        return head + ("" if r == 0 else " " + _below_1000(r))
    if n < 1_000_000_000:
        mi, r = divmod(n, 1_000_000)
        head = _below_1000(mi) + " million" + ("s" if mi > 1 else "")
        return head + ("" if r == 0 else " " + int_to_words(r))
    # Long digit strings (phone numbers, SIRET) read digit by digit.
    return " ".join(UNITS[int(d)] for d in str(n))


def digits_to_words(text: str) -> str:
    """Replace every run of digits by its French words ("14" -> "quatorze").

    Runs longer than nine digits are read digit by digit, like a SIRET said aloud.
    """
    def repl(m: re.Match[str]) -> str:
        s = m.group(0)
        if len(s) > 9:
            return " " + " ".join(UNITS[int(d)] for d in s) + " "
        return " " + int_to_words(int(s)) + " "

    return re.sub(r"\d+", repl, text)


# --- words to digits -------------------------------------------------------------------

_UNIT_VALUE = {w: i for i, w in enumerate(UNITS)}
_UNIT_VALUE.update({"zero": 0, "une": 1, "z": 0})
_TENS_VALUE = {"vingt": 20, "vingts": 20, "trente": 30, "quarante": 40, "cinquante": 50,
               "soixante": 60,
               # Belgian and Swiss callers
               "septante": 70, "huitante": 80, "octante": 80, "nonante": 90}


def number_at(tokens: list[str], i: int) -> tuple[int | None, int]:
    """Parse one number (< 1000) starting at tokens[i]; returns (value, next index)."""
    n = len(tokens)

    def unit(j: int, lo: int = 0, hi: int = 16) -> int | None:
        if j < n and tokens[j] in _UNIT_VALUE and lo <= _UNIT_VALUE[tokens[j]] <= hi:
            return _UNIT_VALUE[tokens[j]]
        return None

    def teens(j: int) -> tuple[int | None, int]:
        """10..19 at j: 'dix'..'seize' or 'dix sept'..'dix neuf'."""
        v = unit(j, 10, 16)
        if v is None:
            return None, j
        if v == 10:
            u = unit(j + 1, 7, 9)
            if u is not None:
                return 10 + u, j + 2
        return v, j + 1

    def below_100(j: int) -> tuple[int | None, int]:
        if j < n and tokens[j] == "quatre" and j + 1 < n and tokens[j + 1] in ("vingt", "vingts"):
            j += 2
            t, k = teens(j)
            if t is not None:
                return 80 + t, k
            u = unit(j, 1, 9)
            if u is not None:
                return 80 + u, j + 1
            return 80, j
        if j < n and tokens[j] in _TENS_VALUE:
            base = _TENS_VALUE[tokens[j]]
            j += 1
            if j < n and tokens[j] == "et":
                j += 1
            if base == 60:
                t, k = teens(j)
                if t is not None:
                    return 60 + t, k
            u = unit(j, 1, 9)
            if u is not None:
                return base + u, j + 1
            return base, j
        t, k = teens(j)
        if t is not None:
            return t, k
        u = unit(j, 0, 9)
        if u is not None:
            return u, j + 1
        return None, j

    # hundreds: "cent", "trois cent"
    if i < n and tokens[i] in ("cent", "cents"):
        rest, k = below_100(i + 1)
        return 100 + (rest or 0), k
    if i + 1 < n and tokens[i + 1] in ("cent", "cents"):
        h = unit(i, 2, 9)
        if h is not None:
            rest, k = below_100(i + 2)
            if rest == 0:   # "trois cent zéro" is two numbers
                return h * 100, i + 2
            return h * 100 + (rest or 0), k
    return below_100(i)
