"""Files in the exact format of the Sirene stock files, for tests and benchmarks.

Real stock files are several gigabytes and hold personal data; these are made here, with
every official column in the official order (``schema``), and deterministic for a seed.
:func:`write_stock` writes given records (the tests' hand-made cases); :func:`generate`
draws a whole register with value distributions close to the real one:

* about 55 % of the legal units active, the rest closed (cessée) after their creation;
* about 60 % individual entrepreneurs (category 1000), whose name columns are filled,
  as in the real files, so that a test can check they never come out;
* about 3 % outside the public diffusion ("P"), with "[ND]" in their name columns, as
  INSEE writes it; about 1 % of all units purged (closed ones);
* APE codes drawn from the real NAF rév. 2 list (a few frequent ones more often);
* valid SIREN and SIRET keys (Luhn); one to five establishments per unit, the first one
  the head office.
"""

from __future__ import annotations

import csv
import io
import random
import zipfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TextIO

from ..siren import luhn_ok
from .labels import NAF_2025, codes
from .schema import FILE_NAMES, OFFICIAL, Kind


def luhn_key(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    for d in "0123456789":
        if luhn_ok(partial + d):
            return d
    raise AssertionError("unreachable: one digit always completes a Luhn number")


@contextmanager
def _writer(path: Path, kind: Kind) -> Iterator[csv.writer]:
    """A csv writer on ``path``: a zip holding one CSV when the name ends in .zip."""
    if path.suffix == ".zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=1) as zf:
            with zf.open(f"{FILE_NAMES[kind]}_utf8.csv", "w", force_zip64=True) as raw:
                text: TextIO = io.TextIOWrapper(raw, encoding="utf-8", newline="")
                w = csv.writer(text, lineterminator="\n")
                w.writerow(OFFICIAL[kind])
                yield w
                text.flush()
                text.detach()
    else:
        with open(path, "w", encoding="utf-8", newline="") as text:
            w = csv.writer(text, lineterminator="\n")
            w.writerow(OFFICIAL[kind])
            yield w


def write_stock(path: Path | str, kind: Kind, records: Iterable[Mapping[str, str]]) -> Path:
    """A stock file of ``kind`` with the official header and these records (columns not
    given are empty, as in the real files)."""
    path = Path(path)
    columns = OFFICIAL[kind]
    with _writer(path, kind) as w:
        for rec in records:
            unknown = set(rec) - set(columns)
            if unknown:
                raise ValueError(f"not a {FILE_NAMES[kind]} column: {', '.join(unknown)}")
            w.writerow([rec.get(c, "") for c in columns])
    return path


CATEGORIES = (("1000", 60), ("5710", 12), ("5499", 9), ("6540", 6), ("5498", 5),
              ("9220", 5), ("5599", 1), ("7210", 1), ("5202", 1))
FREQUENT_APE = ("68.20B", "56.10A", "47.91B", "70.22Z", "43.99C", "86.90D", "96.02A",
                "62.01Z", "49.32Z", "85.59A", "90.01Z", "74.90B", "68.20A", "81.21Z")
PLACES = (("75011", "PARIS 11"), ("69003", "LYON 3E ARRONDISSEMENT"), ("13008", "MARSEILLE 8"),
          ("31000", "TOULOUSE"), ("33000", "BORDEAUX"), ("59000", "LILLE"),
          ("44000", "NANTES"), ("67000", "STRASBOURG"), ("35000", "RENNES"),
          ("06000", "NICE"), ("92110", "CLICHY"), ("97110", "POINTE-A-PITRE"),
          ("21000", "DIJON"), ("29200", "BREST"), ("63000", "CLERMONT-FERRAND"))
SURNAMES = ("MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT",
            "DURAND", "LEROY", "MOREAU", "SIMON", "LAURENT", "LEFEBVRE", "MICHEL")
FIRST_NAMES = ("JEAN", "MARIE", "PIERRE", "NATHALIE", "ISABELLE", "PHILIPPE", "SYLVIE",
               "NICOLAS", "CATHERINE", "LAURENT", "SOPHIE", "CHRISTOPHE")
WORDS = ("ALPHA", "ATELIER", "CONSEIL", "BATIMENT", "SERVICES", "TRANSPORTS", "BOULANGERIE",
         "IMMOBILIER", "INFORMATIQUE", "JARDINS", "NORD", "SUD", "OUEST", "EST", "HOLDING")


@dataclass(frozen=True)
class Generated:
    unite_legale: Path
    etablissement: Path
    units: int
    establishments: int


def _date(rng: random.Random, y0: int, y1: int) -> str:
    return f"{rng.randint(y0, y1)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


@lru_cache(maxsize=1)
def _naf25_by_division() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for c in codes(NAF_2025):
        out.setdefault(c[:2], []).append(c)
    return out


def _naf25(ape: str, siren8: str) -> str:
    """A NAF 2025 code of the same division as ``ape`` (the files carry both since 2025),
    chosen from the number so the seeded draws of the other columns stay as they were; not
    INSEE's correspondence table, which the answers never need."""
    same = _naf25_by_division().get(ape[:2])
    return same[int(siren8) % len(same)] if same else ""


def generate(folder: Path | str, units: int, seed: int = 0, zipped: bool = True) -> Generated:
    """A StockUniteLegale and a StockEtablissement of ``units`` legal units in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".zip" if zipped else ".csv"
    ul_path = folder / f"StockUniteLegale_utf8{ext}"
    et_path = folder / f"StockEtablissement_utf8{ext}"
    rng = random.Random(seed)
    all_ape = codes()
    cats = [c for c, w in CATEGORIES for _ in range(w)]
    ul_cols, et_cols = OFFICIAL["unite_legale"], OFFICIAL["etablissement"]
    ul_ix = {c: i for i, c in enumerate(ul_cols)}
    et_ix = {c: i for i, c in enumerate(et_cols)}
    n_etab = 0
    base = 5_000_000
    with _writer(ul_path, "unite_legale") as wu, _writer(et_path, "etablissement") as we:
        for _ in range(units):
            base += rng.randint(1, 40)
            if base == 35_600_000:           # La Poste's SIREN follows its own rule
                base += 1
            siren8 = f"{base:08d}"
            siren = siren8 + luhn_key(siren8)
            cat = rng.choice(cats)
            pp = cat == "1000"
            diffusion = "P" if rng.random() < 0.03 else "O"
            active = rng.random() < 0.55
            created = _date(rng, 1960, 2025)
            debut = created if active and rng.random() < 0.7 else _date(rng, int(created[:4]),
                                                                         2026)
            purged = not active and rng.random() < 0.022
            ape = rng.choice(FREQUENT_APE) if rng.random() < 0.5 else rng.choice(all_ape)
            n_sites = 1 if rng.random() < 0.7 else (2 if rng.random() < 0.66 else
                                                     rng.randint(3, 5))
            nics = []
            for k in range(1, n_sites + 1):
                nic4 = f"{k * 7 + rng.randint(0, 6):04d}"
                nics.append(nic4 + luhn_key(siren + nic4))
            row = [""] * len(ul_cols)
            row[ul_ix["siren"]] = siren
            row[ul_ix["statutDiffusionUniteLegale"]] = diffusion
            row[ul_ix["unitePurgeeUniteLegale"]] = "true" if purged else ""
            row[ul_ix["dateCreationUniteLegale"]] = created
            row[ul_ix["dateDernierTraitementUniteLegale"]] = "2026-10-31T21:12:04"
            row[ul_ix["nombrePeriodesUniteLegale"]] = str(rng.randint(1, 6))
            row[ul_ix["dateDebut"]] = debut
            row[ul_ix["etatAdministratifUniteLegale"]] = "A" if active else "C"
            row[ul_ix["categorieJuridiqueUniteLegale"]] = cat
            row[ul_ix["activitePrincipaleUniteLegale"]] = ape
            row[ul_ix["nomenclatureActivitePrincipaleUniteLegale"]] = "NAFRev2"
            row[ul_ix["activitePrincipaleNAF25UniteLegale"]] = _naf25(ape, siren8)
            row[ul_ix["nicSiegeUniteLegale"]] = nics[0]
            row[ul_ix["caractereEmployeurUniteLegale"]] = rng.choice("NNNO")
            row[ul_ix["trancheEffectifsUniteLegale"]] = "NN"
            if pp:
                hidden = diffusion != "O"
                row[ul_ix["sexeUniteLegale"]] = "[ND]" if hidden else rng.choice("MF")
                row[ul_ix["nomUniteLegale"]] = "[ND]" if hidden else rng.choice(SURNAMES)
                first = "[ND]" if hidden else rng.choice(FIRST_NAMES)
                row[ul_ix["prenom1UniteLegale"]] = first
                row[ul_ix["prenomUsuelUniteLegale"]] = first
            else:
                row[ul_ix["denominationUniteLegale"]] = (
                    f"{rng.choice(WORDS)} {rng.choice(WORDS)} {base % 997}")
                row[ul_ix["categorieEntreprise"]] = rng.choice(("PME", "PME", "PME", "ETI"))
            wu.writerow(row)
            for k, nic in enumerate(nics):
                cp, commune = rng.choice(PLACES)
                e = [""] * len(et_cols)
                e[et_ix["siren"]] = siren
                e[et_ix["nic"]] = nic
                e[et_ix["siret"]] = siren + nic
                e[et_ix["statutDiffusionEtablissement"]] = diffusion
                e[et_ix["dateCreationEtablissement"]] = created
                e[et_ix["etablissementSiege"]] = "true" if k == 0 else "false"
                e[et_ix["nombrePeriodesEtablissement"]] = "1"
                e[et_ix["numeroVoieEtablissement"]] = str(rng.randint(1, 120))
                e[et_ix["typeVoieEtablissement"]] = rng.choice(("RUE", "AV", "BD", "CHE"))
                e[et_ix["libelleVoieEtablissement"]] = f"DES {rng.choice(WORDS)}"
                e[et_ix["codePostalEtablissement"]] = cp
                e[et_ix["libelleCommuneEtablissement"]] = commune
                e[et_ix["codeCommuneEtablissement"]] = cp
                e[et_ix["dateDebut"]] = debut
                e[et_ix["etatAdministratifEtablissement"]] = "A" if active else "F"
                e[et_ix["activitePrincipaleEtablissement"]] = ape
                e[et_ix["nomenclatureActivitePrincipaleEtablissement"]] = "NAFRev2"
                e[et_ix["caractereEmployeurEtablissement"]] = "N"
                we.writerow(e)
                n_etab += 1
    return Generated(ul_path, et_path, units, n_etab)
