"""What a register look-up costs the caller: from the last key of the SIREN to the first
frame of the answer queued, when the answer's sentences were never rendered before.

    .venv/bin/python bench/lookup_speech.py [--companies 40]

A register of generated units (the official stock format, imported by the real importer)
in a temporary folder; for each of ``--companies`` active legal units, one whole call in a
real CallSession (typed question, "oui", the nine keys). The keys are timed from the last
one to the moment the first answer frame is in the playback queue (what the line would
send next) and to the end of the turn (every sentence of the answer queued). Two passes:

* "not pre-rendered": a fresh speech cache, so the company's sentences ("L'entreprise … est
  active depuis le …", "Son code A P E est …") are synthesized at answer time, as in
  production (they depend on the company);
* "pre-rendered": the same calls again, every sentence now in the cache.

The fixed prompts are pre-rendered in both passes, as `callbot train` does. Also printed:
the look-up alone, and one synthesis of the state sentence on its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callbot.audio import TELEPHONY_RATE  # noqa: E402
from callbot.config import load_config  # noqa: E402
from callbot.session import CallSession, Engines  # noqa: E402
from callbot.siren import luhn_ok  # noqa: E402
from callbot.sirene.importer import import_files  # noqa: E402
from callbot.sirene.lookup import Register  # noqa: E402
from callbot.sirene.testdata import generate  # noqa: E402
from callbot.tts import load_tts  # noqa: E402
from callbot.tts.cache import SpeechCache  # noqa: E402

QUESTION = "comment je fais pour trouver mon code ape"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def line(label: str, values: list[float]) -> str:
    return (f"{label:<52} p50 {statistics.median(values):7.1f} ms   p95 {pct(values, 95):7.1f} ms"
            f"   max {max(values):7.1f} ms   (n={len(values)})")


def first_frame_ms(session: CallSession, siren: str) -> tuple[float, float]:
    """Type ``siren``; (last key -> first answer frame queued, last key -> turn decided).

    The first frame is there when the first sentence's audio enters the playback queue
    (the line's clock thread would send it at its next tick): the queue is wrapped to
    note that moment.
    """
    for digit in siren[:-1]:
        session.dtmf(digit)
    session.playback.flush()
    stamp: list[float] = []
    queue_audio = session.playback.extend

    def extend(pcm: bytes, rate: int = TELEPHONY_RATE) -> None:
        queue_audio(pcm, rate)
        if pcm and not stamp:
            stamp.append(time.perf_counter())

    session.playback.extend = extend  # type: ignore[method-assign]
    t0 = time.perf_counter()
    turn = session.dtmf(siren[-1])
    t1 = time.perf_counter()
    assert "active" in turn.bot_text or "cessé" in turn.bot_text, turn.bot_text
    return (stamp[0] - t0) * 1000, (t1 - t0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--companies", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        gen = generate(folder / "stock", units=args.companies * 6, seed=1)
        cfg_path = folder / "callbot.toml"
        cfg_path.write_text(f'[sirene]\npath = "{folder / "sirene.sqlite3"}"\n')
        config = load_config(cfg_path, env={})
        import_files(config, [gen.unite_legale, gen.etablissement])
        register = Register.open(config)
        sirens = []                      # active or closed legal units, in the diffusion
        for first8 in range(5_000_001, 5_000_000 + 41 * gen.units):
            s8 = f"{first8:08d}"
            found = register.lookup(next(s8 + d for d in "0123456789" if luhn_ok(s8 + d)))
            if found.found and found.diffusible and not found.personne_physique:
                sirens.append(found.siren)
                if len(sirens) == args.companies:
                    break
        lookup_ms = []
        for siren in sirens:
            t0 = time.perf_counter()
            register.lookup(siren)
            lookup_ms.append((time.perf_counter() - t0) * 1000)

        base = Engines.load(config, asr=False)
        tts = SpeechCache(load_tts(config), folder / "tts-cache")
        engines = dataclasses.replace(base, tts=tts)
        for name, text in engines.kb.prompts.items():          # what `callbot train` does
            if "{" not in text:
                tts.get(text)
        for answer in (engines.kb.intents[i].answer for i in engines.kb.intents):
            tts.get(answer)
        print(f"tts {tts.name}/{tts.voice}, {len(sirens)} companies, register of "
              f"{gen.units} units ({register.label})")
        print(line("register look-up alone", lookup_ms))
        results: dict[str, tuple[list[float], list[float]]] = {}
        for label in ("not pre-rendered", "pre-rendered"):
            first, whole = [], []
            misses = tts.misses
            for siren in sirens:
                session = CallSession(engines, call_id=f"bench-{siren}")
                session.start()
                session.hear(QUESTION)
                session.hear("oui")
                f, w = first_frame_ms(session, siren)
                first.append(f)
                whole.append(w)
            results[label] = (first, whole)
            print(line(f"last key -> first answer frame ({label})", first))
            print(line(f"last key -> whole answer queued ({label})", whole))
            print(f"{'':<52} sentences synthesized in the pass: {tts.misses - misses}")
        one = []
        synth = load_tts(config)
        for i, siren in enumerate(sirens[:20]):
            text = f"L'entreprise Essai {i} est active depuis le {i % 28 + 1} mars 2021."
            t0 = time.perf_counter()
            synth.synthesize(text)
            one.append((time.perf_counter() - t0) * 1000)
        print(line("one state sentence synthesized alone", one))
    return 0


if __name__ == "__main__":
    sys.exit(main())
