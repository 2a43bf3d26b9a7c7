"""Short replies, read against the question the bot just asked.

A classifier trained on requests is least reliable on two-word answers, and these answers
only make sense next to the question: "oui j'en ai une autre" after "Avez-vous une autre
question ?" announces a question, "non pas ça, je voulais…" after an answer is a
correction, "je l'ai pas sous la main" after "dites-moi votre numéro Siren" declines. These
readings are rules over normalized words (lowercase, no accents), because the words are
few, unambiguous in their context, and must never depend on a retraining.
"""

from __future__ import annotations

from dataclasses import dataclass

from .text import normalize

YES, NO = "oui", "non"

# Heads of a reply, longest first when matched (each a tuple of normalized words).
_YES_HEADS = [h.split() for h in (
    "oui", "ouais", "ouai", "yes", "voila", "exactement", "exact", "absolument", "daccord",
    "d accord", "ok", "okay", "bien sur", "tout a fait", "c est ca", "c est bien ca",
    "c est exact", "c est correct", "c est bien", "affirmatif", "effectivement",
    "parfait", "si", "oui oui", "ben oui", "bah oui", "en effet", "volontiers", "allez y",
    "vas y", "c est juste", "tres bien", "correct", "ouaip")]
_NO_HEADS = [h.split() for h in (
    "non", "nan", "negatif", "pas du tout", "non non", "absolument pas", "ben non",
    "bah non", "pas vraiment", "non merci")]
FILLERS = {"euh", "ben", "bah", "alors", "heu", "hum", "bon", "eh", "ah", "oh", "madame",
           "monsieur", "mais", "enfin", "hein", "donc", "bien", "ecoutez", "ecoute", "dites"}

# "oui j'en ai une autre", "oui une dernière question", "j'aurais encore une question"
_QUESTION_WORDS = {"j", "en", "ai", "aurais", "aurai", "a", "une", "un", "autre", "autres",
                   "question", "questions", "petite", "derniere", "encore", "chose", "truc",
                   "aussi", "oui", "si", "vous", "permettez", "il", "y", "d", "deux", "moi",
                   "effectivement", "justement", "voudrais", "poser", "vouloir", "bien",
                   "svp", "plait", "s", "il", "je", "me", "reste", "plus", "toujours",
                   "precision", "demande", "demander", "souhaiterais"}
_ANNOUNCE_CORE = {"question", "questions", "autre", "chose", "truc", "precision", "demande"}

# Corrections of the bot's reading: "non pas ça", "c'est pas ça", "je me suis mal exprimé"
_CORRECTION_HEADS = [h.split() for h in (
    "pas ca", "c est pas ca", "ce n est pas ca", "ce n est pas du tout ca", "pas du tout ca",
    "vous m avez mal compris", "vous avez mal compris", "je me suis mal exprime",
    "je me suis mal exprimee", "c est pas ce que je demande", "ce n est pas ce que je demande",
    "c est pas la question", "ce n est pas la question", "pas ca du tout", "pas exactement",
    "pas tout a fait", "c est pas tout a fait ca")]

# Declining to give the SIREN: "je l'ai pas (sous la main)", "aucune idée", "je l'ai perdu"
_DECLINE_WORDS = {"pas", "aucun", "aucune", "jamais", "perdu", "perdue", "oublie", "oubliee",
                  "non", "nan"}


@dataclass(frozen=True)
class Reply:
    """A reply split into its head (yes, no or none) and what follows it."""

    head: str | None          # "oui" | "non" | None
    rest: str                 # normalized words after the head and fillers
    correction: bool = False  # "non pas ça, je voulais…": ``rest`` is the corrected request


def _strip(words: list[str]) -> list[str]:
    i = 0
    while i < len(words) and words[i] in FILLERS:
        i += 1
    return words[i:]


def _match(words: list[str], heads: list[list[str]]) -> int:
    """Length of the longest head at the start of ``words`` (0 when none)."""
    best = 0
    for h in heads:
        if len(h) > best and words[:len(h)] == h:
            best = len(h)
    return best


def split_reply(text: str) -> Reply:
    """'oui j'en ai une autre' -> Reply('oui', "j en ai une autre")."""
    words = _strip(normalize(text).split())
    head = None
    while True:                       # "oui oui c'est ça", "non non"
        n_yes, n_no = _match(words, _YES_HEADS), _match(words, _NO_HEADS)
        if not n_yes and not n_no:
            break
        kind = YES if n_yes > n_no else NO
        if head is not None and kind != head:
            break                     # "oui non…": the second word starts the rest
        head = kind
        words = _strip(words[max(n_yes, n_no):])
    n_corr = _match(words, _CORRECTION_HEADS)
    if n_corr and (head == NO or head is None):
        rest = _strip(words[n_corr:])
        return Reply(NO, " ".join(rest), correction=True)
    return Reply(head, " ".join(words))


def yes_no(text: str) -> str | None:
    """'oui' / 'non' for a reply that is only a yes (or only a no), else None."""
    r = split_reply(text)
    if r.head is None or r.correction:
        return None
    rest = [w for w in r.rest.split() if w not in FILLERS]
    if not rest or set(rest) <= {"merci", "beaucoup", "madame", "monsieur", "c", "est", "ca",
                                 "tout", "bien", "ok", "d", "accord", "je", "vous", "remercie",
                                 "voila", "pour", "moi", "rien", "ca", "va", "ira"}:
        return r.head
    return None


# After "Avez-vous une autre question ?": what closes the call ("c'est bon j'ai ma réponse
# merci", "ce sera tout", "parfait merci beaucoup bonne journée").
_CLOSING_PHRASES = sorted((h.split() for h in (
    "c est bon", "c est tout", "ca ira", "ca sera tout", "ce sera tout", "c est parfait",
    "j ai ma reponse", "j ai eu ma reponse", "j ai mes reponses", "c est clair",
    "c est note", "ca marche", "parfait", "super", "tres bien", "nickel", "impeccable",
    "c est gentil", "c est tres clair", "c est bien note", "je vous remercie",
    "merci", "merci beaucoup", "merci bien", "au revoir", "bonne journee", "bonne soiree",
    "bonne fin de journee", "a vous aussi", "vous aussi", "pour moi", "pour aujourd hui",
    "ca me suffit", "c est suffisant", "je n ai pas d autre question", "j ai pas d autre question",
    "pas d autre question", "rien d autre", "c est tout pour moi", "ok", "d accord", "daccord",
    "voila", "oui", "non", "non merci", "top", "genial", "cool", "ca va", "bon")),
    key=len, reverse=True)
_POLITE = {"madame", "monsieur", "encore", "tout", "infos", "information", "informations",
           "renseignement", "renseignements", "pour", "l", "info", "et", "les", "la", "le",
           "votre", "aide", "de", "ca", "c", "est"}


def closes(text: str) -> bool:
    """Only thanks, agreement and goodbyes: after an answer, the caller is done."""
    words = normalize(text).split()
    if not words or all(w in FILLERS for w in words):
        return False
    while words:
        n = _match(words, _CLOSING_PHRASES)
        if n:
            words = words[n:]
        elif words[0] in _POLITE or words[0] in FILLERS:
            words = words[1:]
        else:
            return False
    return True


def announces_question(rest: str) -> bool:
    """'j'en ai une autre', 'une dernière question': the caller has a question coming."""
    words = rest.split()
    return bool(words) and set(words) <= _QUESTION_WORDS and bool(set(words) & _ANNOUNCE_CORE)


def declines_siren(text: str) -> bool:
    """'je l'ai pas sous la main', 'je sais pas', 'aucune idée': no SIREN to give."""
    return bool(set(normalize(text).split()) & _DECLINE_WORDS)


def is_follow_up(text: str) -> bool:
    """A request that leans on the previous answer: 'et pour une association',
    'et si on me le refuse', 'mais pour la rouvrir'. Requests opened by a connector."""
    words = normalize(text).split()
    while words and words[0] in FILLERS - _CONNECTORS:
        words = words[1:]
    n = _match(words, _YES_HEADS)              # "d'accord et…", "ok et…"
    words = words[n:] if n else words
    while words and words[0] in FILLERS - _CONNECTORS:
        words = words[1:]
    return bool(words) and (words[0] in _CONNECTORS or words[:2] in _CONNECTOR_PAIRS)


_CONNECTORS = {"et", "mais", "sinon", "aussi", "puis", "alors", "donc"}
_CONNECTOR_PAIRS = (["dans", "ce"], ["du", "coup"], ["par", "contre"], ["en", "cas"],
                    ["et", "si"])
