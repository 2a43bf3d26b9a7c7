"""What the bot says about a company it looked up in the Sirene register, and what it tells
the advisor.

A caller who asks whether their company is active, or for its APE code, gets the general
answer and can then have their own number checked: this module turns the register's
:class:`~callbot.sirene.lookup.Lookup` into one or two short spoken sentences and into the
line of facts that goes with a transfer. Every sentence comes from ``kb/prompts.toml``
(``lookup_*``), so supervisors edit the wording where they edit every other sentence.

The rules of the register's public diffusion are applied here, in one place:

* a unit in partial diffusion: only that the number exists and is not public;
* an individual entrepreneur (a natural person): state, dates and APE, never a name or an
  address;
* no address is ever said: the state and the activity are what callers ask for.

Dates and codes are written for the ear of espeak-ng ``fr`` and Piper: "56.10A" is read
"cinquante-six point dix", so it is written "56 10 A" ("cinquante-six dix A"); dates are
"3 mars 2021" and "1er mars 2021" ("premier mars").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Mapping, Protocol

from .errors import ConfigError, KbError
from .events import Say

if TYPE_CHECKING:
    from .config import Config
    from .kb import KnowledgeBase
    from .sirene.lookup import Lookup

FOUND, NOT_FOUND, PARTIAL, INVALID = "found", "not_found", "partial", "invalid"
UNAVAILABLE = "unavailable"     # the register could not be read: nothing is known

# The sentences of kb/prompts.toml this module and the dialogue's look-up states speak.
LOOKUP_PROMPTS = (
    "lookup_offer", "lookup_ask", "lookup_declined", "lookup_skip",
    "lookup_active", "lookup_active_undated", "lookup_closed", "lookup_closed_undated",
    "lookup_registered",
    "lookup_company", "lookup_company_person", "lookup_company_unnamed",
    "lookup_ape", "lookup_ape_unlabeled", "lookup_partial", "lookup_not_found",
    "lookup_unavailable",
)

MONTHS = ("janvier", "février", "mars", "avril", "mai", "juin", "juillet", "août",
          "septembre", "octobre", "novembre", "décembre")
# Legal forms found in company names, spelled letter by letter: as words, espeak reads
# "SARL" in English and "SAS" as "sas".
LEGAL_FORMS = frozenset({"SA", "SAS", "SASU", "SARL", "EURL", "SNC", "SCI", "SCP", "SCM",
                         "SCS", "SCA", "SCOP", "SELARL", "SELAS", "SEL", "GIE", "GAEC",
                         "EARL", "SCEA", "EI", "EIRL", "SEM", "SPL", "SICA", "CUMA"})
_APE = re.compile(r"^(\d{2})\.?(\d{2})([A-Z])$")
_VOWELS = set("AEIOUYÀÂÄÉÈÊËÎÏÔÖÙÛÜ")


class CompanyRegister(Protocol):
    """What the dialogue needs of a register: the Sirene one
    (:class:`callbot.sirene.lookup.Register`), or a scripted one in dialogue-rule tests."""

    available: bool

    def lookup(self, number: str) -> "Lookup": ...


@dataclass(frozen=True)
class CompanyAnswer:
    """One look-up, ready for the call: what the caller hears and what the advisor reads."""

    result: str                 # found | not_found | partial | invalid | unavailable
    says: tuple[Say, ...]       # one or two sentences (none for an invalid number)
    advisor: str                # the facts for a transfer's summary, "" when none


def result_of(lookup: "Lookup") -> str:
    """The kind of answer a look-up allows (what the transcript records)."""
    if not lookup.valid:
        return INVALID
    if not lookup.found:
        return NOT_FOUND
    if lookup.diffusible is False:
        return PARTIAL
    return FOUND


def company_answer(lookup: "Lookup", prompts: Mapping[str, str],
                   reachable: bool = True) -> CompanyAnswer:
    """The spoken sentences and the advisor's facts for ``lookup``. ``reachable`` False:
    the register could not be read (its database is down), so "not found" means nothing
    and the caller is told the register cannot be checked now."""
    result = result_of(lookup)
    if result == INVALID:
        return CompanyAnswer(result, (), "")
    if result == NOT_FOUND and not reachable:
        return CompanyAnswer(UNAVAILABLE, (_prompt(prompts, "lookup_unavailable"),),
                             "Sirene : répertoire indisponible pendant l'appel")
    if result == NOT_FOUND:
        return CompanyAnswer(result, (_prompt(prompts, "lookup_not_found"),),
                             "Sirene : numéro absent du répertoire")
    if result == PARTIAL:
        return CompanyAnswer(result, (_prompt(prompts, "lookup_partial"),),
                             "Sirene : unité en diffusion partielle")
    return CompanyAnswer(result, _facts(lookup, prompts), _advisor_line(lookup))


def _prompt(prompts: Mapping[str, str], name: str) -> Say:
    """A fixed sentence: pre-rendered by `callbot train` like every prompt."""
    return Say(prompts[name], f"prompt:{name}")


def _is_person(lookup: "Lookup") -> bool:
    return bool(lookup.personne_physique)


def _facts(lookup: "Lookup", prompts: Mapping[str, str]) -> tuple[Say, ...]:
    """"L'entreprise … est active depuis le 3 mars 2021." and "Son code A P E est …"."""
    if _is_person(lookup):
        company = prompts["lookup_company_person"]
    elif lookup.denomination:
        company = prompts["lookup_company"].format(name=spoken_name(lookup.denomination))
    else:
        company = prompts["lookup_company_unnamed"]
    closed = lookup.etat_administratif == "C"
    when = spoken_date(lookup.date_etat) or (None if closed else
                                             spoken_date(lookup.date_creation))
    if lookup.etat_administratif not in ("A", "C"):    # a state the register did not give
        name = "lookup_registered"
    else:
        name = ("lookup_closed" if closed else "lookup_active") + ("" if when else "_undated")
    state = prompts[name].format(company=company, date=when or "")
    says = [Say(state[0].upper() + state[1:], "lookup:state")]
    code = spoken_ape(lookup.ape)
    if code:
        label = spoken_label(lookup.ape_label) if lookup.ape_label else None
        text = (prompts["lookup_ape"].format(code=code, label=label) if label
                else prompts["lookup_ape_unlabeled"].format(code=code))
        says.append(Say(text, "lookup:ape"))
    return tuple(says)


def _advisor_line(lookup: "Lookup") -> str:
    """Facts an advisor reads before picking up: written, not spoken (dates as written,
    the code as printed), with the head office's commune of a legal unit (the caller never
    hears a place); never the name nor the place of a natural person."""
    parts = ["entrepreneur individuel" if _is_person(lookup)
             else lookup.denomination or "dénomination non renseignée"]
    state = {"A": "active", "C": "cessée"}.get(lookup.etat_administratif or "", "état inconnu")
    parts.append(f"{state} depuis le {_written(lookup.date_etat)}" if lookup.date_etat
                 else state)
    if lookup.ape:
        parts.append(f"APE {lookup.ape}" + (f" ({lookup.ape_label})" if lookup.ape_label
                                            else ""))
    if lookup.ape_naf25:
        parts.append(f"NAF 2025 {lookup.ape_naf25}")
    if lookup.date_creation:
        parts.append(f"créée le {_written(lookup.date_creation)}")
    siege = lookup.siege
    if siege and not _is_person(lookup) and (siege.code_postal or siege.commune):
        parts.append("siège " + " ".join(p for p in (siege.code_postal, siege.commune) if p))
    return "Sirene : " + ", ".join(parts)


# --- written for the ear ---------------------------------------------------------------------
def _parse_date(iso: str | None) -> date | None:
    try:
        return date.fromisoformat(iso[:10]) if iso else None
    except ValueError:
        return None


def _written(iso: str) -> str:
    d = _parse_date(iso)
    return d.strftime("%d/%m/%Y") if d else iso


def spoken_date(iso: str | None) -> str | None:
    """"2021-03-03" -> "3 mars 2021", "2020-01-01" -> "1er janvier 2020"; None when absent
    or not a date (the sentence is then said without it)."""
    d = _parse_date(iso)
    if d is None:
        return None
    day = "1er" if d.day == 1 else str(d.day)
    return f"{day} {MONTHS[d.month - 1]} {d.year}"


def spoken_ape(code: str | None) -> str | None:
    """"56.10A" -> "56 10 A" (said "cinquante-six dix A"; with the dot, "point dix"). A code
    of another shape is spelled character by character."""
    if not code:
        return None
    c = code.strip().upper()
    m = _APE.match(c)
    if m:
        return f"{m.group(1)} {m.group(2)} {m.group(3)}"
    return " ".join(ch for ch in c if ch.isalnum()) or None


def spoken_label(label: str) -> str:
    """An APE label after a colon: lower-case first letter, "n.c.a." said in words."""
    text = re.sub(r"\bn\.\s?c\.\s?a\.?", "non classées ailleurs", label.strip())
    if len(text) > 1 and not text[:2].isupper():
        text = text[0].lower() + text[1:]
    return text.rstrip(". ")


def spoken_name(denomination: str) -> str:
    """A company name as the register writes it (capitals) for the voice: words in
    capitals become capitalised words, legal forms and vowel-less acronyms are spelled
    ("BOULANGERIE DUPONT SARL" -> "Boulangerie Dupont S A R L")."""
    words = []
    for word in denomination.split():
        bare = word.strip(".,;:()")
        if bare.isupper() and (bare in LEGAL_FORMS or (len(bare) <= 4 and bare.isalpha()
                                                        and not set(bare) & _VOWELS)):
            words.append(word.replace(bare, " ".join(bare)))
        elif word.isupper():
            words.append(word.capitalize())
        else:
            words.append(word)
    return " ".join(words)


def open_register(config: "Config", kb: "KnowledgeBase") -> CompanyRegister:
    """The Sirene register of the configuration ([sirene]), opened once per process.

    A register not imported yet (`callbot sirene import`) is returned all the same: each
    call asks it whether it is ``available``, so the calls after an import use it without
    a restart, and until then the bot answers as it always did. With a register, the
    look-up must be able to speak: the intents of ``dialogue.lookup_intents`` must exist
    and the ``lookup_*`` prompts be in the KB.
    """
    from .sirene.lookup import Register

    register = Register.open(config)
    unknown = [i for i in config.dialogue.lookup_intents if i not in kb.intents]
    if unknown:
        raise ConfigError(f"dialogue.lookup_intents names {', '.join(unknown)}, not an intent "
                          f"of {kb.root}: use ids of kb/taxonomy.json")
    missing = [p for p in LOOKUP_PROMPTS if p not in kb.prompts]
    if missing and register.available:
        raise KbError(f"{kb.rel(kb.root / 'prompts.toml')}: the Sirene look-up needs the "
                      f"prompt{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    return register
