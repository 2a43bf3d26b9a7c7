"""Register.lookup on real register copies (SQLite file and PostgreSQL tables) built by the
importer from stock files in the official format: the privacy rules, number validation,
SIRET lookups, a missing register, the APE labels and `callbot sirene lookup`."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from callbot.config import Config
from callbot.siren import luhn_ok
from callbot.sirene.importer import import_files
from callbot.sirene.labels import ape_label, codes
from callbot.sirene.lookup import Lookup, Register, siret_ok
from callbot.sirene.testdata import luhn_key, write_stock

ROOT = Path(__file__).resolve().parent.parent
CALLBOT = [sys.executable, "-m", "callbot"]


def siren(n: int) -> str:
    head = f"{n:08d}"
    return head + luhn_key(head)


def nic_for(siren_: str, k: int) -> str:
    head = f"{k:04d}"
    return head + luhn_key(siren_ + head)


COMPANY, PERSON, HIDDEN, PURGED, CLOSED, HIDDEN_SITE, NAF25, HIDDEN_PERSON = (
    siren(n) for n in (10_000_001, 10_000_002, 10_000_003, 10_000_004, 10_000_005,
                       10_000_006, 10_000_007, 10_000_008))
NIC = {s: nic_for(s, 1) for s in (COMPANY, PERSON, HIDDEN, PURGED, CLOSED, HIDDEN_SITE, NAF25,
                                  HIDDEN_PERSON)}
SECOND = nic_for(COMPANY, 2)


def unit(s: str, **values: str) -> dict[str, str]:
    base = {"siren": s, "statutDiffusionUniteLegale": "O", "dateCreationUniteLegale":
            "2011-05-02", "dateDebut": "2011-05-02", "etatAdministratifUniteLegale": "A",
            "categorieJuridiqueUniteLegale": "5710", "activitePrincipaleUniteLegale": "56.10A",
            "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2", "nicSiegeUniteLegale": NIC[s],
            "denominationUniteLegale": f"SOCIETE {s}"}
    base.update(values)
    return base


def site(s: str, nic: str, siege: bool = True, **values: str) -> dict[str, str]:
    base = {"siren": s, "nic": nic, "siret": s + nic, "statutDiffusionEtablissement": "O",
            "etablissementSiege": "true" if siege else "false",
            "etatAdministratifEtablissement": "A", "codePostalEtablissement": "75011",
            "libelleCommuneEtablissement": "PARIS 11", "libelleVoieEtablissement":
            "DE LA ROQUETTE", "numeroVoieEtablissement": "12"}
    base.update(values)
    return base


UNITS = [
    unit(COMPANY, denominationUniteLegale="LE BON COIN DE RUE",
         activitePrincipaleNAF25UniteLegale="56.11G"),
    unit(PERSON, categorieJuridiqueUniteLegale="1000", denominationUniteLegale="",
         nomUniteLegale="DUPONTEL", prenom1UniteLegale="JEANNETTE",
         prenomUsuelUniteLegale="JEANNETTE", sexeUniteLegale="F",
         activitePrincipaleUniteLegale="96.02A"),
    unit(HIDDEN, statutDiffusionUniteLegale="P", denominationUniteLegale="SECRETE SARL"),
    unit(PURGED, unitePurgeeUniteLegale="true", etatAdministratifUniteLegale="C"),
    unit(CLOSED, etatAdministratifUniteLegale="C", dateDebut="2019-12-31",
         activitePrincipaleUniteLegale="62.01Z"),
    unit(HIDDEN_SITE),
    unit(NAF25, activitePrincipaleUniteLegale="01.11Y",
         nomenclatureActivitePrincipaleUniteLegale="NAF2025"),
    unit(HIDDEN_PERSON, statutDiffusionUniteLegale="P", categorieJuridiqueUniteLegale="1000",
         denominationUniteLegale="", nomUniteLegale="[ND]", prenom1UniteLegale="[ND]"),
]
SITES = [
    site(COMPANY, NIC[COMPANY]),
    site(COMPANY, SECOND, siege=False, codePostalEtablissement="69003",
         libelleCommuneEtablissement="LYON 3E ARRONDISSEMENT",
         etatAdministratifEtablissement="F"),
    site(PERSON, NIC[PERSON], codePostalEtablissement="29200", libelleCommuneEtablissement="BREST"),
    site(HIDDEN, NIC[HIDDEN], statutDiffusionEtablissement="P"),
    site(PURGED, NIC[PURGED]),
    site(CLOSED, NIC[CLOSED], etatAdministratifEtablissement="F"),
    site(HIDDEN_SITE, NIC[HIDDEN_SITE], statutDiffusionEtablissement="P"),
    site(NAF25, NIC[NAF25]),
    site(HIDDEN_PERSON, NIC[HIDDEN_PERSON], statutDiffusionEtablissement="P"),
]


def engine_config(config: Config, tmp_path: Path, engine: str, request) -> Config:
    url = request.getfixturevalue("pg_server").new_database() if engine == "postgresql" else ""
    return dataclasses.replace(
        config, paths=dataclasses.replace(config.paths, data=tmp_path / "data"),
        transcripts=dataclasses.replace(config.transcripts, url=url))


@pytest.fixture(params=["sqlite", "postgresql"])
def register(request, config: Config, tmp_path: Path):
    cfg = engine_config(config, tmp_path, request.param, request)
    import_files(cfg, [write_stock(tmp_path / "ul.csv", "unite_legale", UNITS),
                       write_stock(tmp_path / "et.zip", "etablissement", SITES)])
    reg = Register.open(cfg)
    yield reg
    reg.close()


NOTHING = dict(etat_administratif=None, date_etat=None, date_creation=None, ape=None,
               ape_label=None, ape_naf25=None, ape_naf25_label=None, categorie_juridique=None, personne_physique=None,
               denomination=None, siege=None)


def test_company_answer(register):
    a = register.lookup(f" {COMPANY[:3]} {COMPANY[3:6]} {COMPANY[6:]} ")
    assert register.available
    assert (a.siren, a.found, a.valid, a.diffusible) == (COMPANY, True, True, True)
    assert (a.etat_administratif, a.date_etat, a.date_creation) == ("A", "2011-05-02",
                                                                     "2011-05-02")
    assert (a.ape, a.ape_label) == ("56.10A", "Restauration traditionnelle")
    assert a.categorie_juridique == "5710" and a.personne_physique is False
    assert a.denomination == "LE BON COIN DE RUE"
    assert a.siege is not None and (a.siege.code_postal, a.siege.commune) == ("75011", "PARIS 11")
    assert a.to_json() == {
        "siren": COMPANY, "valid": True, "found": True, "diffusible": True,
        "etat_administratif": "A", "date_etat": "2011-05-02", "date_creation": "2011-05-02",
        "ape": "56.10A", "ape_label": "Restauration traditionnelle",
        "ape_naf25": "56.11G", "ape_naf25_label": "Restauration traditionnelle",
        "categorie_juridique": "5710", "personne_physique": False,
        "siege": {"code_postal": "75011", "commune": "PARIS 11"}}
    # no street address anywhere in the answer
    assert "ROQUETTE" not in json.dumps(a.to_json()) + repr(a)


def test_natural_person_has_no_name_and_no_place(register):
    a = register.lookup(PERSON)
    assert (a.found, a.diffusible, a.personne_physique) == (True, True, True)
    assert a.denomination is None and a.siege is None
    assert (a.ape, a.ape_label) == ("96.02A", "Coiffure")
    text = json.dumps(a.to_json(), ensure_ascii=False) + repr(a)
    for private in ("DUPONTEL", "JEANNETTE", "29200", "BREST"):
        assert private not in text
    # the SIRET of the person's establishment: no place either
    b = register.lookup(PERSON + NIC[PERSON])
    assert b.found and b.siege is None and "BREST" not in repr(b)


def test_natural_person_name_is_not_even_imported(register):
    if register.label.startswith("postgres"):
        pytest.skip("file check: the SQLite copy is one file")
    raw = Path(register.label).read_bytes()
    assert b"DUPONTEL" not in raw and b"JEANNETTE" not in raw
    assert b"LE BON COIN DE RUE" in raw          # the check can see a stored name
    assert b"ROQUETTE" not in raw and b"SECRETE" not in raw


@pytest.mark.parametrize("which", ["HIDDEN", "HIDDEN_PERSON"])
def test_not_diffusible_says_only_that(register, which):
    s = {"HIDDEN": HIDDEN, "HIDDEN_PERSON": HIDDEN_PERSON}[which]
    for number in (s, s + NIC[s]):
        a = register.lookup(number)
        assert (a.siren, a.found, a.valid, a.diffusible) == (s, True, True, False)
        assert {k: getattr(a, k) for k in NOTHING} == NOTHING
        j = a.to_json()
        assert j["siege"] == {"code_postal": None, "commune": None}
        assert "SECRETE" not in json.dumps(j) + repr(a)


def test_purged_unit_is_not_found(register):
    a = register.lookup(PURGED)
    assert (a.found, a.valid, a.diffusible) == (False, True, None)
    assert register.lookup(PURGED + NIC[PURGED]).found is False


def test_closed_unit_and_its_date(register):
    a = register.lookup(CLOSED)
    assert (a.etat_administratif, a.date_etat, a.ape_label) == ("C", "2019-12-31",
                                                                "Programmation informatique")


def test_head_office_outside_diffusion_gives_no_place(register):
    a = register.lookup(HIDDEN_SITE)
    assert a.found and a.diffusible and a.denomination == f"SOCIETE {HIDDEN_SITE}"
    assert a.siege is None


def test_siret_lookup(register):
    a = register.lookup(COMPANY + SECOND)
    assert a.found and a.siret == COMPANY + SECOND and a.etablissement_etat == "F"
    assert a.siege.commune == "PARIS 11"           # the head office, not this establishment
    unknown = COMPANY + nic_for(COMPANY, 9)
    b = register.lookup(unknown)
    assert (b.siren, b.found, b.valid) == (COMPANY, False, True)
    wrong_key = COMPANY + SECOND[:4] + str((int(SECOND[4]) + 1) % 10)
    assert register.lookup(wrong_key).valid is False


@pytest.mark.parametrize("number", ["", "abc", "12345678", "1234567890", "732 829 321",
                                    "7328293200001", "732829320000144", "73282932O"])
def test_invalid_numbers_are_answers(register, number):
    a = register.lookup(number)
    assert isinstance(a, Lookup) and (a.valid, a.found) == (False, False)
    assert {k: getattr(a, k) for k in NOTHING} == NOTHING


def test_valid_but_unknown(register):
    assert luhn_ok("732829320")
    a = register.lookup("732829320")
    assert (a.siren, a.valid, a.found) == ("732829320", True, False)


def test_la_poste_sirets_follow_their_own_key():
    siret = "35600000000010"              # digit sum 15: a La Poste establishment
    assert not luhn_ok(siret) and siret_ok(siret)
    assert not siret_ok("35600000000011")


def test_naf_2025_code_is_read_with_its_2025_label_never_a_rev2_one(register):
    a = register.lookup(NAF25)
    assert a.ape == "01.11Y"
    assert a.ape_label == ("Culture de céréales, à l'exception du riz, de légumineuses et de "
                           "graines oléagineuses")
    # the same-looking code of the other nomenclature has no label
    assert ape_label("01.11Y", "NAFRev2") is None and ape_label("56.10A", "NAF2025") is None


def test_the_naf_2025_code_the_files_carry_beside_the_ape_is_given_with_its_label(register):
    a = register.lookup(COMPANY)
    assert (a.ape, a.ape_naf25, a.ape_naf25_label) == ("56.10A", "56.11G",
                                                       "Restauration traditionnelle")
    assert register.lookup(CLOSED).ape_naf25 is None     # an older file: no such column value


def test_labels_file():
    assert len(codes("NAFRev2")) == 732
    assert len(codes("NAF2025")) == 747                 # INSEE: 747 sub-classes
    assert all(re.fullmatch(r"\d\d\.\d\d[GHJKLY]", c) for c in codes("NAF2025"))
    assert ape_label("01.48G", "NAF2025") == "Apiculture"
    assert ape_label("5611g", "NAF2025") == "Restauration traditionnelle"
    assert "\u2019" not in "".join(ape_label(c, "NAF2025") for c in codes("NAF2025"))
    assert ape_label("62.01Z") == "Programmation informatique"
    assert ape_label("6201Z") == "Programmation informatique"     # the undotted spelling
    assert ape_label("62.01Z", "NAFRev1") is None
    assert ape_label(None) is None and ape_label("99.99Z") is None


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_missing_register_is_a_state_not_an_error(request, config, tmp_path, engine):
    cfg = engine_config(config, tmp_path, engine, request)
    reg = Register.open(cfg)
    try:
        assert reg.available is False and reg.info() is None
        a = reg.lookup(COMPANY)
        assert (a.siren, a.valid, a.found) == (COMPANY, True, False)
    finally:
        reg.close()


def test_register_follows_a_later_import(config, tmp_path):
    cfg = engine_config(config, tmp_path, "sqlite", None)
    reg = Register.open(cfg)
    assert reg.lookup(COMPANY).found is False
    import_files(cfg, [write_stock(tmp_path / "ul.csv", "unite_legale", UNITS)])
    assert reg.available and reg.lookup(COMPANY).found is True
    assert reg.lookup(COMPANY).siege is None      # no establishments imported yet
    reg.close()


def _cli(cfg: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    return subprocess.run(CALLBOT + ["--config", str(cfg), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_lookup_command(tmp_path):
    cfg = tmp_path / "callbot.toml"
    cfg.write_text(f'[paths]\ndata = "{tmp_path / "data"}"\n', encoding="utf-8")
    r = _cli(cfg, "sirene", "lookup", COMPANY)
    assert r.returncode == 1 and "callbot sirene import" in r.stderr
    ul = write_stock(tmp_path / "ul.csv", "unite_legale", UNITS)
    et = write_stock(tmp_path / "et.csv", "etablissement", SITES)
    r = _cli(cfg, "sirene", "import", str(ul), str(et))
    assert r.returncode == 0, r.stderr
    r = _cli(cfg, "sirene", "lookup", f"{COMPANY[:3]} {COMPANY[3:]}")
    assert r.returncode == 0, r.stderr
    assert "Restauration traditionnelle" in r.stdout and "75011 PARIS 11" in r.stdout
    r = _cli(cfg, "sirene", "lookup", PERSON, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["personne_physique"] is True
    assert "DUPONTEL" not in r.stdout and "BREST" not in r.stdout
    r = _cli(cfg, "sirene", "lookup", "732829321")
    assert r.returncode == 0 and "not a valid" in r.stdout
    r = _cli(cfg, "sirene", "lookup", "732829320", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["found"] is False
    r = _cli(cfg, "sirene", "lookup", HIDDEN)
    assert r.returncode == 0 and "outside the public diffusion" in r.stdout
