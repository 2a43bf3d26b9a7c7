"""Decoding while the caller speaks (``asr.early_decode_s``), on real French speech (prints
figures).

    .venv/bin/python bench/early_decode.py [--pairs 40] [--pause-ms 400] [--json out.json]

Material: long turns made of two real prompts of the bench/asr_eval.py set (Asterisk "June"
recordings, 8 kHz) joined by a pause of ``--pause-ms``, as a caller who stops for breath:
3-9 s of speech. Each turn is heard by a :class:`~callbot.asr.whisper.WhisperRecognizer` as
in a call: 20 ms frames, a speculative decode at each pause of ``quick_end_ms / 2``, dropped
when the voice comes back; at the end of the turn, ``finish()``.

Reported, with early decoding off (the whole utterance decoded at the end) and on:

* the end-of-turn decode: the time ``finish()`` takes once the caller has stopped, if the
  recognizer is asked right away (no speculation at the final pause, as under load, where a
  speculative decode is skipped): p50/p95;
* the word error rate over all turns (the second part is decoded with the first part's
  words as Whisper's previous text);
* CPU seconds per turn (every decode, the settled parts included);
* how often the first part was not decoded by the time the caller stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from asr_eval import SOUNDS, sample, word_errors  # noqa: E402
from callbot.audio import FRAME_MS, read_wav, split_frames  # noqa: E402
from callbot.config import load_config  # noqa: E402
from callbot.endpointing import Endpointer  # noqa: E402
from callbot.text import normalize  # noqa: E402


def turns(n: int, pause_ms: int) -> list[tuple[np.ndarray, str]]:
    prompts = [(name, ref) for name, ref in sample(2 * n)]
    out = []
    for (a, ra), (b, rb) in zip(prompts[0::2], prompts[1::2]):
        gap = np.zeros(8 * pause_ms, dtype=np.int16)
        out.append((np.concatenate([read_wav(SOUNDS / f"{a}.wav"), gap,
                                    read_wav(SOUNDS / f"{b}.wav")]), f"{ra} {rb}"))
    return out


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def hear(engine, config, audio: np.ndarray) -> tuple[str, float, bool]:
    """(text, end-of-turn decode seconds, first part still decoding at the end)."""
    detector = Endpointer(config.endpointing)
    rec = engine.recognizer(8000)
    half = config.endpointing.quick_end_ms // 2
    silence, speaking, speculating = 0, False, False
    frames = split_frames(audio.tobytes(), 8000, FRAME_MS)
    last_voiced = max(i for i, f in enumerate(frames) if detector.is_voiced(f))
    for i, frame in enumerate(frames[: last_voiced + 1]):
        rec.accept(frame)
        voiced = detector.is_voiced(frame)
        if voiced:
            if speculating:
                rec.drop_speculation()
                speculating = False
            speaking, silence = True, 0
        else:
            silence += FRAME_MS
            if speaking and silence >= half and not speculating:
                rec.speculate()
                speculating = True
        time.sleep(FRAME_MS / 1000)          # the caller's own pace: parts decode meanwhile
    if speculating:
        rec.drop_speculation()
    late = any(not f.done() for _, _, f in getattr(rec, "_parts", []))
    t0 = time.perf_counter()
    text = rec.finish().text
    return text, time.perf_counter() - t0, late


def run(early_s: float, material, config) -> dict:
    from callbot.asr.whisper import WhisperEngine

    engine = WhisperEngine(config.paths.models / config.asr.whisper_model,
                           language=config.asr.language, beam_size=config.asr.beam_size,
                           threads=config.asr.threads or (os.cpu_count() or 1),
                           window_s=config.asr.whisper_window_s, early_decode_s=early_s)
    engine.warm(read_wav(SOUNDS / "vm-goodbye.wav").tobytes())
    errors = words = late = 0
    waits, cpus = [], []
    for audio, ref in material:
        c0 = cpu()
        text, wait, was_late = hear(engine, config, audio)
        cpus.append(cpu() - c0)
        waits.append(wait)
        late += was_late
        errors += word_errors(ref, text)
        words += len(normalize(ref).split())
    return {"early_decode_s": early_s, "turns": len(material), "wer": round(errors / words, 4),
            "end_decode_p50_ms": round(1000 * float(np.percentile(waits, 50))),
            "end_decode_p95_ms": round(1000 * float(np.percentile(waits, 95))),
            "cpu_per_turn_s": round(float(np.mean(cpus)), 3), "first_part_late": late}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=40)
    p.add_argument("--pause-ms", type=int, default=400)
    p.add_argument("--early", default="0,1.5", help="early_decode_s values to compare")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    config = load_config(env={})
    material = turns(a.pairs, a.pause_ms)
    lengths = [len(x) / 8000 for x, _ in material]
    print(f"# {len(material)} turns of {min(lengths):.1f}-{max(lengths):.1f} s (two real "
          f"prompts, {a.pause_ms} ms pause), Whisper {config.asr.whisper_model}, "
          f"{os.cpu_count()} cores", flush=True)
    rows = []
    for early in (float(x) for x in a.early.split(",")):
        rows.append(run(early, material, config))
        print(json.dumps(rows[-1]), flush=True)
    print(f"\n{'early_decode_s':>14} {'WER':>6} {'end decode p50':>14} {'p95':>6} "
          f"{'CPU s/turn':>10} {'part late':>9}")
    for r in rows:
        print(f"{r['early_decode_s']:>14} {100 * r['wer']:>5.1f}% {r['end_decode_p50_ms']:>11} ms "
              f"{r['end_decode_p95_ms']:>6} {r['cpu_per_turn_s']:>10} {r['first_part_late']:>9}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
