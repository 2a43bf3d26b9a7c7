"""The SIRENE knowledge base: loading the human-edited files of ``kb/`` and checking them.

Loading refuses what cannot be read (bad TOML, a missing key) with the file and line;
:func:`check_kb` then reports what is readable but wrong (unknown or missing ids, duplicate
phrasings across intents, answers too long to hear, facts the answer does not say).
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from .errors import KbError
from .text import normalize

OUT_OF_SCOPE = "hors_sujet"
RESOLUTIONS = ("bot", "transfer")
# Spoken French at a telephone pace: about 2.6 words per second (156 words per minute).
WORDS_PER_SECOND = 2.6
MAX_ANSWER_SECONDS = 25.0
MIN_PHRASINGS = 25
MIN_OUT_OF_SCOPE = 150
REQUIRED_PROMPTS = (
    "greeting", "another_question", "confirm", "rephrase", "rephrase_after_no",
    "not_understood_transfer", "no_input", "no_input_goodbye", "listening",
    "siren_ask", "siren_invalid", "siren_ok", "siren_skip", "transfer_now",
    "goodbye_after_thanks", "implicit_confirm",
    "callback_offer", "callback_offer_again", "callback_number_ask", "callback_number_invalid",
    "callback_confirm", "callback_confirm_end", "callback_declined", "callback_number_skip",
)
TOPIC_PROMPTS = ("confirm", "implicit_confirm")   # said with an intent's topic
_URL = re.compile(r"\b[\w-]+\.(fr|com|org|net|gouv|io|eu)\b|https?://|www\.", re.I)


@dataclass(frozen=True)
class Roles:
    """The intents the dialogue acts on itself, named in the KB by ``role = "..."`` in their
    file: the dialogue knows roles, the KB says which intent plays each. Every other intent
    is a topic, answered from its file."""

    greeting: str     # "bonjour": answered, then the bot listens
    thanks: str       # "merci": closes the call after "another question?"
    goodbye: str      # "au revoir": ends the call
    repeat: str       # "pardon ?": the last answer again, slowly
    advisor: str      # "un conseiller": transfer at once
    yes: str          # a yes (confirmations, "another question?")
    no: str           # a no

    @property
    def closings(self) -> tuple[str, ...]:
        """After "Avez-vous une autre question ?", these end the call."""
        return (self.thanks, self.goodbye, self.no)

    @property
    def conversation(self) -> frozenset[str]:
        """About the conversation itself: not a topic a follow-up could lean on."""
        return frozenset(getattr(self, f.name) for f in fields(self))


ROLE_NAMES = tuple(f.name for f in fields(Roles))


@dataclass(frozen=True)
class Fact:
    text: str
    says: tuple[str, ...]


@dataclass(frozen=True)
class Intent:
    id: str
    title: str
    resolution: str
    topic: str
    answer: str
    facts: tuple[Fact, ...]
    source: Path
    role: str | None = None   # one of ROLE_NAMES when the dialogue acts on it itself

    @property
    def transfers(self) -> bool:
        return self.resolution == "transfer"


@dataclass(frozen=True)
class Phrasing:
    text: str
    intent: str
    source: Path
    line: int


@dataclass(frozen=True)
class Issue:
    level: str          # "error" or "warning"
    where: str          # "kb/intents/x.toml" or "kb/phrasings/x.txt:12"
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


@dataclass
class KnowledgeBase:
    root: Path
    taxonomy: list[dict]
    intents: dict[str, Intent]
    phrasings: list[Phrasing]
    prompts: dict[str, str]
    roles: Roles
    unknown_files: list[Path] = field(default_factory=list)

    @property
    def taxonomy_ids(self) -> list[str]:
        return [t["id"] for t in self.taxonomy]

    def phrasings_of(self, intent: str) -> list[Phrasing]:
        return [p for p in self.phrasings if p.intent == intent]

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root.parent))
        except ValueError:
            return str(path)


def _toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)"
        m = re.search(r"line (\d+)", str(exc))
        where = f"{path}:{m.group(1)}" if m else str(path)
        raise KbError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise KbError(f"{path}: not UTF-8 text") from None


def _str(data: dict, key: str, path: Path) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise KbError(f"{path}: missing or empty string '{key}'")
    return " ".join(value.split())


def load_intent(path: Path) -> Intent:
    data = _toml(path)
    facts = []
    raw_facts = data.get("facts", [])
    if not isinstance(raw_facts, list):
        raise KbError(f"{path}: 'facts' must be a list of [[facts]] tables")
    for i, f in enumerate(raw_facts, 1):
        says = f.get("says") if isinstance(f, dict) else None
        if not isinstance(says, list) or not all(isinstance(s, str) for s in says):
            raise KbError(f"{path}: fact {i}: 'says' must be a list of strings")
        facts.append(Fact(text=str(f.get("text", "")), says=tuple(says)))
    role = data.get("role")
    if role is not None and role not in ROLE_NAMES:
        raise KbError(f"{path}: role '{role}' is not one of {', '.join(ROLE_NAMES)}")
    return Intent(
        id=_str(data, "id", path),
        title=_str(data, "title", path),
        resolution=_str(data, "resolution", path),
        topic=_str(data, "topic", path),
        answer=_str(data, "answer", path),
        facts=tuple(facts),
        source=path,
        role=role,
    )


def load_phrasings(path: Path, intent: str) -> list[Phrasing]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise KbError(f"{path}: not UTF-8 text") from None
    for n, line in enumerate(lines, 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        out.append(Phrasing(text=s, intent=intent, source=path, line=n))
    return out


def load_kb(root: Path) -> KnowledgeBase:
    """Read ``kb/``; raises KbError naming the file (and line) of the first unreadable file."""
    root = Path(root)
    if not root.is_dir():
        raise KbError(f"knowledge base folder {root} does not exist (set paths.kb)")
    tax_path = root / "taxonomy.json"
    try:
        taxonomy = json.loads(tax_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KbError(f"{tax_path}: missing (the intent contract)") from None
    except json.JSONDecodeError as exc:
        raise KbError(f"{tax_path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(taxonomy, list) or not all(isinstance(t, dict) and "id" in t for t in taxonomy):
        raise KbError(f"{tax_path}: expected a list of intents with an 'id'")

    intents: dict[str, Intent] = {}
    for path in sorted((root / "intents").glob("*.toml")):
        intent = load_intent(path)
        if intent.id in intents:
            raise KbError(f"{path}: intent id '{intent.id}' already defined in "
                          f"{intents[intent.id].source}")
        intents[intent.id] = intent

    phrasings: list[Phrasing] = []
    unknown: list[Path] = []
    for path in sorted((root / "phrasings").glob("*.txt")):
        phrasings.extend(load_phrasings(path, path.stem))

    prompts_path = root / "prompts.toml"
    if not prompts_path.exists():
        raise KbError(f"{prompts_path}: missing (the bot's own sentences)")
    raw_prompts = _toml(prompts_path)
    prompts = {}
    for key, value in raw_prompts.items():
        if not isinstance(value, str):
            raise KbError(f"{prompts_path}: prompt '{key}' must be a string")
        prompts[key] = " ".join(value.split())
    for path in sorted(root.iterdir()):
        if path.name not in ("taxonomy.json", "intents", "phrasings", "prompts.toml", "README.md"):
            unknown.append(path)
    return KnowledgeBase(root=root, taxonomy=taxonomy, intents=intents, phrasings=phrasings,
                         prompts=prompts, roles=_roles(root, intents), unknown_files=unknown)


def _roles(root: Path, intents: dict[str, Intent]) -> Roles:
    """Which intent plays each role: exactly one per role."""
    found: dict[str, Intent] = {}
    for intent in intents.values():
        if intent.role is None:
            continue
        if intent.role in found:
            raise KbError(f"{intent.source}: role '{intent.role}' is already played by "
                          f"{found[intent.role].source}: one intent per role")
        found[intent.role] = intent
    missing = [r for r in ROLE_NAMES if r not in found]
    if missing:
        raise KbError(f"{root / 'intents'}: no intent has role {', '.join(map(repr, missing))}: "
                      f"add e.g. role = \"{missing[0]}\" to the intent file the dialogue "
                      f"should use for it")
    return Roles(**{r: found[r].id for r in ROLE_NAMES})


def spoken_seconds(text: str) -> float:
    return len(normalize(text).split()) / WORDS_PER_SECOND


def check_kb(kb: KnowledgeBase) -> list[Issue]:
    """Everything wrong with a loaded KB, errors first. An empty list means it is sound."""
    issues: list[Issue] = []
    err = lambda where, msg: issues.append(Issue("error", where, msg))  # noqa: E731
    warn = lambda where, msg: issues.append(Issue("warning", where, msg))  # noqa: E731
    tax = {t["id"]: t for t in kb.taxonomy}

    for iid, intent in kb.intents.items():
        where = kb.rel(intent.source)
        if intent.source.stem != iid:
            err(where, f"id '{iid}' does not match the file name '{intent.source.stem}'")
        if iid not in tax:
            err(where, f"unknown intent id '{iid}' (not in taxonomy.json)")
            continue
        t = tax[iid]
        if intent.resolution not in RESOLUTIONS:
            err(where, f"resolution '{intent.resolution}' must be bot or transfer")
        elif intent.resolution != t.get("resolution"):
            err(where, f"resolution '{intent.resolution}' differs from taxonomy.json "
                       f"('{t.get('resolution')}')")
        secs = spoken_seconds(intent.answer)
        if secs > MAX_ANSWER_SECONDS:
            err(where, f"answer too long when spoken: about {secs:.0f} s "
                       f"({len(normalize(intent.answer).split())} words, limit "
                       f"{MAX_ANSWER_SECONDS:.0f} s)")
        if _URL.search(intent.answer):
            err(where, "answer holds a written web address; spell it the way one says it "
                       "('formalités point entreprises point gouv point fr')")
        if re.search(r"\d", intent.answer):
            warn(where, "answer holds digits; write numbers in words")
        facts = t.get("facts", [])
        if len(intent.facts) != len(facts):
            err(where, f"{len(intent.facts)} [[facts]] blocks for {len(facts)} facts in "
                       f"taxonomy.json")
        answer_norm = f" {normalize(intent.answer)} "
        for i, fact in enumerate(intent.facts):
            label = facts[i] if i < len(facts) else f"fact {i + 1}"
            if not fact.says:
                err(where, f"missing fact: no 'says' for «{label}»")
            for snippet in fact.says:
                if f" {normalize(snippet)} " not in answer_norm:
                    err(where, f"missing fact: the answer does not say «{snippet}» "
                               f"(for «{label}»)")
    for iid in tax:
        if iid not in kb.intents:
            err(kb.rel(kb.root / "intents" / f"{iid}.toml"), f"missing intent file for '{iid}'")

    known = set(tax) | {OUT_OF_SCOPE}
    seen: dict[str, Phrasing] = {}
    counts: dict[str, int] = {}
    for p in kb.phrasings:
        where = f"{kb.rel(p.source)}:{p.line}"
        if p.intent not in known:
            err(where, f"phrasings for unknown intent '{p.intent}'")
            continue
        counts[p.intent] = counts.get(p.intent, 0) + 1
        key = normalize(p.text)
        if not key:
            err(where, "empty phrasing once normalized")
            continue
        if key in seen:
            other = seen[key]
            if other.intent != p.intent:
                err(where, f"same phrasing as {kb.rel(other.source)}:{other.line} "
                           f"(intent '{other.intent}')")
            else:
                warn(where, f"duplicate of line {other.line}")
            continue
        seen[key] = p
    for iid in tax:
        n = counts.get(iid, 0)
        if n < MIN_PHRASINGS:
            err(kb.rel(kb.root / "phrasings" / f"{iid}.txt"),
                f"{n} training phrasings for '{iid}', at least {MIN_PHRASINGS} needed")
    n = counts.get(OUT_OF_SCOPE, 0)
    if n < MIN_OUT_OF_SCOPE:
        err(kb.rel(kb.root / "phrasings" / f"{OUT_OF_SCOPE}.txt"),
            f"{n} out-of-scope phrasings, at least {MIN_OUT_OF_SCOPE} needed")

    prompts_where = kb.rel(kb.root / "prompts.toml")
    for key in REQUIRED_PROMPTS:
        if key not in kb.prompts:
            err(prompts_where, f"missing prompt '{key}'")
    for key in TOPIC_PROMPTS:
        if key in kb.prompts and "{topic}" not in kb.prompts[key]:
            err(prompts_where, f"prompt '{key}' must contain {{topic}}")
    for key, text in kb.prompts.items():
        if _URL.search(text):
            err(prompts_where, f"prompt '{key}' holds a written web address")
        if spoken_seconds(text) > MAX_ANSWER_SECONDS:
            err(prompts_where, f"prompt '{key}' too long when spoken")
    for path in kb.unknown_files:
        warn(kb.rel(path), "unexpected file in the knowledge base (ignored)")
    issues.sort(key=lambda i: (i.level != "error", i.where))
    return issues
