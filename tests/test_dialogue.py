"""Dialogue policy, case by case, with the real knowledge base and a scripted classifier.

What the classifier understands is written here (SCRIPT), so a retrain cannot change what
these tests check; the trained classifier has its own tests (test_nlu.py, test_calls.py).
"""

import dataclasses

import pytest
from scripted import ScriptedClassifier

from callbot.dialogue import Dialogue, DialogueSnapshot, State, yes_no
from callbot.events import HangUp, Say, Transfer

# What the classifier understands of each utterance that reaches it (after the dialogue's
# own rules for yes, no and closings): an intent, (intent, "confirm"), or "hors_sujet".
# REQUESTS stand alone (test_nlu.py checks the trained classifier reads them so too);
# IN_CONTEXT are read with what came before (a follow-up, a correction, a reply while the
# SIREN is asked for): their reading depends on the context the dialogue passes.
REQUESTS = {
    "c'est quoi la différence entre le siren et le siret": "difference_siren_siret",
    "c'est quoi un code ape": "code_ape_definition",
    "je cherche mon numéro siret je l'ai perdu": "retrouver_siren_siret",
    "je voudrais parler à un conseiller s'il vous plaît": "parler_conseiller",
    "quelqu'un a créé une entreprise à mon nom sans que je sois au courant":
        "usurpation_identite",
    "ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon numéro "
    "siren": "siren_non_recu",
    "au revoir": "au_revoir",
    "bon ben merci au revoir bonne journée": "au_revoir",
    "comment je fais pour fermer mon auto entreprise": "cessation_activite",
    "comment je fais pour trouver mon code ape": "connaitre_code_ape",
    "comment on fait pour obtenir un numéro siren": "obtenir_siren",
    "je voudrais savoir comment on obtient un numéro siren": "obtenir_siren",
    "merci madame": "remerciement",
    "où est-ce que je télécharge mon avis de situation": "obtenir_avis_situation",
    "quel temps fera-t-il demain à Brest": "hors_sujet",
    "je voudrais fermer ma société": "cessation_activite",
    "je voudrais commander une pizza quatre fromages": "hors_sujet",
    "pardon vous pouvez répéter s'il vous plaît": "repeter",
    "je voudrais savoir comment masquer mes données": "statut_diffusion",
    "je voulais savoir comment masquer mes informations": "statut_diffusion",
    "non mais passez moi un conseiller": "parler_conseiller",
}
IN_CONTEXT = {
    "et pour une association c'est pareil": "siren_association",
    "et pour la rouvrir plus tard": "reprise_activite",
    "je voulais savoir où je trouve le mien": "connaitre_code_ape",
    "je ne l'ai pas": "hors_sujet",
    "je l'ai pas sous la main": "hors_sujet",
    "aucune idée": "hors_sujet",
    "non": "non",
}
SCRIPT = {**REQUESTS, **IN_CONTEXT}


def keys(turn):
    return [e.key for e in turn.events if isinstance(e, Say)]


def ending(turn):
    ends = [e for e in turn.events if isinstance(e, (Transfer, HangUp))]
    return ends[0] if ends else None


@pytest.fixture
def dlg(kb, config):
    d = Dialogue(kb, ScriptedClassifier(SCRIPT), config.dialogue)
    d.start()
    return d


@pytest.fixture
def unsure(kb, config):
    """A dialogue whose classifier is never sure: every understood utterance is medium."""
    d = Dialogue(kb, ScriptedClassifier(SCRIPT, unsure=True), config.dialogue)
    d.start()
    return d


def test_greeting_says_automated_assistant_and_advisor(kb, config):
    d = Dialogue(kb, ScriptedClassifier(SCRIPT), config.dialogue)
    turn = d.start()
    text = turn.bot_text.lower()
    assert turn.caller is None and keys(turn) == ["prompt:greeting"]
    assert "assistant vocal automatique" in text and "sirene" in text and "conseiller" in text
    assert d.state is State.QUESTION


def test_confident_answer_then_another_question(dlg):
    turn = dlg.hear("comment je fais pour trouver mon code ape")
    assert turn.intent == "connaitre_code_ape" and turn.decision == "confident"
    assert keys(turn) == ["answer:connaitre_code_ape", "prompt:another_question"]
    assert dlg.state is State.ANOTHER


def test_no_after_another_question_says_goodbye_and_hangs_up(dlg):
    dlg.hear("c'est quoi la différence entre le siren et le siret")
    turn = dlg.hear("non merci")
    assert keys(turn) == ["answer:au_revoir"]
    assert isinstance(ending(turn), HangUp) and ending(turn).reason == "caller_goodbye"
    assert dlg.state is State.ENDED


def test_goodbye_hangs_up(dlg):
    turn = dlg.hear("bon ben merci au revoir bonne journée")
    assert turn.intent == "au_revoir"
    assert isinstance(ending(turn), HangUp)


def test_thanks_after_an_answer_closes_the_call(dlg):
    dlg.hear("où est-ce que je télécharge mon avis de situation")
    turn = dlg.hear("merci beaucoup c'est très clair")
    assert turn.intent == "remerciement" and keys(turn) == ["prompt:goodbye_after_thanks"]
    assert isinstance(ending(turn), HangUp) and ending(turn).reason == "caller_goodbye"


@pytest.mark.parametrize("closing", ["ok merci", "non ça ira merci", "c'est bon merci au revoir",
                                     "super merci"])
def test_polite_closings_after_an_answer_hang_up(dlg, closing):
    dlg.hear("comment je fais pour fermer mon auto entreprise")
    turn = dlg.hear(closing)
    assert isinstance(ending(turn), HangUp), (closing, turn.intent)


def test_thanks_before_any_answer_asks_for_the_question(dlg):
    turn = dlg.hear("merci madame")
    assert turn.intent == "remerciement" and keys(turn) == ["answer:remerciement"]
    assert ending(turn) is None and dlg.state is State.ANOTHER


@pytest.mark.parametrize("reply", ["oui j'en ai une autre", "oui une dernière question",
                                   "oui"])
def test_yes_with_words_after_another_question_listens(dlg, reply):
    dlg.hear("comment je fais pour fermer mon auto entreprise")
    turn = dlg.hear(reply)
    assert turn.intent == "oui" and keys(turn) == ["prompt:listening"]
    assert dlg.state is State.QUESTION


def test_yes_followed_by_a_question_answers_it(dlg):
    dlg.hear("c'est quoi la différence entre le siren et le siret")
    turn = dlg.hear("oui je voudrais savoir comment masquer mes données")
    assert turn.intent == "statut_diffusion"
    assert keys(turn)[-2:] == ["answer:statut_diffusion", "prompt:another_question"]


def test_follow_up_leans_on_the_previous_answer(dlg):
    """The dialogue gives the classifier the request just answered (reading a follow-up in
    its light is the classifier's job: test_nlu.py)."""
    dlg.hear("comment on fait pour obtenir un numéro siren")
    turn = dlg.hear("et pour une association c'est pareil")
    assert turn.intent == "siren_association"
    text, context = dlg.classifier.calls[-1]
    assert text == "et pour une association c'est pareil"
    assert context.previous_intent == "obtenir_siren"
    assert context.previous_request == "comment on fait pour obtenir un numéro siren"
    dlg.hear("oui")
    dlg.hear("je voudrais fermer ma société")
    assert dlg.hear("et pour la rouvrir plus tard").intent == "reprise_activite"
    assert dlg.classifier.calls[-1][1].previous_intent == "cessation_activite"


def test_a_correction_tells_the_classifier_what_was_wrong(dlg):
    dlg.hear("c'est quoi un code ape")
    dlg.hear("non pas ça je voulais savoir où je trouve le mien")
    text, context = dlg.classifier.calls[-1]
    assert text == "je voulais savoir ou je trouve le mien"       # the rest, normalized
    assert context.rejected == "code_ape_definition"


def test_conversation_replies_are_not_topics_for_follow_ups(dlg):
    dlg.hear("comment je fais pour trouver mon code ape")
    dlg.hear("pardon vous pouvez répéter s'il vous plaît")
    dlg.hear("et pour une association c'est pareil")
    assert dlg.classifier.calls[-1][1].previous_intent == "connaitre_code_ape"


def test_the_snapshot_holds_every_piece_of_conversation_state(dlg):
    """A take-back restores the snapshot: a state field it forgot would leak across."""
    fixed = {"kb", "ids", "classifier", "config", "register"}
    assert set(vars(dlg)) - fixed == {f.name for f in dataclasses.fields(DialogueSnapshot)}
    dlg.hear("comment je fais pour trouver mon code ape")
    snap = dlg.snapshot()
    dlg.hear("au revoir")
    assert dlg.state is State.ENDED and dlg.ending is not None
    dlg.restore(snap)
    assert dlg.state is State.ANOTHER and dlg.ending is None
    assert dlg.intents == ["connaitre_code_ape"] and isinstance(dlg.intents, list)
    assert dlg.snapshot() == snap


def test_correction_after_an_answer(dlg):
    dlg.hear("c'est quoi un code ape")
    turn = dlg.hear("non pas ça je voulais savoir où je trouve le mien")
    assert turn.intent == "connaitre_code_ape"
    assert "answer:connaitre_code_ape" in keys(turn) and ending(turn) is None


def test_yes_after_another_question_listens(dlg):
    dlg.hear("comment je fais pour fermer mon auto entreprise")
    turn = dlg.hear("oui")
    assert keys(turn) == ["prompt:listening"] and dlg.state is State.QUESTION


def test_repeat_replays_last_answer_slowly(dlg):
    first = dlg.hear("je voudrais savoir comment on obtient un numéro siren")
    turn = dlg.hear("pardon vous pouvez répéter s'il vous plaît")
    assert turn.intent == "repeter"
    assert keys(turn) == ["answer:repeter"] + keys(first)
    replay = [e for e in turn.events if isinstance(e, Say)][1:]
    assert all(e.slow for e in replay)
    assert [e.text for e in replay] == [e.text for e in first.events if isinstance(e, Say)]


def test_advisor_request_transfers_at_once(dlg):
    turn = dlg.hear("je voudrais parler à un conseiller s'il vous plaît")
    t = ending(turn)
    assert isinstance(t, Transfer) and t.reason == "caller_request"
    assert keys(turn) == ["answer:parler_conseiller"]
    assert t.context.summary and t.context.siren is None


def test_dtmf_zero_transfers_at_once(dlg):
    turn = dlg.key("0")
    t = ending(turn)
    assert isinstance(t, Transfer) and t.reason == "caller_request"
    assert turn.dtmf == "0" and turn.caller is None


def test_medium_confidence_answers_with_its_topic(unsure):
    """Unsure of a question the bot answers itself: it names the topic and answers at once
    (the caller can correct it); no "did you mean…?" before every right answer."""
    turn = unsure.hear("je cherche mon numéro siret je l'ai perdu")
    assert turn.decision == "confirm"
    assert keys(turn) == ["prompt:implicit_confirm", "answer:retrouver_siren_siret",
                          "prompt:another_question"]
    assert turn.bot_text.startswith("Si votre question porte sur")
    assert unsure.state is State.ANOTHER


USURPATION = "quelqu'un a créé une entreprise à mon nom sans que je sois au courant"


def test_medium_confidence_confirms_a_transfer_then_yes_acts(unsure):
    turn = unsure.hear(USURPATION)
    assert turn.decision == "confirm" and keys(turn) == ["confirm:usurpation_identite"]
    assert "c'est bien ça" in turn.bot_text.lower()
    assert unsure.state is State.CONFIRM
    turn = unsure.hear("oui c'est ça")
    assert keys(turn) == ["answer:usurpation_identite", "prompt:siren_ask"]


def test_medium_confidence_no_asks_to_rephrase(unsure):
    unsure.hear(USURPATION)
    turn = unsure.hear("non pas du tout")
    assert keys(turn) == ["prompt:rephrase_after_no"] and unsure.state is State.QUESTION
    assert ending(turn) is None


def test_no_with_the_right_question_during_confirmation(unsure):
    unsure.hear(USURPATION)
    turn = unsure.hear("non je voulais savoir comment masquer mes informations")
    assert turn.intent == "statut_diffusion" and ending(turn) is None
    assert "answer:statut_diffusion" in keys(turn)


def test_second_misunderstanding_transfers(dlg):
    turn = dlg.hear("quel temps fera-t-il demain à Brest")
    assert turn.intent == "hors_sujet" and keys(turn) == ["prompt:rephrase"]
    assert "conseiller" in turn.bot_text
    turn = dlg.hear("je voudrais commander une pizza quatre fromages")
    t = ending(turn)
    assert isinstance(t, Transfer) and t.reason == "not_understood"
    assert keys(turn) == ["prompt:not_understood_transfer"]


def test_misunderstanding_count_resets_after_understanding(dlg):
    dlg.hear("quel temps fera-t-il demain à Brest")
    dlg.hear("comment je fais pour fermer mon auto entreprise")
    turn = dlg.hear("je voudrais commander une pizza quatre fromages")
    assert ending(turn) is None and keys(turn) == ["prompt:rephrase"]


def test_silence_prompts_then_hangs_up(dlg):
    turn = dlg.silence()
    assert keys(turn) == ["prompt:no_input"] and turn.caller is None
    turn = dlg.silence()
    assert keys(turn) == ["prompt:no_input_goodbye"]
    assert isinstance(ending(turn), HangUp) and ending(turn).reason == "no_input"


def test_speech_between_silences_resets_the_count(dlg):
    dlg.silence()
    dlg.hear("comment je fais pour fermer mon auto entreprise")
    turn = dlg.silence()
    assert ending(turn) is None


PERSONAL = "ça fait deux mois que j'ai déclaré mon activité et j'ai toujours pas reçu mon numéro siren"


def test_personal_case_captures_spoken_siren_and_transfers(dlg):
    turn = dlg.hear(PERSONAL)
    assert turn.intent == "siren_non_recu"
    assert keys(turn) == ["answer:siren_non_recu", "prompt:siren_ask"]
    assert dlg.state is State.SIREN
    turn = dlg.hear("alors c'est le sept cent trente-deux huit cent vingt-neuf trois cent vingt")
    t = ending(turn)
    assert isinstance(t, Transfer) and t.reason == "personal_case"
    assert t.context.siren == "732829320" and t.context.intent == "siren_non_recu"
    assert "siren_non_recu" in t.context.intents
    assert "732829320" in t.context.summary
    assert keys(turn) == ["prompt:siren_ok"]


def test_invalid_siren_is_asked_again_once(dlg):
    dlg.hear(PERSONAL)
    turn = dlg.hear("sept trois deux huit deux neuf trois deux un")   # Luhn key wrong
    assert keys(turn) == ["prompt:siren_invalid"] and ending(turn) is None
    turn = dlg.hear("7 3 2 8 2 9 3 2 0")
    assert ending(turn).context.siren == "732829320"


def test_siren_said_in_several_breaths(dlg):
    dlg.hear(PERSONAL)
    turn = dlg.hear("sept cent trente-deux")
    assert turn.events == [] and dlg.state is State.SIREN     # the bot waits for the rest
    dlg.hear("huit cent vingt-neuf")
    turn = dlg.hear("trois cent vingt")
    assert ending(turn).context.siren == "732829320"


def test_second_invalid_siren_transfers_without_it(dlg):
    dlg.hear(PERSONAL)
    assert keys(dlg.hear("un deux trois quatre cinq six sept huit neuf")) == ["prompt:siren_invalid"]
    turn = dlg.hear("quatre cinq six sept huit neuf un deux trois")
    t = ending(turn)
    assert isinstance(t, Transfer) and t.context.siren is None and t.reason == "personal_case"
    assert keys(turn) == ["prompt:siren_skip"]


def test_silence_during_capture_gives_up_after_two(dlg):
    dlg.hear(PERSONAL)
    assert keys(dlg.silence()) == ["prompt:siren_invalid"]
    turn = dlg.silence()
    assert isinstance(ending(turn), Transfer) and ending(turn).context.siren is None


def test_siren_typed_on_keypad(dlg):
    dlg.hear("quelqu'un a créé une entreprise à mon nom sans que je sois au courant")
    assert dlg.state is State.SIREN
    turns = [dlg.key(d) for d in "552100554"]
    assert all(ending(t) is None for t in turns[:-1])
    assert ending(turns[-1]).context.siren == "552100554"


def test_keypad_zero_is_a_digit_during_capture(dlg):
    dlg.hear(PERSONAL)
    turn = dlg.key("0")
    assert ending(turn) is None and dlg.state is State.SIREN


def test_advisor_during_capture_transfers_at_once(dlg):
    dlg.hear(PERSONAL)
    turn = dlg.hear("non mais passez moi un conseiller")
    t = ending(turn)
    assert isinstance(t, Transfer) and t.reason == "caller_request"
    assert t.context.intent == "siren_non_recu"


@pytest.mark.parametrize("reply", ["je ne l'ai pas", "je l'ai pas sous la main", "aucune idée",
                                   "non"])
def test_caller_without_siren_is_transferred(dlg, reply):
    dlg.hear(PERSONAL)
    turn = dlg.hear(reply)
    t = ending(turn)
    assert isinstance(t, Transfer) and t.context.siren is None
    assert turn.intent == "non" and keys(turn) == ["prompt:siren_skip"]


@pytest.mark.parametrize("said, siren", [
    ("c'est le cinq cinq deux un zéro zéro cinq cinq quatre", "552100554"),  # zéro: a digit
    ("neuf cent nonante sept deux cent vingt zéro trente trois", "997220033"),  # Belgian
])
def test_spoken_siren_forms_during_capture(dlg, said, siren):
    dlg.hear(PERSONAL)
    t = ending(dlg.hear(said))
    assert isinstance(t, Transfer) and t.reason == "personal_case"
    assert t.context.siren == siren


def test_no_input_after_end_does_nothing(dlg):
    dlg.hear("au revoir")
    assert dlg.silence().events == [] and dlg.hear("allo").events == []


@pytest.mark.parametrize("text, expected", [
    ("oui", "oui"), ("ouais c'est ça", "oui"), ("euh oui tout à fait", "oui"),
    ("d'accord", "oui"), ("non", "non"), ("non merci", "non"), ("non c'est bon", "non"),
    ("pas du tout", "non"), ("non mais je voulais savoir pour mon code ape", None),
    ("comment avoir mon siret", None),
])
def test_yes_no_rule(text, expected):
    assert yes_no(text) == expected
