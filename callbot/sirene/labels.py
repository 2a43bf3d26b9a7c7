"""APE codes read with their official label ("56.10A" -> "Restauration traditionnelle").

The labels are a data file shipped in the package (``naf.tsv``, its header says where they
come from and under which licence): a lookup during a call never needs the network.
Codes are keyed by their nomenclature because the same-looking code means different
things in NAF rév. 2 ("NAFRev2") and in NAF 2025 ("NAF2025").
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

NAF_REV2 = "NAFRev2"
NAF_2025 = "NAF2025"


@lru_cache(maxsize=1)
def table() -> dict[tuple[str, str], str]:
    """(nomenclature, code) -> label, from the shipped naf.tsv."""
    text = resources.files("callbot.sirene").joinpath("naf.tsv").read_text(encoding="utf-8")
    out: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("nomenclature\t"):
            continue
        nomenclature, code, label = line.split("\t")
        out[(nomenclature, code)] = label
    return out


def normalize_code(code: str) -> str:
    """"5610A", "56.10a", " 56.10A " -> "56.10A" (the stock files write the dotted form)."""
    c = code.strip().upper()
    if len(c) == 5 and "." not in c:
        c = f"{c[:2]}.{c[2:]}"
    return c


def ape_label(code: str | None, nomenclature: str | None = NAF_REV2) -> str | None:
    """The official label of an APE code, or None when the code or its nomenclature is
    unknown here (older nomenclatures NAFRev1, NAF1993, NAP: the bot then says the code
    without a label rather than a wrong one)."""
    if not code:
        return None
    return table().get((nomenclature or NAF_REV2, normalize_code(code)))


def codes(nomenclature: str = NAF_REV2) -> list[str]:
    """Every sub-class code of a nomenclature, in order (the generator draws from it)."""
    return [c for (n, c) in table() if n == nomenclature]
