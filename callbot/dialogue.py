"""The per-call dialogue: one explicit state machine, the same for simulations and real calls.

It receives what the caller did (an utterance, a silence, a key press) and returns a
:class:`~callbot.events.Turn` holding what to say and whether to transfer or hang up. It
never touches audio or SIP, so every policy rule is testable from text alone.

States::

    START ─greeting→ QUESTION ─confident answer→ ANOTHER ("another question?")
                        │  ╰─medium confidence→ CONFIRM ─yes→ answer / ─no→ QUESTION
                        ╰─personal case (transfer intent)→ SIREN ─valid/given up→ ENDED
                        ╰─answer about the caller's company, a register loaded→ LOOKUP_OFFER
    LOOKUP_OFFER ("voulez-vous me donner votre numéro ?") ─yes, digits→ LOOKUP_SIREN
        ─no→ ANOTHER; anything else is read as after ANOTHER
    LOOKUP_SIREN (the SIREN capture) ─valid: the register's answer / given up→ ANOTHER
    any ─advisor asked, DTMF 0, 2nd misunderstanding→ ENDED (transfer)
    any ─goodbye, "no" after ANOTHER, 2nd silence→ ENDED (hang up)
    ENDED (transfer) ─the carrier says it failed→ CALLBACK_OFFER ("shall an advisor call you
        back?") ─yes, caller id known→ ENDED (callback requested, hang up)
                  ─yes, number withheld→ CALLBACK_NUMBER (typed) ─ten digits→ ENDED (same)
                  ─no→ ENDED (hang up with the opening hours)
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from typing import Protocol

from .company import INVALID, CompanyAnswer, CompanyRegister, company_answer
from .config import DialogueConfig
from .events import (CallbackRequested, CompanyLookup, HangUp, Say, Transfer, TransferContext,
                     Turn)
from .intents import CONFIDENT, CONFIRM, REJECT, Context, Understanding
from .kb import OUT_OF_SCOPE, KnowledgeBase
from .phone import french_number, spoken_pairs
from .siren import siren_from_digits, spoken_digits
from .replies import (NO, YES, announces_question, closes, declines_siren, split_reply,
                      yes_no)
from .text import normalize



class State(str, Enum):
    START = "start"
    QUESTION = "question"
    ANOTHER = "another_question"
    CONFIRM = "confirm"
    SIREN = "siren_capture"
    CALLBACK_OFFER = "callback_offer"
    CALLBACK_NUMBER = "callback_number"
    LOOKUP_OFFER = "lookup_offer"
    LOOKUP_SIREN = "lookup_siren"
    ENDED = "ended"


CAPTURES = (State.SIREN, State.LOOKUP_SIREN)   # the states where the SIREN is dictated


@dataclass(frozen=True)
class DialogueSnapshot:
    """Everything a turn changes in a :class:`Dialogue` (its per-call state), frozen."""

    state: State
    not_understood: int
    no_input: int
    siren_failures: int
    digits: str
    pending: str | None
    intents: tuple[str, ...]
    last_utterance: str | None
    intent_utterance: str | None
    topic: str | None
    topic_request: str | None
    last_said: tuple[Say, ...]
    ending: Transfer | HangUp | None
    failed_transfer: Transfer | None
    transfer_failure: str
    caller_number: str | None
    number_failures: int


def _frozen(value):
    return tuple(value) if isinstance(value, list) else value


class Classifier(Protocol):
    def classify(self, text: str, context: Context | None = None) -> Understanding: ...


def control(text: str, intent: str) -> Understanding:
    """A reply read by rule (yes, no, a closing), not by the classifier."""
    return Understanding(text=text, intent=intent, confidence=1.0,
                         alternatives=[(intent, 1.0)], decision=CONFIDENT)


class Dialogue:
    """One call's conversation. Feed it with :meth:`start`, :meth:`hear`, :meth:`silence`
    and :meth:`key`; each returns the Turn to play."""

    def __init__(self, kb: KnowledgeBase, classifier: Classifier, config: DialogueConfig,
                 register: CompanyRegister | None = None):
        self.kb = kb
        self.ids = kb.roles              # the intents the dialogue acts on itself
        self.classifier = classifier
        self.config = config
        # The Sirene register: the caller's number can be looked up while it is available
        # (asked when a look-up could follow, not at every call's start: it is a query).
        self.register = register
        self.state = State.START
        self.not_understood = 0          # consecutive
        self.no_input = 0                # consecutive
        self.siren_failures = 0
        # the number being captured (a SIREN, a callback number): digits given so far, said
        # in groups or typed key by key
        self.digits = ""
        # intent being confirmed, whose transfer waits, or whose look-up is under way
        self.pending: str | None = None
        self.intents: list[str] = []     # understood intents, oldest first
        self.last_utterance: str | None = None
        self.intent_utterance: str | None = None   # what the caller said to reach ``pending``
        self.topic: str | None = None    # the last request answered, for follow-ups
        self.topic_request: str | None = None      # what the caller said to reach it
        self.last_said: list[Say] = []   # what "repeat" replays
        self.ending: Transfer | HangUp | None = None
        # After a failed transfer: the transfer, why it failed, the number to call back
        # (from the call, None when withheld), the keypad entries refused so far.
        self.failed_transfer: Transfer | None = None
        self.transfer_failure = ""
        self.caller_number: str | None = None
        self.number_failures = 0

    # --- sentences ---------------------------------------------------------------------
    def prompt(self, name: str, **fields: str) -> Say:
        return Say(self.kb.prompts[name].format(**fields), f"prompt:{name}")

    def answer(self, intent: str) -> Say:
        return Say(self.kb.intents[intent].answer, f"answer:{intent}")

    def confirm(self, intent: str) -> Say:
        topic = self.kb.intents[intent].topic
        return Say(self.kb.prompts["confirm"].format(topic=topic), f"confirm:{intent}")

    def _speak(self, turn: Turn, *says: Say, remember: bool = True) -> None:
        turn.events.extend(says)
        turn.answers += sum(1 for s in says if s.key.startswith("answer:")
                            and s.key[7:] not in self.ids.conversation)
        if remember:
            self.last_said = list(says)

    def _end(self, turn: Turn, event: Transfer | HangUp) -> None:
        turn.events.append(event)
        self.ending = event
        self.state = State.ENDED

    def _transfer(self, turn: Turn, reason: str, intent: str | None, siren: str | None = None,
                  register_facts: str = "") -> None:
        title = self.kb.intents[intent].title if intent in self.kb.intents else None
        parts = []
        if reason == "caller_request":
            parts.append("L'appelant a demandé un conseiller")
        elif reason == "not_understood":
            parts.append("Demande non comprise après plusieurs essais")
        else:
            parts.append(f"Cas personnel : {title}" if title else "Cas personnel")
        topics = [self.kb.intents[i].title for i in self.intents
                  if i in self.kb.intents and i != self.ids.advisor]
        if topics and reason != "personal_case":
            parts.append("sujets : " + ", ".join(dict.fromkeys(topics)))
        parts.append(f"SIREN {siren}" if siren else "SIREN non communiqué")
        if register_facts:
            parts.append(register_facts)
        said = self.intent_utterance if reason == "personal_case" else self.last_utterance
        if said:
            parts.append(f"demande : « {said} »")
        context = TransferContext(reason=reason, intent=intent, intents=tuple(self.intents),
                                  siren=siren, summary=" ; ".join(parts) + ".",
                                  last_utterance=self.last_utterance)
        self._end(turn, Transfer(reason, context))

    # --- inputs --------------------------------------------------------------------------
    def start(self) -> Turn:
        turn = Turn(caller=None)
        self._speak(turn, self.prompt("greeting"))
        self.state = State.QUESTION
        turn.state = self.state.value
        return turn

    def hear(self, text: str) -> Turn:
        """The caller said ``text`` (a final transcript, or typed in a simulation)."""
        turn = Turn(caller=text)
        if self.state is State.ENDED:
            return turn
        self.no_input = 0
        self.last_utterance = text
        if self.state in CAPTURES:
            self._hear_siren(turn, text)
        elif self.state is State.CALLBACK_OFFER:
            self._hear_callback_offer(turn, text)
        elif self.state is State.CALLBACK_NUMBER:
            self._hear_number(turn, text)
        elif self.state is State.LOOKUP_OFFER:
            self._hear_lookup_offer(turn, text)
        else:
            u = self._understand(text)
            turn.intent, turn.confidence = u.intent, u.confidence
            turn.alternatives, turn.decision = u.alternatives, u.decision
            self._route(turn, u)
        turn.state = self.state.value
        return turn

    def snapshot(self) -> "DialogueSnapshot":
        """The conversation as it is now, to :meth:`restore` if a turn is taken back."""
        return DialogueSnapshot(**{f.name: _frozen(getattr(self, f.name))
                                   for f in fields(DialogueSnapshot)})

    def restore(self, snapshot: "DialogueSnapshot") -> None:
        for f in fields(DialogueSnapshot):
            value = getattr(snapshot, f.name)
            setattr(self, f.name, list(value) if isinstance(value, tuple) else value)

    def complete(self, text: str) -> bool:
        """Would ``text``, heard now, get a definite reply (not "please rephrase", not "did
        you mean...")? The turn taker ends the caller's turn early when it would. Never while
        a SIREN is dictated: callers pause between digit groups. No state is changed."""
        if self.state in (State.ENDED, State.START, State.CALLBACK_NUMBER) \
                or self.state in CAPTURES:
            return False
        if self.state in (State.CALLBACK_OFFER, State.LOOKUP_OFFER):
            return yes_no(text) is not None
        return self._understand(text).decision == CONFIDENT

    def silence(self) -> Turn:
        """The caller said nothing for the no-input time after the bot stopped speaking."""
        turn = Turn(caller=None)
        if self.state is State.ENDED:
            return turn
        if self.state in CAPTURES:
            self._siren_failed(turn)
        elif self.state is State.CALLBACK_NUMBER:
            self._number_failed(turn)
        else:
            self.no_input += 1
            if self.no_input >= self.config.no_input_limit:
                self._speak(turn, self.prompt("no_input_goodbye"))
                self._end(turn, HangUp("no_input"))
            elif self.state is State.CONFIRM and self.pending:
                self._speak(turn, self.confirm(self.pending))
            elif self.state is State.CALLBACK_OFFER:
                self._speak(turn, self.prompt("callback_offer_again"))
            elif self.state is State.LOOKUP_OFFER:
                self._speak(turn, self.prompt("lookup_offer"))
            else:
                self._speak(turn, self.prompt("no_input"))
        turn.state = self.state.value
        return turn

    def key(self, digit: str) -> Turn:
        """A DTMF key. 0 asks for an advisor, except while the SIREN or a callback number is
        typed; after a failed transfer, 1 accepts the callback and 2 declines it; when the
        bot offers a look-up, the caller may start typing the number at once."""
        turn = Turn(caller=None, dtmf=digit)
        if self.state is State.ENDED:
            return turn
        self.no_input = 0
        if self.state is State.LOOKUP_OFFER and digit.isdigit() and digit != "0":
            self._start_lookup(turn, ask=False)
        if self.state in CAPTURES or self.state is State.CALLBACK_NUMBER:
            if self.state in CAPTURES:
                turn.intent = "siren"        # a key of the number (redacted in exports)
            if digit == "*":
                self.digits = ""
            elif digit == "#":
                self._check_digits(turn)
            elif digit.isdigit():
                self._add_digits(turn, digit)
        elif self.state is State.CALLBACK_OFFER:
            if digit == "1":
                self._accept_callback(turn)
            elif digit == "2":
                self._decline_callback(turn)
            else:
                self._speak(turn, self.prompt("callback_offer_again"))
        elif digit == "0":
            self.intents.append(self.ids.advisor)
            self._speak(turn, self.answer(self.ids.advisor))
            self._transfer(turn, "caller_request", self.ids.advisor)
        turn.state = self.state.value
        return turn

    def transfer_failed(self, why: str, caller_number: str | None) -> Turn:
        """The carrier could not put the caller through (the advisors' queue refused, did
        not answer, or could not be reached): offer a callback instead of ending the call.
        ``caller_number`` is the caller id of the call (None or not a French number: the
        caller types one). Only a call that ended in a transfer can fail that way."""
        turn = Turn(caller=None, decision="transfer_failed")
        if self.state is not State.ENDED or not isinstance(self.ending, Transfer):
            return turn
        self.failed_transfer, self.ending = self.ending, None
        self.transfer_failure = why
        self.caller_number = french_number(caller_number or "")
        self.no_input = self.not_understood = self.number_failures = 0
        self.digits = ""
        self._speak(turn, self.prompt("callback_offer"))
        self.state = State.CALLBACK_OFFER
        turn.state = self.state.value
        return turn

    # --- understanding -------------------------------------------------------------------
    def _context(self, rejected: str | None = None) -> Context:
        return Context(previous_intent=self.topic, previous_request=self.topic_request,
                       rejected=rejected)

    def _understand(self, text: str) -> Understanding:
        """Read ``text`` against what the bot just asked (the state)."""
        reply = split_reply(text)
        if self.state is State.CONFIRM:
            # "votre question porte sur X, c'est bien ça ?"
            yn = yes_no(text)
            if yn or (reply.head == YES and not reply.correction):
                return control(text, self.ids.no if yn == NO else self.ids.yes)
            if reply.head == NO and reply.rest:       # "non, je voulais savoir…"
                u = self.classifier.classify(reply.rest, self._context(rejected=self.pending))
                return u if u.decision != REJECT else control(text, self.ids.no)
            return self.classifier.classify(text, self._context())
        if self.state is State.ANOTHER:
            # "Avez-vous une autre question ?"
            yn = yes_no(text)
            if yn == NO:
                return control(text, self.ids.no)
            words = normalize(text).split()
            if closes(text) and not (yn == YES and "merci" not in words):
                # "ok merci", "c'est bon j'ai ma réponse", "non merci au revoir": the
                # caller is done ("oui" alone, though, opens a question).
                ids = self.ids
                return control(text, ids.goodbye if "revoir" in words else ids.no
                               if reply.head == NO else ids.thanks if "merci" in words
                               else ids.no)
            if yn == YES:
                return control(text, self.ids.yes)
            if reply.head == YES:
                if announces_question(reply.rest) or not reply.rest:
                    return control(text, self.ids.yes)
                u = self.classifier.classify(reply.rest, self._context())
                # "oui euh attendez" is a yes; three words or more not understood are a
                # question to rephrase, not a yes.
                return u if u.decision != REJECT or len(reply.rest.split()) >= 3 \
                    else control(text, self.ids.yes)
            if reply.head == NO and not reply.correction:
                u = self.classifier.classify(reply.rest, self._context())
                if u.decision != REJECT and u.intent not in self.ids.closings + (self.ids.yes,):
                    return u                          # "non mais j'aimerais savoir aussi…"
                return control(text, self.ids.no)
        if reply.correction and reply.rest:
            return self.classifier.classify(reply.rest, self._context(rejected=self.topic))
        return self.classifier.classify(text, self._context())

    def _route(self, turn: Turn, u: Understanding) -> None:
        if self.state is State.CONFIRM and u.decision != REJECT and u.intent in (self.ids.yes,
                                                                                 self.ids.no):
            pending, self.pending = self.pending, None
            if u.intent == self.ids.yes and pending:
                self._act(turn, pending)
            else:
                self._speak(turn, self.prompt("rephrase_after_no"))
                self.state = State.QUESTION
            return
        if u.decision == REJECT or u.intent == OUT_OF_SCOPE:
            self._not_understood(turn)
        elif u.decision == CONFIRM and self._costly(u.intent):
            self.pending = u.intent
            self._speak(turn, self.confirm(u.intent))
            self.state = State.CONFIRM
        else:
            self._act(turn, u.intent, hedged=u.decision == CONFIRM)

    def _costly(self, intent: str) -> bool:
        """Worth a "did you mean…?" when unsure: what cannot be undone (a transfer with its
        SIREN capture, hanging up). Any other answer is given at once, introduced by its
        topic, and a caller who meant something else says so ("non pas ça…"): one wrong
        answer costs less than a question before every right one."""
        if intent == self.ids.goodbye:
            return True
        return intent in self.kb.intents and self.kb.intents[intent].transfers \
            and intent != self.ids.advisor

    def _not_understood(self, turn: Turn) -> None:
        self.not_understood += 1
        self.pending = None
        if self.not_understood >= self.config.not_understood_limit:
            self._speak(turn, self.prompt("not_understood_transfer"))
            self._transfer(turn, "not_understood", None)
        else:
            self._speak(turn, self.prompt("rephrase"))
            self.state = State.QUESTION

    def _act(self, turn: Turn, intent: str, hedged: bool = False) -> None:
        """Carry out an understood intent (``hedged``: not quite sure, so the answer starts
        by naming its topic)."""
        self.not_understood = 0
        self.pending = None
        self.intents.append(intent)
        if self.last_utterance and intent in self.kb.intents and self.kb.intents[intent].transfers:
            self.intent_utterance = self.last_utterance
        ids = self.ids
        if intent in self.kb.intents and intent not in ids.conversation:
            self.topic, self.topic_request = intent, self.last_utterance
        after_question = self.state is State.ANOTHER
        if intent == ids.repeat:
            replay = [Say(s.text, s.key, slow=True) for s in self.last_said]
            if not replay:
                replay = [Say(self.prompt("greeting").text, "prompt:greeting", slow=True)]
            self._speak(turn, self.answer(ids.repeat), remember=False)
            self._speak(turn, *replay, remember=False)
            return
        if intent == ids.goodbye or (intent in ids.closings and after_question):
            closing = (self.prompt("goodbye_after_thanks") if intent == ids.thanks
                       else self.answer(ids.goodbye))
            self._speak(turn, closing)
            self._end(turn, HangUp("caller_goodbye"))
        elif intent == ids.yes:
            self._speak(turn, self.prompt("listening") if after_question
                        else self.answer(ids.yes))
            self.state = State.QUESTION
        elif intent == ids.no:
            self._speak(turn, self.answer(ids.no))
            self.state = State.QUESTION
        elif intent == ids.thanks:
            self._speak(turn, self.answer(ids.thanks))
            self.state = State.ANOTHER
        elif intent == ids.greeting:
            self._speak(turn, self.answer(ids.greeting))
            self.state = State.QUESTION
        elif intent == ids.advisor:
            self._speak(turn, self.answer(ids.advisor))
            self._transfer(turn, "caller_request", ids.advisor)
        elif self.kb.intents[intent].transfers:
            self._speak(turn, self.answer(intent), self.prompt("siren_ask"))
            self.pending = intent
            self.siren_failures = 0
            self.digits = ""
            self.state = State.SIREN
        else:
            topic = [self.prompt("implicit_confirm", topic=self.kb.intents[intent].topic)
                     ] if hedged else []
            if self._offers_lookup(intent):
                self._speak(turn, *topic, self.answer(intent), self.prompt("lookup_offer"))
                self.pending = intent
                self.state = State.LOOKUP_OFFER
            else:
                self._speak(turn, *topic, self.answer(intent), self.prompt("another_question"))
                self.state = State.ANOTHER

    # --- a number given in groups or key by key (a SIREN, a callback number) ------------
    def _add_digits(self, turn: Turn, digits: str) -> None:
        """Callers pause between groups and type key by key: digits add up across turns
        until the number is long enough (9 for a SIREN, 10 for a phone number), then it is
        checked; # checks it sooner, * starts it again."""
        self.digits += digits
        if len(self.digits) >= (10 if self.state is State.CALLBACK_NUMBER else 9):
            self._check_digits(turn)

    def _check_digits(self, turn: Turn) -> None:
        digits, self.digits = self.digits, ""
        if self.state is State.CALLBACK_NUMBER:
            self._check_number(turn, digits)
        else:
            self._check_siren(turn, digits)

    # --- SIREN capture ---------------------------------------------------------------------
    def _hear_siren(self, turn: Turn, text: str) -> None:
        """ "Dites-moi votre numéro Siren": digits first (a "zéro" is a digit here, not a
        request for an advisor), then a refusal, then a request for an advisor."""
        digits = spoken_digits(text)
        if len(digits) >= 2 or (digits and len(normalize(text).split()) <= 2):
            # Callers pause between groups: digits add up across utterances until nine.
            turn.intent, turn.confidence, turn.decision = "siren", None, "capture"
            self._add_digits(turn, digits)
            return
        u = self.classifier.classify(text)
        turn.intent, turn.confidence = u.intent, u.confidence
        turn.alternatives, turn.decision = u.alternatives, u.decision
        if u.intent == self.ids.advisor and u.decision != REJECT:
            self.intents.append(self.ids.advisor)
            self._speak(turn, self.prompt("transfer_now"))
            self._transfer(turn, "caller_request", self.pending)
            return
        if yes_no(text) == NO or declines_siren(text):
            turn.intent, turn.decision = self.ids.no, CONFIDENT
            if self.state is State.LOOKUP_SIREN:
                self._lookup_given_up(turn)
                return
            self._speak(turn, self.prompt("siren_skip"))
            self._transfer(turn, "personal_case", self.pending)
            return
        self._siren_failed(turn)

    def _check_siren(self, turn: Turn, digits: str) -> None:
        siren = siren_from_digits(digits)
        if self.state is State.LOOKUP_SIREN:
            self._look_up(turn, digits, siren)
        elif siren:
            says, facts = [], ""
            if self.register is not None and self.register.available:
                found = self._register_answer(turn, siren)
                facts = found.advisor
                if self.pending in self.config.lookup_intents:
                    says = list(found.says)   # the caller hears it before the transfer
            self._speak(turn, *says, self.prompt("siren_ok"))
            self._transfer(turn, "personal_case", self.pending, siren, facts)
        else:
            self._siren_failed(turn)

    def _siren_failed(self, turn: Turn) -> None:
        self.siren_failures += 1
        self.digits = ""
        if self.siren_failures >= self.config.siren_attempts and \
                self.state is State.LOOKUP_SIREN:
            self._lookup_given_up(turn)
        elif self.siren_failures >= self.config.siren_attempts:
            self._speak(turn, self.prompt("siren_skip"))
            self._transfer(turn, "personal_case", self.pending)
        else:
            self._speak(turn, self.prompt("siren_invalid"))

    # --- callback after a failed transfer -------------------------------------------------
    def _hear_callback_offer(self, turn: Turn, text: str) -> None:
        """ "Voulez-vous qu'un conseiller vous rappelle ?": a yes or a no, read as the
        confirmations are (rules first, then the classifier's yes/no intents)."""
        ids = self.ids
        reply = split_reply(text)
        answer = yes_no(text) or (reply.head if not reply.correction else None)
        if answer is None:
            u = self.classifier.classify(text)
            turn.intent, turn.confidence = u.intent, u.confidence
            turn.alternatives, turn.decision = u.alternatives, u.decision
            if u.decision != REJECT and u.intent == ids.yes:
                answer = YES
            elif u.decision != REJECT and u.intent in (ids.no, ids.goodbye):
                answer = NO
        else:
            u = control(text, ids.yes if answer == YES else ids.no)
            turn.intent, turn.confidence = u.intent, u.confidence
            turn.alternatives, turn.decision = u.alternatives, u.decision
        if answer == YES:
            self._accept_callback(turn)
        elif answer == NO:
            self._decline_callback(turn)
        else:
            self.not_understood += 1
            if self.not_understood >= self.config.not_understood_limit:
                self._decline_callback(turn)
            else:
                self._speak(turn, self.prompt("callback_offer_again"))

    def _accept_callback(self, turn: Turn) -> None:
        if self.caller_number:
            self._request_callback(turn, self.caller_number, "caller_id")
        else:
            self._speak(turn, self.prompt("callback_number_ask"))
            self.digits = ""
            self.state = State.CALLBACK_NUMBER

    def _decline_callback(self, turn: Turn) -> None:
        self._speak(turn, self.prompt("callback_declined"))
        self._end(turn, HangUp("callback_declined"))

    def _request_callback(self, turn: Turn, number: str, source: str) -> None:
        """Say on which number the advisor will call, record the request, hang up."""
        context = self.failed_transfer.context if self.failed_transfer else None
        digits = [Say(pair, "number") for pair in spoken_pairs(number)]
        self._speak(turn, self.prompt("callback_confirm"), *digits,
                    self.prompt("callback_confirm_end"))
        turn.events.append(CallbackRequested(
            number=number, source=source, reason=self.transfer_failure,
            intent=context.intent if context else None,
            siren=context.siren if context else None,
            summary=context.summary if context else ""))
        self._end(turn, HangUp("callback_requested"))

    def _hear_number(self, turn: Turn, text: str) -> None:
        """The number was asked for on the keypad, but digits said aloud count too; a
        refusal ends the call without a callback."""
        digits = spoken_digits(text)
        if digits:
            turn.intent, turn.confidence, turn.decision = "phone_number", None, "capture"
            self._add_digits(turn, digits)
        elif yes_no(text) == NO or declines_siren(text):
            turn.intent, turn.decision = self.ids.no, CONFIDENT
            self._decline_callback(turn)
        else:
            self._number_failed(turn)

    def _check_number(self, turn: Turn, digits: str) -> None:
        number = french_number(digits)
        if number:
            self._request_callback(turn, number, "keypad")
        else:
            self._number_failed(turn)

    def _number_failed(self, turn: Turn) -> None:
        self.number_failures += 1
        self.digits = ""
        if self.number_failures >= self.config.number_attempts:
            self._speak(turn, self.prompt("callback_number_skip"))
            self._end(turn, HangUp("callback_no_number"))
        else:
            self._speak(turn, self.prompt("callback_number_invalid"))

    # --- the caller's company in the register ---------------------------------------------
    def _offers_lookup(self, intent: str) -> bool:
        """After this answer, offer to look the caller's number up? Only with a register,
        and for the answers that depend on the company (``dialogue.lookup_intents``)."""
        return self.register is not None and intent in self.config.lookup_intents \
            and self.register.available

    def _hear_lookup_offer(self, turn: Turn, text: str) -> None:
        """ "Voulez-vous me donner votre numéro ?": digits are the number itself; a yes asks
        for it; a no, a thank-you or a new question are read as after "Avez-vous une autre
        question ?", which the offer stands for."""
        digits = spoken_digits(text)
        if len(digits) >= 2:
            self._start_lookup(turn, ask=False)
            self._hear_siren(turn, text)
            return
        self.state = State.ANOTHER
        u = self._understand(text)
        turn.intent, turn.confidence = u.intent, u.confidence
        turn.alternatives, turn.decision = u.alternatives, u.decision
        understood = u.decision != REJECT
        reply = split_reply(text)
        if (understood and u.intent == self.ids.yes and not announces_question(reply.rest)) \
                or (reply.head == YES and not reply.correction and not understood):
            # "oui", "d'accord", "oui je veux bien" (a yes whose rest means nothing more)
            self._start_lookup(turn, ask=True)
        elif understood and u.intent == self.ids.no:
            self.pending = None
            self._speak(turn, self.prompt("lookup_declined"), self.prompt("another_question"))
        elif understood and u.intent == self.ids.repeat:
            self._act(turn, u.intent)
            self.state = State.LOOKUP_OFFER
        else:
            self.pending = None
            self._route(turn, u)

    def _start_lookup(self, turn: Turn, ask: bool) -> None:
        """Into the SIREN capture, for a look-up (``ask``: say what to give)."""
        if ask:
            self._speak(turn, self.prompt("lookup_ask"))
        self.siren_failures = 0
        self.digits = ""
        self.state = State.LOOKUP_SIREN

    def _register_answer(self, turn: Turn, siren: str) -> CompanyAnswer:
        """Look ``siren`` up, record it in the turn, and word the answer."""
        assert self.register is not None
        lookup = self.register.lookup(siren)
        found = company_answer(lookup, self.kb.prompts,
                               reachable=lookup.found or self.register.available)
        turn.events.append(CompanyLookup(siren, found.result))
        return found

    def _look_up(self, turn: Turn, digits: str, siren: str | None) -> None:
        """The number is complete: answer from the register, or ask again as the capture
        does for a wrong key (the failed attempt is recorded too)."""
        if siren is None:                      # a wrong Luhn key: not worth a look-up
            turn.events.append(CompanyLookup(digits, INVALID))
            self._siren_failed(turn)
            return
        found = self._register_answer(turn, siren)
        if found.result == INVALID:            # refused by the register's own checks
            self._siren_failed(turn)
            return
        self._speak(turn, *found.says, self.prompt("another_question"))
        self.pending = None
        self.state = State.ANOTHER

    def _lookup_given_up(self, turn: Turn) -> None:
        self._speak(turn, self.prompt("lookup_skip"), self.prompt("another_question"))
        self.pending = None
        self.digits = ""
        self.state = State.ANOTHER
