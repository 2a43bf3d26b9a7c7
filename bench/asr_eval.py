"""Speech recognition on real French telephone speech: word error rate and decode time.

Material: the Asterisk "June" prompts (Debian asterisk-core-sounds-fr-wav, 8 kHz, real
human Québec French) with their reference texts (asterisk-core-sounds-fr). Eligible: every
prompt with a WAV and at least 3 words of text, bracketed non-speech skipped (279); the
default sample is 120 of them, ``random.Random(0).sample`` over the sorted names. Text on
both sides is normalized the same way (lowercase, no accents or punctuation, numbers in
words); WER is counted over the whole sample (corpus level).

Each file goes through ``callbot transcribe``'s code path (:func:`transcribe_pcm`, the
recognizer loaded for recordings: ``asr.recordings_beam_size``), so the figures are what a
user of the command gets; ``--calls`` uses the in-call settings (``asr.beam_size``) instead.

    .venv/bin/python bench/asr_eval.py [--all] [--window S] [--beam N] [--show-errors]
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callbot.text import normalize  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
TEXTS = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")


def eligible_prompts() -> dict[str, str]:
    """name -> reference text, for every prompt with a WAV and >= 3 words of speech."""
    out = {}
    for line in gzip.open(TEXTS, "rt", encoding="utf-8", errors="replace"):
        if line.startswith(";"):
            continue
        key, sep, text = line.partition(":")
        key, text = key.strip(), text.strip()
        if not sep or not text or re.search(r"[\[(]", text):
            continue
        if (SOUNDS / f"{key}.wav").is_file() and len(normalize(text).split()) >= 3:
            out[key] = text
    return out


def sample(n: int | None = 120) -> list[tuple[str, str]]:
    """(name, reference) of the standard sample (all eligible prompts when n is None)."""
    prompts = eligible_prompts()
    names = sorted(prompts) if n is None else random.Random(0).sample(sorted(prompts), n)
    return [(name, prompts[name]) for name in names]


def word_errors(ref: str, hyp: str) -> int:
    """Levenshtein distance over words (substitutions, insertions, deletions)."""
    r, h = ref.split(), hyp.split()
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        prev, row = row, [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (rw != hw))
    return row[-1]


def score(engine, endpointing, prompts, show_errors: bool = False) -> dict:
    """Corpus WER and per-file decode times of ``engine`` over ``prompts``."""
    from callbot.audio import read_wav
    from callbot.transcribe import transcribe_pcm

    errors = words = 0
    times, audio_s = [], 0.0
    for name, ref in prompts:
        result = transcribe_pcm(engine, read_wav(SOUNDS / f"{name}.wav").tobytes(), endpointing)
        r, h = normalize(ref), normalize(result.text)
        k = word_errors(r, h)
        errors += k
        words += len(r.split())
        times.append(result.decode_s)
        audio_s += result.duration_s
        if show_errors and k:
            print(f"  {k:2d}  {r}\n      {h}")
    return {"wer": errors / words, "words": words, "files": len(prompts),
            "p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95)),
            "rtf": sum(times) / audio_s}


def main() -> int:
    from callbot.asr import load_asr
    from callbot.config import load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--all", action="store_true", help="every eligible prompt (279), not 120")
    ap.add_argument("--window", type=float, help="override asr.whisper_window_s")
    ap.add_argument("--beam", type=int, help="override the beam size")
    ap.add_argument("--calls", action="store_true",
                    help="the recognizer as loaded for calls (asr.beam_size), not recordings")
    ap.add_argument("--show-errors", action="store_true")
    args = ap.parse_args()
    config = load_config()
    asr = config.asr
    if args.window:
        asr = dataclasses.replace(asr, whisper_window_s=args.window)
    if args.beam:
        asr = dataclasses.replace(asr, beam_size=args.beam, recordings_beam_size=args.beam)
    config = dataclasses.replace(config, asr=asr)
    engine = load_asr(config, recordings=not args.calls)
    prompts = sample(None if args.all else 120)
    t0 = time.perf_counter()
    r = score(engine, config.endpointing, prompts, args.show_errors)
    print(f"{engine.name} ({engine.model}), window {asr.whisper_window_s:g} s, beam "
          f"{getattr(engine, 'beam_size', '-')}: WER {r['wer']:.3f} over {r['files']} prompts ({r['words']} words); "
          f"decode per file p50 {r['p50']:.2f} s, p95 {r['p95']:.2f} s, RTF {r['rtf']:.2f} "
          f"({time.perf_counter() - t0:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
