"""Simulated speech-recognition errors, to train a classifier that survives them.

Callers' words reach the classifier through a recognizer that splits acronyms ("si ret"),
confuses near homophones ("l'ainsi" for l'Insee) and drops short words. Training on copies
of each phrasing with such errors keeps the classifier from relying on one exact spelling.
"""

from __future__ import annotations

import random

# Applied on normalized text (lowercase, no accents, words separated by spaces).
CONFUSIONS: dict[str, list[str]] = {
    "siret": ["si ret", "si rette", "ciret", "sirette", "siret"],
    "siren": ["si rene", "sirene", "cirene", "si reine", "siren"],
    "sirene": ["siren", "si rene", "cirene"],
    "ape": ["a p e", "a pe", "la pe", "ape"],
    "naf": ["n a f", "nafe", "naf"],
    "insee": ["ainsi", "inse", "insee"],
    "kbis": ["k bis", "cas bis", "ka bis", "kbis"],
    "urssaf": ["ursaf", "urssaf", "urs saf"],
    "auto entrepreneur": ["autoentrepreneur", "micro entrepreneur", "auto entreprise"],
    "micro entrepreneur": ["micro entreprise", "auto entrepreneur"],
    "avis de situation": ["avis situation", "avis de la situation", "avis de situations"],
    "guichet unique": ["guichet uni", "guichet unique", "guichets uniques"],
    "code": ["codes", "cote"],
    "numero": ["numeros", "numero"],
    "entreprise": ["entreprises", "entre prise"],
    "c est": ["ses", "cest", "c est"],
    "est ce que": ["es que", "est ce que", "ce que"],
}
FILLERS = ["euh", "ben", "alors", "oui", "bah", "en fait", "du coup", "voila", "bonjour"]
DROPPABLE = {"le", "la", "les", "de", "du", "des", "un", "une", "a", "ne", "n", "je", "j",
             "il", "l", "d", "que", "qu", "est", "et", "pour", "en", "mon", "ma", "mes"}


def _replace_phrase(words: list[str], phrase: list[str], repl: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    n = len(phrase)
    while i < len(words):
        if words[i:i + n] == phrase:
            out.extend(repl)
            i += n
        else:
            out.append(words[i])
            i += 1
    return out


def corrupt(text: str, rng: random.Random) -> str:
    """One noisy copy of a normalized phrasing."""
    words = text.split()
    for key, options in CONFUSIONS.items():
        phrase = key.split()
        if rng.random() < 0.6 and any(words[i:i + len(phrase)] == phrase
                                      for i in range(len(words))):
            words = _replace_phrase(words, phrase, rng.choice(options).split())
    if len(words) > 4:
        words = [w for w in words if not (w in DROPPABLE and rng.random() < 0.15)]
    if rng.random() < 0.25:
        words = rng.choice(FILLERS).split() + words
    if len(words) > 6 and rng.random() < 0.15:
        i = rng.randrange(len(words))
        words = words[:i] + words[i + 1:]
    return " ".join(words) or text


def noisy_copies(texts: list[str], labels: list[str], copies: int, seed: int = 0
                 ) -> list[tuple[int, str]]:
    """``copies`` noisy variants of each text, as (index of the original, variant); a
    variant equal to an original or to another variant of the same intent is left out."""
    rng = random.Random(seed)
    seen = set(zip(texts, labels))
    out: list[tuple[int, str]] = []
    for i, (t, lab) in enumerate(zip(texts, labels)):
        for _ in range(copies):
            v = corrupt(t, rng)
            if (v, lab) not in seen:
                seen.add((v, lab))
                out.append((i, v))
    return out
