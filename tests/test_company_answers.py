"""Answers about the caller's own company, from the Sirene register, in the call.

Two halves. The dialogue's rules (when the look-up is offered, what a yes, a no, a wrong
number lead to, what may be said of each kind of unit) run on a scripted classifier and a
ScriptedRegister: a named stand-in whose answers the test writes, so that neither a
retrain nor a new register file can change what these rules check. Then whole simulated
calls (`callbot simulate`) run against a real register imported from a generated file in
the official Sirene stock format, with the trained classifier and the real speech cache.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from scripted import ScriptedClassifier

from callbot.company import (FOUND, INVALID, NOT_FOUND, PARTIAL, UNAVAILABLE, company_answer,
                             spoken_ape, spoken_date, spoken_name)
from callbot.dialogue import Dialogue, State
from callbot.events import CompanyLookup, HangUp, Say, Transfer
from callbot.siren import luhn_ok
from callbot.sirene.lookup import Lookup, Siege
from callbot.transcripts.redact import NUMBER, redact_turn

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = {
    "comment je fais pour trouver mon code ape": "connaitre_code_ape",
    "où est-ce que je télécharge mon avis de situation": "obtenir_avis_situation",
    "comment savoir si mon entreprise est bien active": "etat_administratif",
    "c'est quoi la différence entre le siren et le siret": "difference_siren_siret",
    "je voudrais savoir comment masquer mes données": "statut_diffusion",
    "ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon numéro "
    "siren": "siren_non_recu",
    "ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon numéro "
    "siren" + " et je ne comprends vraiment pas pourquoi" * 6: "siren_non_recu",
    "quelqu'un a créé une entreprise à mon nom sans que je sois au courant":
        "usurpation_identite",
    "merci madame": "remerciement",
    "je voudrais parler à un conseiller s'il vous plaît": "parler_conseiller",
    "je l'ai pas sous la main": "hors_sujet",
    "je veux bien": "hors_sujet",       # after "oui": nothing more than the yes
}
APE_QUESTION = "comment je fais pour trouver mon code ape"
PERSONAL = ("ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon "
            "numéro siren")
THEFT = "quelqu'un a créé une entreprise à mon nom sans que je sois au courant"


def with_key(first8: str) -> str:
    """The SIREN whose first eight digits are ``first8`` (its Luhn key added)."""
    return next(first8 + d for d in "0123456789" if luhn_ok(first8 + d))


ACTIVE, CLOSED, HIDDEN, PERSON, UNKNOWN = (with_key(p) for p in (
    "73282932", "40123456", "51234567", "82345678", "90011122"))
assert ACTIVE == "732829320"


def unit(siren: str, **fields) -> Lookup:
    base = dict(siren=siren, found=True, valid=True, diffusible=True, etat_administratif="A",
                date_etat="2021-03-03", date_creation="2021-03-03", ape="56.10A",
                ape_label="Restauration traditionnelle", categorie_juridique="5499",
                personne_physique=False, denomination="BOULANGERIE DUPONT",
                siege=Siege(code_postal="29200", commune="BREST"))
    base.update(fields)
    return Lookup(**base)


class ScriptedRegister:
    """A named stand-in for :class:`callbot.sirene.lookup.Register`: the look-ups the test
    wrote, every other valid number not found. It keeps the numbers asked for."""

    def __init__(self, units: dict[str, Lookup], available: bool = True):
        self.units = units
        self.available = available
        self.asked: list[str] = []

    def lookup(self, number: str) -> Lookup:
        self.asked.append(number)
        if number in self.units:
            return self.units[number]
        return Lookup(siren=number, found=False, valid=luhn_ok(number), diffusible=None,
                      etat_administratif=None, date_etat=None, date_creation=None, ape=None,
                      ape_label=None, categorie_juridique=None, personne_physique=None,
                      denomination=None, siege=None)


UNITS = {
    ACTIVE: unit(ACTIVE),
    CLOSED: unit(CLOSED, etat_administratif="C", date_etat="2020-01-12",
                 date_creation="2012-05-01", ape="62.01Z",
                 ape_label="Programmation informatique", denomination="LOGICIELS DU PONANT SARL"),
    # Partial diffusion: the register itself withholds everything but the existence.
    HIDDEN: unit(HIDDEN, diffusible=False, etat_administratif=None, date_etat=None,
                 date_creation=None, ape=None, ape_label=None, denomination=None, siege=None,
                 personne_physique=None),
    # An individual entrepreneur. The register gives no name for one; this stand-in does,
    # to show the answer would not read it even so.
    PERSON: unit(PERSON, personne_physique=True, categorie_juridique="1000",
                 denomination="JEAN MARTIN", ape="96.02A", ape_label="Coiffure",
                 date_etat="2019-01-01", date_creation="2019-01-01",
                 siege=Siege(code_postal="29200", commune="BREST")),
}


def keys(turn):
    return [e.key for e in turn.events if isinstance(e, Say)]


def lookups(turn):
    return [e for e in turn.events if isinstance(e, CompanyLookup)]


def ending(turn):
    return next((e for e in turn.events if isinstance(e, (Transfer, HangUp))), None)


def type_keys(dlg, digits):
    turns = [dlg.key(d) for d in digits]
    return turns[-1]


@pytest.fixture
def register():
    return ScriptedRegister(UNITS)


@pytest.fixture
def dlg(kb, config, register):
    d = Dialogue(kb, ScriptedClassifier(SCRIPT), config.dialogue, register)
    d.start()
    return d


# --- the offer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("question, intent", [
    (APE_QUESTION, "connaitre_code_ape"),
    ("où est-ce que je télécharge mon avis de situation", "obtenir_avis_situation"),
    ("comment savoir si mon entreprise est bien active", "etat_administratif"),
])
def test_an_answer_about_the_company_offers_a_lookup(dlg, kb, question, intent):
    turn = dlg.hear(question)
    assert keys(turn) == [f"answer:{intent}", "prompt:lookup_offer"]
    assert turn.bot_text.endswith(kb.prompts["lookup_offer"])
    assert dlg.state is State.LOOKUP_OFFER and turn.state == "lookup_offer"


def test_other_answers_and_no_register_keep_another_question(kb, config, dlg):
    turn = dlg.hear("c'est quoi la différence entre le siren et le siret")
    assert keys(turn)[-1] == "prompt:another_question"
    for register in (None, ScriptedRegister(UNITS, available=False)):
        d = Dialogue(kb, ScriptedClassifier(SCRIPT), config.dialogue, register)
        d.start()
        assert keys(d.hear(APE_QUESTION)) == ["answer:connaitre_code_ape",
                                              "prompt:another_question"]
        assert d.state is State.ANOTHER


def test_the_offered_intents_come_from_the_configuration(kb, config, register):
    dialogue = dataclasses.replace(config.dialogue, lookup_intents=("etat_administratif",))
    d = Dialogue(kb, ScriptedClassifier(SCRIPT), dialogue, register)
    d.start()
    assert keys(d.hear(APE_QUESTION))[-1] == "prompt:another_question"
    assert keys(d.hear("comment savoir si mon entreprise est bien active"))[-1] == \
        "prompt:lookup_offer"


# --- the look-up, by kind of unit -----------------------------------------------------------------
def test_yes_then_typed_number_reads_state_date_and_ape(dlg, register, kb):
    dlg.hear(APE_QUESTION)
    turn = dlg.hear("oui")
    assert keys(turn) == ["prompt:lookup_ask"] and dlg.state is State.LOOKUP_SIREN
    turn = type_keys(dlg, ACTIVE)
    assert register.asked == [ACTIVE]
    says = [e.text for e in turn.events if isinstance(e, Say)]
    assert says == ["L'entreprise Boulangerie Dupont est active depuis le 3 mars 2021.",
                    "Son code A P E est 56 10 A : restauration traditionnelle.",
                    kb.prompts["another_question"]]
    assert lookups(turn) == [CompanyLookup(ACTIVE, FOUND)]
    assert dlg.state is State.ANOTHER and ending(turn) is None
    assert isinstance(ending(dlg.hear("non merci")), HangUp)


def test_number_said_right_after_the_offer(dlg, register):
    dlg.hear(APE_QUESTION)
    turn = dlg.hear("c'est le sept cent trente-deux huit cent vingt-neuf trois cent vingt")
    assert turn.intent == "siren" and turn.decision == "capture"
    assert lookups(turn) == [CompanyLookup(ACTIVE, FOUND)]
    assert "active depuis le 3 mars 2021" in turn.bot_text


def test_number_said_in_several_breaths(dlg):
    dlg.hear(APE_QUESTION)
    dlg.hear("d'accord")
    assert dlg.hear("sept cent trente-deux").events == []     # the bot waits for the rest
    dlg.hear("huit cent vingt-neuf")
    turn = dlg.hear("trois cent vingt")
    assert lookups(turn) == [CompanyLookup(ACTIVE, FOUND)]


def test_keys_typed_right_after_the_offer_and_zero_still_asks_for_an_advisor(dlg, kb, config,
                                                                            register):
    dlg.hear(APE_QUESTION)
    turn = dlg.key("7")
    assert dlg.state is State.LOOKUP_SIREN and turn.events == [] and turn.intent == "siren"
    turn = type_keys(dlg, ACTIVE[1:])
    assert lookups(turn) == [CompanyLookup(ACTIVE, FOUND)]
    d = Dialogue(kb, ScriptedClassifier(SCRIPT), config.dialogue, register)
    d.start()
    d.hear(APE_QUESTION)
    t = ending(d.key("0"))
    assert isinstance(t, Transfer) and t.reason == "caller_request"


def test_a_siret_said_at_once_is_looked_up_by_its_siren(dlg, register):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    turn = dlg.hear(" ".join(ACTIVE + "00017"))
    assert register.asked == [ACTIVE] and lookups(turn) == [CompanyLookup(ACTIVE, FOUND)]


def test_closed_company_says_when_it_stopped(dlg):
    dlg.hear("comment savoir si mon entreprise est bien active")
    dlg.hear("oui")
    turn = type_keys(dlg, CLOSED)
    assert turn.bot_text.startswith(
        "L'entreprise Logiciels Du Ponant S A R L a cessé son activité le 12 janvier 2020. "
        "Son code A P E est 62 01 Z : programmation informatique.")
    assert lookups(turn) == [CompanyLookup(CLOSED, FOUND)]


def test_partial_diffusion_says_only_that_the_number_exists(dlg, kb):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    turn = type_keys(dlg, HIDDEN)
    assert keys(turn) == ["prompt:lookup_partial", "prompt:another_question"]
    assert "ne sont pas diffusées publiquement" in turn.bot_text
    assert lookups(turn) == [CompanyLookup(HIDDEN, PARTIAL)]


def test_partial_diffusion_stays_silent_even_if_facts_came_with_it(kb):
    """Whatever a register returns with diffusible False, only the existence is said."""
    leaky = dataclasses.replace(UNITS[ACTIVE], diffusible=False)
    answer = company_answer(leaky, kb.prompts)
    text = " ".join(s.text for s in answer.says)
    assert answer.result == PARTIAL and text == kb.prompts["lookup_partial"]
    assert "Dupont" not in answer.advisor and "56" not in answer.advisor


def test_missing_dates_state_or_label_leave_their_words_out(kb):
    def said(**fields) -> str:
        return " ".join(s.text for s in company_answer(unit(ACTIVE, **fields), kb.prompts).says)

    assert said(date_etat=None, date_creation=None).startswith(
        "L'entreprise Boulangerie Dupont est active. Son code")
    assert said(date_etat=None, etat_administratif="C").startswith(
        "L'entreprise Boulangerie Dupont a cessé son activité. Son code")
    assert said(etat_administratif=None).startswith(
        "L'entreprise Boulangerie Dupont est bien inscrite au répertoire.")
    assert said(ape_label=None).endswith("Son code A P E est 56 10 A.")
    assert said(denomination=None).startswith("Cette entreprise est active")
    assert said(ape=None, ape_label=None) == \
        "L'entreprise Boulangerie Dupont est active depuis le 3 mars 2021."


def test_individual_entrepreneur_gets_state_date_and_ape_never_a_name_or_address(dlg):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    turn = type_keys(dlg, PERSON)
    text = turn.bot_text
    assert text.startswith("Cette entreprise individuelle est active depuis le 1er janvier "
                           "2019. Son code A P E est 96 02 A : coiffure.")
    for private in ("Jean", "Martin", "JEAN", "MARTIN", "Brest", "BREST", "29200"):
        assert private not in text
    assert lookups(turn) == [CompanyLookup(PERSON, FOUND)]


def test_unknown_number_says_so_and_what_to_do(dlg, kb):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    turn = type_keys(dlg, UNKNOWN)
    assert keys(turn) == ["prompt:lookup_not_found", "prompt:another_question"]
    text = turn.bot_text
    assert "ne trouve pas ce numéro" in text and "quelques jours" in text
    assert "Vérifiez aussi le numéro" in text
    assert lookups(turn) == [CompanyLookup(UNKNOWN, NOT_FOUND)]


def test_register_down_during_the_call_is_not_an_unknown_number(dlg, register, kb):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    register.available = False          # its database went away after the call started
    turn = type_keys(dlg, UNKNOWN)
    assert keys(turn) == ["prompt:lookup_unavailable", "prompt:another_question"]
    assert "ne trouve pas" not in turn.bot_text
    assert lookups(turn) == [CompanyLookup(UNKNOWN, UNAVAILABLE)]


def test_invalid_number_is_asked_again_then_given_up(dlg, register, kb):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    turn = dlg.hear("un deux trois quatre cinq six sept huit neuf")     # Luhn key wrong
    assert keys(turn) == ["prompt:siren_invalid"] and dlg.state is State.LOOKUP_SIREN
    assert lookups(turn) == [CompanyLookup("123456789", INVALID)]
    turn = type_keys(dlg, "12345#")                                     # too short
    assert lookups(turn) == [CompanyLookup("12345", INVALID)]
    assert keys(turn) == ["prompt:lookup_skip", "prompt:another_question"]
    assert dlg.state is State.ANOTHER and register.asked == []         # never looked up
    assert ending(turn) is None


def test_a_wrong_number_then_the_right_one(dlg):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    assert keys(type_keys(dlg, "123456789")) == ["prompt:siren_invalid"]
    turn = type_keys(dlg, "*" + CLOSED)
    assert lookups(turn) == [CompanyLookup(CLOSED, FOUND)]


# --- other replies to the offer ------------------------------------------------------------------
@pytest.mark.parametrize("reply", ["non", "non merci"])
def test_no_to_the_offer_asks_for_another_question(dlg, register, reply):
    dlg.hear(APE_QUESTION)
    turn = dlg.hear(reply)
    assert keys(turn) == ["prompt:lookup_declined", "prompt:another_question"]
    assert dlg.state is State.ANOTHER and register.asked == []
    assert isinstance(ending(dlg.hear("non")), HangUp)


def test_yes_with_more_words_is_still_a_yes(dlg):
    dlg.hear(APE_QUESTION)
    assert keys(dlg.hear("oui je veux bien")) == ["prompt:lookup_ask"]


def test_a_new_question_instead_of_a_reply_is_answered(dlg):
    dlg.hear(APE_QUESTION)
    turn = dlg.hear("je voudrais savoir comment masquer mes données")
    assert keys(turn) == ["answer:statut_diffusion", "prompt:another_question"]


def test_thanks_after_the_offer_closes_the_call(dlg):
    dlg.hear(APE_QUESTION)
    turn = dlg.hear("merci madame")
    assert keys(turn) == ["prompt:goodbye_after_thanks"] and isinstance(ending(turn), HangUp)


def test_silence_after_the_offer_repeats_it_then_ends(dlg):
    dlg.hear(APE_QUESTION)
    assert keys(dlg.silence()) == ["prompt:lookup_offer"]
    assert isinstance(ending(dlg.silence()), HangUp)


def test_no_number_at_hand_during_the_capture(dlg, register):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    turn = dlg.hear("je l'ai pas sous la main")
    assert keys(turn) == ["prompt:lookup_skip", "prompt:another_question"]
    assert dlg.state is State.ANOTHER and register.asked == []


def test_advisor_asked_during_the_capture(dlg):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    t = ending(dlg.hear("je voudrais parler à un conseiller s'il vous plaît"))
    assert isinstance(t, Transfer) and t.reason == "caller_request"


def test_digits_never_end_the_turn_early_during_a_lookup(dlg):
    dlg.hear(APE_QUESTION)
    assert dlg.complete("oui") and not dlg.complete("sept cent trente-deux")
    dlg.hear("oui")
    assert not dlg.complete("sept cent trente-deux")


# --- transfers carry the register's facts ----------------------------------------------------------
def test_siren_non_recu_tells_the_caller_and_the_advisor(dlg):
    dlg.hear(PERSONAL)
    turn = type_keys(dlg, ACTIVE)
    assert keys(turn) == ["lookup:state", "lookup:ape", "prompt:siren_ok"]
    t = ending(turn)
    assert isinstance(t, Transfer) and t.context.siren == ACTIVE
    summary = t.context.summary
    assert "Sirene : BOULANGERIE DUPONT, active depuis le 03/03/2021" in summary
    assert "APE 56.10A (Restauration traditionnelle)" in summary
    assert "créée le 03/03/2021, siège 29200 BREST" in summary
    # The facts come before the caller's words, which the SIP header may cut.
    assert summary.index("Sirene :") < summary.index("demande :")


def test_the_facts_fit_the_sip_summary_header(dlg):
    """The SIP side folds the summary to ASCII and cuts it at SUMMARY_MAX: the register's
    facts come before the caller's words, so a long request cannot push them out."""
    from telephony.transfer import SUMMARY_MAX, context_headers

    dlg.hear(PERSONAL + " " + "et je ne comprends vraiment pas pourquoi " * 6)
    headers = dict(context_headers(ending(type_keys(dlg, ACTIVE)), "call-1"))
    summary = headers["X-Callbot-Summary"]
    assert len(summary) <= SUMMARY_MAX and summary.endswith("...")
    assert ("SIREN 732829320 ; Sirene : BOULANGERIE DUPONT, active depuis le 03/03/2021, "
            "APE 56.10A (Restauration traditionnelle), creee le 03/03/2021, siege 29200 BREST"
            in summary)


def test_other_transfers_give_the_facts_to_the_advisor_only(dlg):
    dlg.hear(THEFT)
    turn = type_keys(dlg, PERSON)
    assert keys(turn) == ["prompt:siren_ok"]
    assert lookups(turn) == [CompanyLookup(PERSON, FOUND)]
    summary = ending(turn).context.summary
    assert "Sirene : entrepreneur individuel, active depuis le 01/01/2019" in summary
    assert "APE 96.02A (Coiffure)" in summary
    assert "MARTIN" not in summary and "BREST" not in summary


def test_transfer_of_an_unknown_number_says_so_to_the_advisor(dlg):
    dlg.hear(THEFT)
    summary = ending(type_keys(dlg, UNKNOWN)).context.summary
    assert "Sirene : numéro absent du répertoire" in summary


# --- the transcript record and its redaction -----------------------------------------------------
def test_lookup_record_and_typed_keys_are_redacted(dlg):
    dlg.hear(APE_QUESTION)
    dlg.hear("oui")
    last = type_keys(dlg, ACTIVE)
    row = {"text": None, "dtmf": last.dtmf, "intent": last.intent, "state": last.state,
           "events": json.dumps([e.to_json() for e in last.events], ensure_ascii=False)}
    assert last.state == "another_question"      # the capture is over on the last key
    out = redact_turn(row)
    assert out["dtmf"] == "*"
    assert {"type": "lookup", "number": NUMBER, "result": "found"} in out["events"]
    assert ACTIVE not in json.dumps(out, ensure_ascii=False)


# --- written for the ear -------------------------------------------------------------------------
@pytest.mark.parametrize("iso, spoken", [("2021-03-03", "3 mars 2021"),
                                         ("2019-01-01", "1er janvier 2019"),
                                         ("2020-12-31", "31 décembre 2020"),
                                         ("", None), ("2021-13-45", None)])
def test_dates_for_the_ear(iso, spoken):
    assert spoken_date(iso) == spoken


def test_codes_and_names_for_the_ear():
    assert spoken_ape("56.10A") == "56 10 A" and spoken_ape("6201z") == "62 01 Z"
    assert spoken_name("BOULANGERIE DUPONT SARL") == "Boulangerie Dupont S A R L"
    assert spoken_name("Les Jardins de l'Ouest") == "Les Jardins de l'Ouest"


def _phonemes(text: str) -> str:
    out = subprocess.run(["espeak-ng", "-v", "fr", "-q", "-x", text], capture_output=True,
                         text=True, check=True, timeout=30)
    return out.stdout


def test_espeak_reads_the_ape_code_as_numbers_and_a_letter():
    """What espeak-ng `fr` makes of the written forms: "56.10A" would be "cinquante-six
    point dix"; "56 10 A" is "cinquante-six dix A"."""
    assert "pwE~" in _phonemes("56.10A")                    # the form that must not be used
    said = _phonemes(f"Son code A P E est {spoken_ape('56.10A')}.")
    assert "pwE~" not in said and "virgyl" not in said
    assert "sE~kA~ts" in said and "d'iz" in said and said.rstrip().endswith("'a")
    said = _phonemes(spoken_ape("62.01Z"))
    assert "zero" in said and "z'Ed" in said and "pwE~" not in said
    said = _phonemes(f"depuis le {spoken_date('2019-01-01')}")
    assert "pr@mj'e" in said and "ZA~vj'e" in said
    assert "(en)" not in _phonemes(spoken_name("DUPONT SARL"))   # not read as English


# --- whole simulated calls against a real register ------------------------------------------------
# A register imported from stock files in the official format (the columns and their order
# of INSEE's StockUniteLegale / StockEtablissement), by the importer the bot's operators run.
REAL_ACTIVE, REAL_CLOSED, REAL_HIDDEN, REAL_PERSON, REAL_UNKNOWN = (with_key(p) for p in (
    "73282932", "40123456", "51234567", "82345678", "90011122"))
HEAD_OFFICE = {"statutDiffusionEtablissement": "O", "etablissementSiege": "true",
               "etatAdministratifEtablissement": "A", "numeroVoieEtablissement": "12",
               "typeVoieEtablissement": "RUE", "libelleVoieEtablissement": "DE SIAM",
               "codePostalEtablissement": "29200", "libelleCommuneEtablissement": "BREST"}


def _unit(siren: str, **columns: str) -> dict[str, str]:
    row = {"siren": siren, "statutDiffusionUniteLegale": "O",
           "dateCreationUniteLegale": "2021-03-03", "dateDebut": "2021-03-03",
           "etatAdministratifUniteLegale": "A", "categorieJuridiqueUniteLegale": "5499",
           "activitePrincipaleUniteLegale": "56.10A",
           "nomenclatureActivitePrincipaleUniteLegale": "NAFRev2",
           "nicSiegeUniteLegale": "00017"}
    row.update(columns)
    return row


@pytest.fixture(scope="module")
def register_home(tmp_path_factory):
    """A configuration file whose [sirene] register holds the five units of these tests."""
    from callbot.config import load_config
    from callbot.sirene.importer import import_files
    from callbot.sirene.testdata import write_stock

    d = tmp_path_factory.mktemp("sirene")
    units = write_stock(d / "StockUniteLegale_utf8.csv", "unite_legale", [
        _unit(REAL_ACTIVE, denominationUniteLegale="BOULANGERIE DU PORT"),
        _unit(REAL_CLOSED, denominationUniteLegale="LOGICIELS DU PONANT",
              etatAdministratifUniteLegale="C", dateDebut="2020-01-12",
              dateCreationUniteLegale="2012-05-01", activitePrincipaleUniteLegale="62.01Z"),
        _unit(REAL_HIDDEN, statutDiffusionUniteLegale="P",
              denominationUniteLegale="SOCIETE DISCRETE"),
        _unit(REAL_PERSON, categorieJuridiqueUniteLegale="1000", sexeUniteLegale="M",
              nomUniteLegale="MARTIN", prenom1UniteLegale="JEAN", prenomUsuelUniteLegale="JEAN",
              dateCreationUniteLegale="2019-01-01", dateDebut="2019-01-01",
              activitePrincipaleUniteLegale="96.02A"),
    ])
    etabs = write_stock(d / "StockEtablissement_utf8.csv", "etablissement", [
        {"siren": s, "nic": "00017", "siret": s + "00017", **HEAD_OFFICE}
        for s in (REAL_ACTIVE, REAL_CLOSED, REAL_HIDDEN, REAL_PERSON)])
    cfg = d / "callbot.toml"
    cfg.write_text(f'[paths]\ndata = "{d / "data"}"\n\n[sirene]\npath = "{d / "sirene.sqlite3"}"\n')
    import_files(load_config(cfg, env={}), [units, etabs])
    return cfg


def simulate_call(cfg: Path, *turns: str, save: bool = False) -> dict:
    """`callbot simulate --json` with ``turns`` as ("--text", "..."), ("--dtmf", "...")."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}
    args = [sys.executable, "-m", "callbot", "--config", str(cfg), "simulate", "--json",
            *turns, *(["--save-transcript"] if save else [])]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout)


def lookup_turn(out: dict) -> dict:
    """The bot's turn that made the (last) register look-up."""
    made = [t for t in out["turns"] if any(e["type"] == "lookup" for e in t["events"])]
    assert made, [t["bot"] for t in out["turns"]]
    return made[-1]


def _looked_up(turn: dict) -> list[dict]:
    return [e for e in turn["events"] if e["type"] == "lookup"]


@pytest.mark.parametrize("question, intent, number, result, says, never", [
    ("comment je fais pour trouver mon code ape", "connaitre_code_ape",
     ("--dtmf", REAL_ACTIVE), FOUND,
     ["L'entreprise Boulangerie Du Port est active depuis le 3 mars 2021.",
      "Son code A P E est 56 10 A : restauration traditionnelle.",
      "Avez-vous une autre question ?"], ["BREST", "Brest", "Siam"]),
    ("comment savoir si mon entreprise est bien active dans le répertoire",
     "etat_administratif", ("--text", "quatre cent un deux cent trente-quatre cinq cent "
                                      "soixante-deux"), FOUND,
     ["L'entreprise Logiciels Du Ponant a cessé son activité le 12 janvier 2020.",
      "Son code A P E est 62 01 Z : programmation informatique."], ["Brest"]),
    ("comment je télécharge mon avis de situation", "obtenir_avis_situation",
     ("--dtmf", REAL_HIDDEN), PARTIAL,
     ["Ce numéro existe, et ses informations ne sont pas diffusées publiquement."],
     ["Discr", "DISCR", "active", "A P E", "Brest"]),
    ("comment je fais pour trouver mon code ape", "connaitre_code_ape",
     ("--dtmf", REAL_PERSON), FOUND,
     ["Cette entreprise individuelle est active depuis le 1er janvier 2019.",
      "Son code A P E est 96 02 A : coiffure."],
     ["Martin", "MARTIN", "Jean", "JEAN", "Brest", "BREST", "29200", "Siam"]),
    ("je veux vérifier qu'un fournisseur existe vraiment", "verifier_entreprise",
     ("--dtmf", REAL_UNKNOWN), NOT_FOUND,
     ["Je ne trouve pas ce numéro dans le répertoire.", "quelques jours",
      "Vérifiez aussi le numéro"], ["active", "A P E"]),
    ("comment je fais pour trouver mon code ape", "connaitre_code_ape",
     ("--dtmf", REAL_ACTIVE[:-1] + str((int(REAL_ACTIVE[-1]) + 1) % 10)), INVALID,
     ["Ce numéro ne semble pas valide. Redites les neuf chiffres du Siren"],
     ["active", "A P E", "Boulangerie"]),
], ids=["active", "closed", "partial-diffusion", "individual-entrepreneur", "unknown",
        "invalid"])
def test_simulated_call_answers_from_the_register(register_home, question, intent, number,
                                                  result, says, never):
    out = simulate_call(register_home, "--text", question, "--text", "oui", *number)
    asked = out["turns"][1]
    assert asked["intent"] == intent, asked
    assert asked["bot"].endswith("voulez-vous me le donner ?"), asked["bot"]
    assert out["turns"][2]["bot"] == "Dites-moi les neuf chiffres du Siren, ou tapez-les sur le " \
                                     "clavier."
    turn = lookup_turn(out)
    assert [e["result"] for e in _looked_up(turn)] == [result]
    for words in says:
        assert words in turn["bot"], turn["bot"]
    for words in never:
        assert words not in turn["bot"], turn["bot"]
    assert out["transfer"] is None


def test_simulated_transfer_gives_the_advisor_the_facts_not_the_name(register_home):
    out = simulate_call(register_home, "--text", PERSONAL, "--dtmf", REAL_PERSON)
    assert out["outcome"] == "transferred"
    context = out["transfer"]["context"]
    assert context["siren"] == REAL_PERSON and context["intent"] == "siren_non_recu"
    assert "Sirene : entrepreneur individuel, active depuis le 01/01/2019" in context["summary"]
    assert "APE 96.02A (Coiffure)" in context["summary"]
    said = " ".join(t["bot"] for t in out["turns"])
    assert "Cette entreprise individuelle est active depuis le 1er janvier 2019." in said
    for private in ("MARTIN", "Martin", "JEAN", "BREST", "Brest"):
        assert private not in context["summary"] and private not in said


def test_every_lookup_is_in_the_transcript_and_redacted_in_exports(register_home):
    """Two look-ups in one call (a wrong number, then the right one), stored with the turn
    (SQLite of the configuration), masked by `transcripts export` (redacted by default) and
    given whole with `--no-redact`."""
    wrong = REAL_ACTIVE[:-1] + str((int(REAL_ACTIVE[-1]) + 1) % 10)
    simulate_call(register_home, "--text", "comment je fais pour trouver mon code ape",
                  "--text", "oui", "--dtmf", wrong, "--dtmf", REAL_ACTIVE, save=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLBOT_")}

    def export(*extra: str) -> list[dict]:
        r = subprocess.run([sys.executable, "-m", "callbot", "--config", str(register_home),
                            "transcripts", "export", "--format", "jsonl", *extra],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def recorded(calls: list[dict]) -> list[dict]:
        call = [c for c in calls if any(e.get("type") == "lookup" for t in c["turns"]
                                        for e in (t.get("events") or []))][-1]
        return [e for t in call["turns"] for e in (t.get("events") or [])
                if e.get("type") == "lookup"]

    assert recorded(export("--no-redact")) == [{"type": "lookup", "number": wrong,
                                                "result": "invalid"},
                                  {"type": "lookup", "number": REAL_ACTIVE, "result": "found"}]
    redacted = export()
    assert recorded(redacted) == [{"type": "lookup", "number": NUMBER, "result": "invalid"},
                                  {"type": "lookup", "number": NUMBER, "result": "found"}]
    text = json.dumps(redacted, ensure_ascii=False)
    assert REAL_ACTIVE not in text and wrong not in text


def test_an_unknown_lookup_intent_is_refused_when_the_engines_load(kb, config, tmp_path):
    from callbot.company import open_register
    from callbot.errors import ConfigError

    wrong = dataclasses.replace(
        config, dialogue=dataclasses.replace(config.dialogue,
                                             lookup_intents=("connaitre_code_ape", "code_ap")),
        sirene=dataclasses.replace(config.sirene, path=tmp_path / "sirene.sqlite3"))
    with pytest.raises(ConfigError, match="dialogue.lookup_intents names code_ap"):
        open_register(wrong, kb)
    register = open_register(dataclasses.replace(wrong, dialogue=config.dialogue), kb)
    assert register.available is False          # nothing imported there: no look-ups


def test_fixed_lookup_sentences_are_prerendered_and_templates_are_not(kb):
    from callbot.cli import prerendered_texts

    texts = prerendered_texts(kb)
    for name in ("lookup_offer", "lookup_ask", "lookup_declined", "lookup_skip",
                 "lookup_partial", "lookup_not_found", "lookup_unavailable"):
        assert kb.prompts[name] in texts, name
    assert not [t for t in texts if "{" in t]
