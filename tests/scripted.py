"""ScriptedClassifier: a named fake of the intent classifier, for dialogue-policy tests.

The dialogue's rules (what to do with a confident answer, a medium one, a yes after a
confirmation, a closing after "another question?") are tested on understandings given by
the test, so that retraining the classifier cannot flip a policy test. The real classifier
is tested on its own (tests/test_nlu.py) and in whole calls (tests/test_calls.py).
"""

from __future__ import annotations

from typing import Mapping

from callbot.intents import CONFIDENT, CONFIRM, REJECT, Context, Understanding
from callbot.kb import OUT_OF_SCOPE
from callbot.text import normalize

CONFIDENCE = {CONFIDENT: 0.95, CONFIRM: 0.6, REJECT: 0.2}


class ScriptedClassifier:
    """Returns the understanding its script gives for a text (keys are compared normalized).

    A script entry is an intent id (understood with confidence), ``(intent, "confirm")``, or
    ``"hors_sujet"`` (rejected). ``unsure=True`` turns every confident reading into a
    medium one (the "did you mean…?" path). A text with no entry fails the test and names
    the text: a policy test must say what the classifier understood.
    """

    def __init__(self, script: Mapping[str, str | tuple[str, str]], unsure: bool = False):
        self.script = {normalize(k): v for k, v in script.items()}
        self.unsure = unsure
        self.calls: list[tuple[str, Context | None]] = []

    def classify(self, text: str, context: Context | None = None) -> Understanding:
        self.calls.append((text, context))
        entry = self.script.get(normalize(text))
        if entry is None:
            raise AssertionError(f"the scripted classifier has no understanding for {text!r}")
        intent, decision = entry if isinstance(entry, tuple) else (entry, CONFIDENT)
        if intent == OUT_OF_SCOPE:
            decision = REJECT
        elif self.unsure and decision == CONFIDENT:
            decision = CONFIRM
        confidence = CONFIDENCE[decision]
        return Understanding(text=text, intent=intent, confidence=confidence,
                             alternatives=[(intent, confidence)], decision=decision)
