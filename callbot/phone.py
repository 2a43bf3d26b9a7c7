"""French telephone numbers for callbacks: the caller's number from the call, or typed.

An advisor calls back a French number only: ten digits starting with 0 and a non-zero
second digit (01-09). The caller id of a call may come as "+33612345678", "0033612345678"
or "0612345678"; anything else (withheld, "anonymous", an internal extension) is no number
to call back, and the bot asks for one on the keypad. There is no check digit (unlike a
SIREN): the length and the prefix are all that can be checked.
"""

from __future__ import annotations

import re

from .numbers import UNITS, int_to_words

_FRENCH = re.compile(r"0[1-9]\d{8}")


def french_number(digits: str) -> str | None:
    """``digits`` as ten French digits ("0612345678"), or None if it is not one.

    Separators (spaces, dots, dashes) are ignored; +33 and 0033 become 0.
    """
    s = re.sub(r"[\s.\-()]", "", digits or "")
    if s.startswith("+33"):
        s = "0" + s[3:]
    elif s.startswith("0033"):
        s = "0" + s[4:]
    return s if _FRENCH.fullmatch(s) else None


def spoken_pairs(number: str) -> list[str]:
    """"0612345678" → ["zéro six", "douze", "trente quatre", "cinquante six", "soixante dix
    huit"]: in pairs, as the French say a phone number (the speech engine would read "06" as
    "six"). Each pair is spoken as a sentence of its own, so the speech cache keeps a
    hundred pairs, never a caller's whole number."""
    pairs = [number[i:i + 2] for i in range(0, len(number), 2)]
    return [f"zéro {UNITS[int(p[1])]}" if p[0] == "0" and len(p) == 2
            else int_to_words(int(p)) for p in pairs]
