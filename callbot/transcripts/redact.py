"""Personal data out of transcripts: names, numbers, e-mail and postal addresses.

This is the one redactor: exports, the console's read-only views and the knowledge-base
edits all go through :func:`redact_text` (rows: :func:`redact_call`), so what counts as
personal data is decided in one place. (The logs keep no caller text at all.)

It is written for what a caller says on the phone as the recognizer writes it, usually in
lowercase and without punctuation:

* names after "je m'appelle", "mon nom est", "monsieur", "madame", "mademoiselle" (the one or
  two words that follow, unless they are ordinary words: "bonjour madame je voudrais" keeps
  everything);
* numbers, as digits or words, dictated digit by digit, in groups, or with words between
  ("zéro six, douze, trente-quatre", "732 829 ensuite 320", "double six"): a run that spells
  five digits or more goes, whatever it is (SIREN 9, SIRET 14, phone 10, postal code 5, IBAN);
  prices, dates and years ("trois cent cinquante euros", "deux mille vingt-quatre") stay. In
  a SIREN-capture turn every number goes, because callers spread the nine digits over
  several utterances;
  The keys typed during a SIREN capture, and the number of a register look-up, go too;
* e-mail addresses, written or spoken ("jean point dupont arobase orange point fr");
* postal addresses: a street with its house number ("12 bis rue de la Paix"), or after
  "j'habite", "mon adresse"..., and postal codes with their town ("75002 Paris").

What the caller asked for stays readable ("mon numéro siret", "le code APE"): the review of
utterances and the statistics need it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..siren import spoken_digits
from ..text import strip_accents

NUMBER = "[numéro]"
EMAIL = "[e-mail]"
NAME = "[nom]"
ADDRESS = "[adresse]"
PLACEHOLDERS = (NUMBER, EMAIL, NAME, ADDRESS)
MIN_DIGITS = 5            # a postal code; SIREN, SIRET, phone numbers and IBANs are longer

# --- numbers -------------------------------------------------------------------------------
_NUMBER_WORDS = frozenset(
    "zero un une deux trois quatre cinq six sept huit neuf dix onze douze treize quatorze "
    "quinze seize vingt vingts trente quarante cinquante soixante septante huitante octante "
    "nonante cent cents".split())
_REPEAT = {"double": 1, "triple": 2}      # "double six" = 66: digits said once more, twice more
_FILLERS = frozenset({"euh", "heu", "hum", "ben", "bah", "hein", "bon"})
# Words callers put between the groups of one number: "732 829 ensuite 320", "06 point 12".
_GLUE = frozenset(
    "ensuite puis apres et virgule tiret point slash espace alors donc voila oui pardon "
    "attendez attends encore enfin non je repete".split())
_MAX_GLUE = 3             # more words than this between two groups: two separate numbers
_TOKEN = re.compile(r"\+?\d+|[^\W\d_]+")
_IBAN = re.compile(r"\b[A-Z]{2}\s?\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")

# --- e-mail addresses ----------------------------------------------------------------------
_WRITTEN_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_AT = r"(?:arobase|arrobase|arobas|arrobas|@)"
_SPOKEN_EMAIL = re.compile(
    r"\b[\w.+-]+(?:\s+(?:point|tiret|underscore|tiret\s+bas)\s+[\w.+-]+)*\s*" + _AT
    + r"\s*[\w-]+(?:(?:\s+point\s+|\s*\.\s*)[\w-]+)+", re.IGNORECASE)

# --- names ---------------------------------------------------------------------------------
# "je m'appelle" is followed by a name; "mon nom est" and "monsieur"/"madame" often by an
# ordinary word ("mon nom est mal écrit", "au revoir monsieur bonne journée"): for those the
# words are checked harder (see _could_be_name).
_NAME_TRIGGER = re.compile(
    r"\b(?:(?P<sure>je\s+m['’ ]?\s*appelle)|mon\s+nom(?:\s+de\s+famille)?\s+"
    r"(?:est|c['’ ]?\s*est)|(?:c['’ ]?\s*est\s+)?(?:monsieur|madame|mademoiselle))\s+",
    re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_](?:[\w-]|['’][^\W\d_])*")
# Words that are not a name: after "bonjour madame", "merci monsieur", "madame la
# conseillère", "mon nom est mal orthographié", and the request that often follows a name.
_NOT_NAME = frozenset(
    "le la les l un une des du de d au aux a à et ou mais donc or ni car que qui quoi quand "
    "comment pourquoi où je j tu il elle on nous vous ils elles me m te t se s moi toi "
    "lui leur y en ce c ca ça cet cette ces mon ma mes ton ta tes son sa ses notre votre "
    "est suis es sommes êtes sont ai as avons avez ont voudrais voudrait voulais voulait "
    "veux veut souhaite souhaiterais souhaiterait aimerais aimerait appelle appelais "
    "appelait cherche demande peux peut pouvez pourriez pourrais dois doit "
    "bonjour bonsoir merci oui non pardon excusez svp revoir bien bon bonne bonnes journée "
    "soirée alors ben euh heu hum voilà voila ok très tres ici là la-bas quelqu'un "
    "monsieur madame mademoiselle messieurs mesdames "
    "conseiller conseillère conseillere directeur directrice maire président présidente "
    "numéro numero siren siret code ape naf avis situation insee entreprise société societe "
    "pour par sur sous dans avec sans chez vers pas ne n plus mal toujours encore déjà "
    "jamais aussi même partout écrit écrite écrits faux fausse incorrect incorrecte "
    "inconnu inconnue visible public publique différent différente".split())
_PARTICIPLE = re.compile(r"(?:é|ée|és|ées|ment)$")


def _could_be_name(word: str, sure: bool) -> bool:
    """Whether ``word`` may be (part of) a name. A lowercase word with an apostrophe
    ("l'insee", "m'a", "c'est") is not; after "mon nom est" or "madame" neither is a
    lowercase participle or adverb ("utilisé", "vraiment")."""
    lower = word.lower().replace("’", "'")
    if lower in _NOT_NAME:
        return False
    if word[0].isupper():
        return True
    if "'" in lower:
        return False
    return sure or not _PARTICIPLE.search(lower)


# A name spelled out letter by letter: "L-A-M-B-E-R-T", "d u p o n t" (four letters or more:
# "il y a" is not a spelling), unless it spells an acronym ("u r s s a f", "a p e a changé").
_SPELLED = re.compile(r"(?<!\w)(?:[A-Za-z][ .-]){3,}[A-Za-z](?![\w'’])")
_ACRONYMS = ("ape", "naf", "urssaf", "cpam", "insee", "siren", "siret", "sirene", "rcs",
             "kbis", "eurl", "sarl", "sas", "sasu", "tva", "cfe", "inpi", "caf", "sci", "eirl",
             "rib", "iban", "bic", "pdf", "sms", "cma", "cci", "bodacc", "ursaf", "msa", "pme",
             "tpe", "rsa", "cesu", "dgfip", "sie", "ae", "ei")


def _spelled(m: re.Match[str]) -> str:
    letters = re.sub(r"[ .-]", "", m.group()).lower()
    if any(letters.startswith(a) and len(letters) - len(a) <= 1 for a in _ACRONYMS):
        return m.group()
    return NAME


# --- postal addresses ----------------------------------------------------------------------
_STREETS = (r"rue|avenue|av|boulevard|bd|chemin|all[ée]e|impasse|quai|faubourg|lotissement|"
            r"lieu[- ]dit|square|sentier|hameau|place|route|voie|r[ée]sidence|cit[ée]|"
            r"passage|villa|esplanade|promenade|parvis|rond[- ]point")
_HOUSE = (r"(?:\d{1,4}|(?:(?:un|deux|trois|quatre|cinq|six|sept|huit|neuf|dix|onze|douze|"
          r"treize|quatorze|quinze|seize|vingt|trente|quarante|cinquante|soixante|cent|et)"
          r"(?:[\s-]+|\b)){1,4})")
_STREET_NAME = r"(?:[\s,]+(?!(?:{stop})\b)[^\W\d_][\w'’-]*){{1,5}}"
_ADDRESS_STOP = (r"et|je|j|pour|mais|c|ça|ca|qui|que|parce|depuis|car|donc|alors|merci|"
                 r"svp|mon|ma|mes|voilà|voila|euh|à|a|au|dans|en|code|numéro|numero|siren|"
                 r"siret|oui|non|est|il|elle|on|nous|vous")
_NAME_PART = _STREET_NAME.format(stop=_ADDRESS_STOP)
_NUMBERED_STREET = re.compile(
    rf"\b{_HOUSE}(?:[\s,]+(?:bis|ter|quater|b))?[\s,]+(?:{_STREETS})\b{_NAME_PART}",
    re.IGNORECASE)
_LIVES = re.compile(
    r"\b(?P<lead>(?:j['’ ]?\s*habite|nous\s+habitons|habite|domicili[ée]e?s?|demeurant|"
    r"adresse(?:\s+(?:est|c['’ ]?\s*est|:))?|si[èe]ge(?:\s+social)?"
    r"(?:\s+est)?|situ[ée]e?s?|install[ée]e?s?)(?:\s+(?:au|à|a|dans|en|la|le|:))*\s+)"
    rf"(?P<street>(?:{_STREETS})\b{_NAME_PART})", re.IGNORECASE)
# A postal code on its own (not the end of a longer number), with its town when it follows.
_TOWN = (rf"\s+(?!(?:{_ADDRESS_STOP})\b)[A-ZÉÈÀÂÎÔ][\w'’-]*"
         r"(?:[\s-]+(?:sur|sous|en|le|la|les|de|du|des|lès|[A-ZÉÈÀÂÎÔ][\w'’-]*)){0,3}")
_POSTAL_CODE = re.compile(
    rf"(?<!\d)(?<!\d\s)\b(?:0[1-9]|[1-8]\d|9[0-8]|2[abAB])\s?\d{{3}}\b(?!\s?\d)(?:{_TOWN})?")


def _kind(token: str) -> str:
    if token.lstrip("+").isdigit():
        return "num"
    word = strip_accents(token.lower())
    if word in _NUMBER_WORDS or word in _REPEAT:
        return "num"
    if word in _FILLERS or word in _GLUE:
        return "glue"
    return "word"


def _digit_count(tokens: list[re.Match[str]], text: str) -> int:
    """Digits spelled by a run of tokens, "double"/"triple" counted as the repeats they say."""
    start, end = tokens[0].start(), tokens[-1].end()
    extra = 0
    for k, tok in enumerate(tokens[:-1]):
        times = _REPEAT.get(strip_accents(tok.group().lower()))
        if times:
            extra += times * max(1, len(spoken_digits(tokens[k + 1].group())))
    return len(spoken_digits(text[start:end])) + extra


def _redact_numbers(text: str, min_digits: int) -> str:
    tokens = list(_TOKEN.finditer(text))
    spans: list[tuple[int, int]] = []
    i = 0
    while i < len(tokens):
        if _kind(tokens[i].group()) != "num":
            i += 1
            continue
        last, glue, j = i, 0, i + 1
        while j < len(tokens) and glue <= _MAX_GLUE:
            kind = _kind(tokens[j].group())
            if kind == "num":
                last, glue = j, 0
            elif kind == "glue":
                glue += 1
            else:
                break
            j += 1
        run = tokens[i:last + 1]
        if _digit_count(run, text) >= min_digits:
            spans.append((run[0].start(), run[-1].end()))
        i = last + 1
    for start, end in reversed(spans):
        text = text[:start] + NUMBER + text[end:]
    return text


def _redact_names(text: str) -> str:
    out: list[str] = []
    pos = 0
    for m in _NAME_TRIGGER.finditer(text):
        if m.start() < pos:
            continue
        words: list[re.Match[str]] = []
        at = m.end()
        while len(words) < 2:
            w = _WORD.match(text, at)
            if w is None or not _could_be_name(w.group(), bool(m.group("sure"))):
                break
            words.append(w)
            gap = re.match(r"[ \t]+", text[w.end():])
            if gap is None:
                break
            at = w.end() + gap.end()
        if words:
            out.append(text[pos:words[0].start()] + NAME)
            pos = words[-1].end()
    out.append(text[pos:])
    return _SPELLED.sub(_spelled, "".join(out))


def _redact_addresses(text: str) -> str:
    text = _NUMBERED_STREET.sub(ADDRESS, text)
    text = _LIVES.sub(lambda m: m.group("lead") + ADDRESS, text)
    return _POSTAL_CODE.sub(ADDRESS, text)


def redact_text(text: str | None, all_numbers: bool = False,
                placeholders: bool = True) -> str | None:
    """``text`` without names, e-mail and postal addresses and numbers of five digits or
    more (every number if ``all_numbers``), each replaced by its placeholder, or by nothing
    when not ``placeholders`` (a training phrasing must not teach the classifier the word
    "numéro" where a caller gave a number)."""
    if not text:
        return text
    text = _WRITTEN_EMAIL.sub(EMAIL, text)
    text = _SPOKEN_EMAIL.sub(EMAIL, text)
    text = _IBAN.sub(NUMBER, text)
    text = _redact_addresses(text)
    text = _redact_names(text)
    text = _redact_numbers(text, 1 if all_numbers else MIN_DIGITS)
    if not placeholders:
        for p in PLACEHOLDERS:
            text = text.replace(p, " ")
        text = " ".join(text.split())
    return text


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
    capture = turn.get("speaker") != "bot" and (turn.get("decision") == "capture"
                                                or turn.get("state") == "siren_capture")
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
