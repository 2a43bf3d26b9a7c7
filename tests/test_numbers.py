"""French numbers both ways, and the SIREN key."""

import pytest

from callbot.numbers import int_to_words
from callbot.siren import luhn_ok, siren_from_digits, spoken_digits
from callbot.text import normalize


@pytest.mark.parametrize("said, digits", [
    ("sept cent trente-deux huit cent vingt-neuf trois cent vingt", "732829320"),
    ("sept trois deux huit deux neuf trois deux zéro", "732829320"),
    ("732 829 320", "732829320"),
    ("7 3 2 8 2 9 3 2 0", "732829320"),
    ("euh alors c'est le quatre cent quarante-trois soixante et un zéro neuf, quatre-vingt-dix-sept",
     "4436109" "97"),
    ("soixante-dix-sept quatre-vingts zéro onze", "7780011"),
    ("cent deux", "102"),
    ("Mon SIREN, c'est 552 100 554.", "552100554"),
    ("je sais pas", ""),
])
def test_spoken_digits(said, digits):
    assert spoken_digits(said) == digits


@pytest.mark.parametrize("n, words", [
    (0, "zero"), (17, "dix sept"), (21, "vingt et un"), (71, "soixante et onze"),
    (80, "quatre vingt"), (97, "quatre vingt dix sept"), (200, "deux cent"),
    (2023, "deux mille vingt trois"), (14, "quatorze"),
])
def test_int_to_words(n, words):
    assert int_to_words(n) == words
    if n < 1000:   # SIREN groups are said below a thousand
        assert spoken_digits(words) == str(n)


def test_luhn_and_siren():
    assert luhn_ok("732829320") and luhn_ok("552100554")
    assert not luhn_ok("732829321")
    assert siren_from_digits("732829320") == "732829320"
    assert siren_from_digits("73282932000074") == "732829320"   # a SIRET gives its SIREN
    assert siren_from_digits("732829321") is None
    assert siren_from_digits("7328293") is None


def test_normalize_is_one_form_for_every_writer():
    whisper = "J'ai fait ma déclaration il y a 3 semaines, toujours pas de SIRET !"
    vosk = "j'ai fait ma déclaration il y a trois semaines toujours pas de siret"
    assert normalize(whisper) == normalize(vosk)
    assert normalize("Depuis le 1er janvier 2023") == "depuis le premier janvier deux mille vingt trois"
    assert normalize("quatre-vingts") == "quatre vingt"
