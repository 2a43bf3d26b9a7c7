"""Short replies read against the bot's question: pure rules, no model."""

import pytest

from callbot.replies import (announces_question, closes, declines_siren, is_follow_up,
                             split_reply, yes_no)


@pytest.mark.parametrize("text, head, rest", [
    ("oui j'en ai une autre", "oui", "j en ai une autre"),
    ("Oui, une dernière question.", "oui", "une derniere question"),
    ("euh oui oui c'est ça", "oui", ""),
    ("non merci", "non", ""),
    ("bah non c'est tout merci", "non", "c est tout merci"),
    ("oui je voudrais savoir comment fermer ma boîte", "oui",
     "je voudrais savoir comment fermer ma boite"),
    ("comment avoir mon siret", None, "comment avoir mon siret"),
])
def test_split_reply(text, head, rest):
    r = split_reply(text)
    assert (r.head, r.rest, r.correction) == (head, rest, False)


@pytest.mark.parametrize("text, rest", [
    ("non pas ça je voulais savoir où je trouve le mien", "je voulais savoir ou je trouve le mien"),
    ("c'est pas ça je demande le code de mon entreprise", "je demande le code de mon entreprise"),
    ("non non vous avez mal compris je veux fermer ma société", "je veux fermer ma societe"),
])
def test_corrections(text, rest):
    r = split_reply(text)
    assert r.correction and r.head == "non" and r.rest == rest


@pytest.mark.parametrize("text, expected", [
    ("oui", "oui"), ("ouais c'est ça", "oui"), ("euh oui tout à fait", "oui"),
    ("d'accord", "oui"), ("c'est correct", "oui"), ("non", "non"), ("non merci", "non"),
    ("non c'est bon", "non"), ("pas du tout", "non"), ("non ça ira merci", "non"),
    ("non mais je voulais savoir pour mon code ape", None), ("comment avoir mon siret", None),
    ("oui j'en ai une autre", None), ("non pas ça je voulais autre chose", None),
])
def test_yes_no(text, expected):
    assert yes_no(text) == expected


@pytest.mark.parametrize("rest, expected", [
    ("j en ai une autre", True), ("une derniere question", True), ("une petite question", True),
    ("j aurais encore une question", True), ("", False),
    ("je voudrais savoir comment fermer ma boite", False), ("merci", False),
])
def test_announces_question(rest, expected):
    assert announces_question(rest) is expected


@pytest.mark.parametrize("text, expected", [
    ("je l'ai pas sous la main", True), ("aucune idée", True), ("je l'ai perdu", True),
    ("non", True), ("je sais pas", True), ("attendez je cherche", False), ("oui", False),
])
def test_declines_siren(text, expected):
    assert declines_siren(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("et pour une association", True), ("d'accord et ça prend combien de temps", True),
    ("et si on me le refuse", True), ("mais pour la rouvrir", True),
    ("dans ce cas je fais comment", True), ("comment obtenir un siret", False),
    ("je voudrais mon avis de situation", False),
])
def test_follow_up(text, expected):
    assert is_follow_up(text) is expected


@pytest.mark.parametrize("text, expected", [
    ("c'est bon j'ai ma réponse merci", True), ("ce sera tout merci bonne journée", True),
    ("merci pour les infos", True), ("parfait merci beaucoup", True), ("c'est bon", True),
    ("non merci au revoir", True), ("euh", False), ("je voudrais fermer ma boîte merci", False),
    ("et pour une association", False), ("c'est pour mon siret merci", False),
])
def test_closes(text, expected):
    assert closes(text) is expected
