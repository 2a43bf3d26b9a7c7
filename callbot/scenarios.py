"""Whole-call scenarios: scripted callers with the bot's expected reaction, scored end to end.

A scenario is what a supervisor writes after listening to a call that went wrong: the
caller's turns as text, the intent the bot must act on at each turn, and how the call must
end. Running one plays a whole call through :func:`callbot.simulate.simulate` (the same
dialogue as a phone call), so a scenario checks understanding *in context*: a follow-up
that leans on the previous answer, a "merci" after "avez-vous une autre question ?", a
SIREN dictated in two breaths.

File format: one JSON object per line::

    {"id": "c01", "turns": ["bonjour je voudrais un numéro siren", "non merci"],
     "expect": ["obtenir_siren", "non|au_revoir"], "outcome": "hung_up:caller_goodbye"}

``expect`` holds one label per turn: an intent id, ``siren`` for digits given while the
SIREN is asked, ``hors_sujet`` for what the bot must not understand; ``a|b`` accepts either.
``outcome`` is ``hung_up:<reason>`` or ``transferred:<reason>``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import CallbotError
from .simulate import CallerTurn, SimulationResult, simulate


class ScenarioError(CallbotError):
    """A scenario file that cannot be read."""


@dataclass(frozen=True)
class Scenario:
    id: str
    turns: tuple[str, ...]
    expect: tuple[str, ...]
    outcome: str
    note: str = ""


@dataclass
class ScenarioResult:
    scenario: Scenario
    got: list[str]                 # the intent the bot acted on, per caller turn
    outcome: str
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict:
        return {"id": self.scenario.id, "passed": self.passed, "got": self.got,
                "outcome": self.outcome, "failures": self.failures}


def load_scenarios(path: str | Path) -> list[Scenario]:
    out = []
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read ({exc.strerror})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            d = json.loads(line)
            sc = Scenario(id=str(d["id"]), turns=tuple(d["turns"]), expect=tuple(d["expect"]),
                          outcome=str(d["outcome"]), note=str(d.get("note", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ScenarioError(f"{p}:{n}: not a scenario ({exc}); expected "
                                f'{{"id", "turns", "expect", "outcome"}}') from None
        if len(sc.turns) != len(sc.expect):
            raise ScenarioError(f"{p}:{n}: {len(sc.turns)} turns but {len(sc.expect)} "
                                f"expectations")
        out.append(sc)
    return out


def outcome_of(result: SimulationResult) -> str:
    reason = getattr(result.ending, "reason", "")
    return f"{result.outcome}:{reason}" if reason else result.outcome


def run_scenario(engines, scenario: Scenario) -> ScenarioResult:
    result = simulate(engines, [CallerTurn("text", t) for t in scenario.turns])
    heard = [t for t in result.turns if t.caller is not None]
    got = [t.intent or "" for t in heard]
    failures = []
    for i, want in enumerate(scenario.expect):
        if i >= len(got):
            failures.append(f"turn {i + 1} «{scenario.turns[i]}» never heard (call over)")
            continue
        if got[i] not in want.split("|"):
            failures.append(f"turn {i + 1} «{scenario.turns[i]}»: {got[i]}, expected {want}")
    outcome = outcome_of(result)
    if outcome != scenario.outcome:
        failures.append(f"ended {outcome}, expected {scenario.outcome}")
    return ScenarioResult(scenario, got, outcome, failures)


def run_scenarios(engines, scenarios: list[Scenario]) -> list[ScenarioResult]:
    return [run_scenario(engines, s) for s in scenarios]
