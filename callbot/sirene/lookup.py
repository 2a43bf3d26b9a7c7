"""What the bot may say about a SIREN or SIRET, read from the local register copy.

The API the dialogue uses::

    register = Register.open(config)      # never raises for a missing or empty register
    answer = register.lookup("732 829 320")
    answer.found, answer.etat_administratif, answer.ape_label, answer.to_json()

The register's privacy rules are enforced here, inside :meth:`Register.lookup`, so no
caller of the API can leak what the register does not publish:

* a unit outside the public diffusion (``statutDiffusionUniteLegale`` other than "O", in
  practice "P", asked for by the person) gives ``found=True, diffusible=False`` and
  nothing else;
* an individual entrepreneur (``categorieJuridiqueUniteLegale`` 1000) never gets a name
  (their name columns are not even imported), nor any place: the commune of an
  individual's head office is usually their home, so ``siege`` stays None;
* a purged unit (``unitePurgeeUniteLegale``) is "not found", as in the register.

Invalid numbers (length, Luhn key) are an answer, ``valid=False``, never an exception: a
caller mistyping a digit is the common case.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Any

from ..config import Config
from ..siren import luhn_ok
from .labels import NAF_2025, ape_label
from .schema import PERSONNE_PHYSIQUE
from .store import Reader, location, open_reader

log = logging.getLogger("callbot.sirene")

# La Poste's establishments share SIREN 356000000; their SIRETs follow their own rule (sum
# of the digits a multiple of 5) instead of the Luhn key.
LA_POSTE = "356000000"


@dataclass(frozen=True)
class Siege:
    """The head office's place: postal code and commune, never a street address."""

    code_postal: str | None
    commune: str | None


@dataclass(frozen=True)
class Lookup:
    """What the bot may say about one number; ``to_json`` is the answer's wire form."""

    siren: str
    found: bool
    valid: bool                      # 9 digits (or 14 for a SIRET) and Luhn key right
    diffusible: bool | None = None   # statutDiffusionUniteLegale == "O"
    etat_administratif: str | None = None   # "A" active | "C" closed (cessée)
    date_etat: str | None = None     # ISO date the current state began (dateDebut)
    date_creation: str | None = None
    ape: str | None = None           # "56.10A"
    ape_label: str | None = None     # "Restauration traditionnelle"
    # The same activity in NAF 2025, which the files already carry beside the APE code
    # (activitePrincipaleNAF25UniteLegale) before it becomes the APE in January 2027.
    ape_naf25: str | None = None     # "56.11Y"
    ape_naf25_label: str | None = None
    categorie_juridique: str | None = None
    personne_physique: bool | None = None   # individual entrepreneur (category 1000)
    denomination: str | None = None  # never for a natural person nor when not diffusible
    siege: Siege | None = None
    siret: str | None = None         # the establishment asked for, when a SIRET was given
    etablissement_etat: str | None = None   # its state: "A" active | "F" closed (fermé)

    def to_json(self) -> dict[str, Any]:
        """The answer's keys, the same for every lookup (None where nothing may be said)."""
        return {
            "siren": self.siren,
            "valid": self.valid,
            "found": self.found,
            "diffusible": self.diffusible,
            "etat_administratif": self.etat_administratif,
            "date_etat": self.date_etat,
            "date_creation": self.date_creation,
            "ape": self.ape,
            "ape_label": self.ape_label,
            "ape_naf25": self.ape_naf25,
            "ape_naf25_label": self.ape_naf25_label,
            "categorie_juridique": self.categorie_juridique,
            "personne_physique": self.personne_physique,
            "siege": {"code_postal": self.siege.code_postal if self.siege else None,
                      "commune": self.siege.commune if self.siege else None},
        }


def digits_of(number: str) -> str:
    """What a caller typed or said, without the blanks, dots and dashes people put in."""
    return re.sub(r"[\s.\-]", "", number or "")


def siret_ok(siret: str) -> bool:
    """A SIRET's key: Luhn on its 14 digits (its SIREN's own key checked apart), except La
    Poste's establishments whose digits add up to a multiple of 5."""
    if siret[:9] == LA_POSTE:
        return sum(int(d) for d in siret) % 5 == 0
    return luhn_ok(siret)


class Register:
    """The local copy of the Sirene register, opened once per process and shared by calls.

    ``available`` is False while no register has been imported (or its database cannot be
    reached): lookups then answer ``found=False``, never raise, and the dialogue can say it
    cannot check rather than "unknown number".
    """

    def __init__(self, reader: Reader, label: str):
        self._reader = reader
        self.label = label

    @classmethod
    def open(cls, config: Config) -> "Register":
        where = location(config)
        return cls(open_reader(where), where.label)

    @property
    def available(self) -> bool:
        return self.info() is not None

    def info(self) -> dict[str, str] | None:
        """The imported copy's metadata (date, files, row counts), None when there is none."""
        try:
            return self._reader.info()
        except Exception as exc:   # a database outage must not end a call
            log.error("sirene register %s unreadable: %s", self.label, exc)
            return None

    def close(self) -> None:
        self._reader.close()

    def lookup(self, number: str) -> Lookup:
        """The answer for a SIREN (9 digits) or a SIRET (14: its SIREN, and that
        establishment must exist); spaces allowed; never raises for what a caller gives."""
        digits = digits_of(number if isinstance(number, str) else "")
        if not digits.isdigit() or len(digits) not in (9, 14):
            return Lookup(siren=digits[:9], found=False, valid=False)
        siren = digits[:9]
        siret = digits if len(digits) == 14 else None
        if not luhn_ok(siren) or (siret is not None and not siret_ok(siret)):
            return Lookup(siren=siren, found=False, valid=False, siret=siret)
        try:
            return self._lookup(siren, siret)
        except Exception as exc:   # a database outage must not end a call
            log.error("sirene lookup of %s in %s failed: %s", siren, self.label, exc)
            return Lookup(siren=siren, found=False, valid=True, siret=siret)

    def _lookup(self, siren: str, siret: str | None) -> Lookup:
        not_found = Lookup(siren=siren, found=False, valid=True, siret=siret)
        row = self._reader.unit(int(siren))
        if row is None:
            return not_found
        (_, diffusible, etat, date_etat, date_creation, ape, nomenclature, naf25, categorie,
         denomination, nic_siege) = row
        etab = self._reader.etab(int(siret)) if siret else None
        if siret and etab is None:
            return not_found        # that establishment does not exist (or was purged)
        if not diffusible:
            return Lookup(siren=siren, found=True, valid=True, diffusible=False, siret=siret)
        personne_physique = categorie == PERSONNE_PHYSIQUE
        answer = Lookup(
            siren=siren, found=True, valid=True, diffusible=True,
            etat_administratif=etat, date_etat=date_etat, date_creation=date_creation,
            ape=ape, ape_label=ape_label(ape, nomenclature),
            ape_naf25=naf25, ape_naf25_label=ape_label(naf25, NAF_2025),
            categorie_juridique=categorie, personne_physique=personne_physique,
            denomination=None if personne_physique else denomination,
            siret=siret, etablissement_etat=etab[3] if etab and etab[1] else None)
        if personne_physique or not nic_siege:
            return answer
        head = self._reader.etab(int(siren + nic_siege))
        if head is None or not head[1]:          # head office unknown, or not diffusible
            return answer
        return replace(answer, siege=Siege(code_postal=head[4], commune=head[5]))
