"""End of turn from the voice (Smart Turn v3.2) on real French speech (prints figures).

    .venv/bin/python bench/turn_end.py [--limit N] [--json out.json]

Material: the Asterisk "June" prompts of >= 3 words (real human French, 8 kHz, the
bench/asr_eval.py set). For each prompt the model is asked what it would be asked on a call,
``quick_end_ms`` into a pause:

* at the true end (the last voiced frame, then silence): the caller is done. "Done" ends the
  turn at once (saves ``end_silence_ms - quick_end_ms``); "mid-sentence" lets the pause run
  to ``mid_sentence_silence_ms`` (costs the difference with ``end_silence_ms``);
* at a pause spliced in mid-sentence (the quietest 20 ms between 35 % and 75 % of the
  speech, a word boundary): the caller is not done. "Done" cuts the caller off; without the
  model, a pause longer than ``end_silence_ms`` (1 s here) cuts every one of them.

Reported: how many mid-sentence pauses end the turn (cut too early), how many true ends are
recognised, the mean wait at the end of a turn with and without the model, and the time of
one prediction (p50/p95).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from asr_eval import SOUNDS, eligible_prompts  # noqa: E402
from callbot.audio import FRAME_MS, read_wav  # noqa: E402
from callbot.config import load_config  # noqa: E402
from callbot.endpointing import Endpointer  # noqa: E402
from callbot.smartturn import load_smart_turn  # noqa: E402

RATE = 8000
SPLICED_PAUSE_MS = 1000


def speech_bounds(pcm: np.ndarray, endpointing) -> tuple[int, int] | None:
    """First and last voiced frame (indices) as the call's endpointer sees them."""
    ep = Endpointer(endpointing)
    n = RATE * FRAME_MS // 1000
    voiced = [ep.is_voiced(pcm[i:i + n].tobytes()) for i in range(0, len(pcm) - n + 1, n)]
    idx = [i for i, v in enumerate(voiced) if v]
    return (idx[0], idx[-1]) if len(idx) >= 10 else None


def mid_cut(pcm: np.ndarray, first: int, last: int) -> int:
    """The quietest frame between 35 % and 75 % of the speech (sample index of its start)."""
    n = RATE * FRAME_MS // 1000
    lo, hi = first + int((last - first) * 0.35), first + int((last - first) * 0.75)
    energy = [float(np.mean(pcm[i * n:(i + 1) * n].astype(np.float64) ** 2))
              for i in range(lo, hi + 1)]
    return (lo + int(np.argmin(energy))) * n


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0, help="only the first N prompts")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    config = load_config(env={})
    ep = config.endpointing
    model = load_smart_turn(config.paths.models)
    threshold = ep.turn_model_threshold
    pause = np.zeros(RATE * ep.quick_end_ms // 1000, np.int16)
    prompts = sorted(eligible_prompts())
    if args.limit:
        prompts = prompts[:args.limit]
    n_frame = RATE * FRAME_MS // 1000
    ends, mids, ms = [], [], []
    model.done(np.zeros(RATE, np.int16), RATE)                  # warm up
    for k, name in enumerate(prompts, 1):
        pcm = read_wav(SOUNDS / f"{name}.wav")
        bounds = speech_bounds(pcm, ep)
        if bounds is None:
            continue
        first, last = bounds
        end = np.concatenate([pcm[:(last + 1) * n_frame], pause])
        t0 = time.perf_counter()
        ends.append(model.done(end, RATE))
        ms.append((time.perf_counter() - t0) * 1000)
        cut = mid_cut(pcm, first, last)
        mids.append(model.done(np.concatenate([pcm[:cut], pause]), RATE))
        if k % 25 == 0:
            print(f"  {k}/{len(prompts)} prompts", file=sys.stderr, flush=True)
    ends_a, mids_a = np.array(ends), np.array(mids)
    done_at_end = float(np.mean(ends_a >= threshold))
    cut_early = float(np.mean(mids_a >= threshold))
    wait_without = ep.end_silence_ms
    wait_with = float(np.mean(np.where(ends_a >= threshold, ep.quick_end_ms,
                                       ep.mid_sentence_silence_ms)))
    result = {
        "prompts": len(ends), "threshold": threshold,
        "true_ends_done": round(done_at_end, 3),
        "mid_sentence_cut": round(cut_early, 3),
        "mid_sentence_cut_without_model": 1.0 if SPLICED_PAUSE_MS >= ep.end_silence_ms else 0.0,
        "end_wait_ms_without": wait_without, "end_wait_ms_with": round(wait_with),
        "predict_ms_p50": round(float(np.percentile(ms, 50)), 1),
        "predict_ms_p95": round(float(np.percentile(ms, 95)), 1),
        "p_done_at_ends": [round(float(x), 3) for x in np.percentile(ends_a, [10, 50, 90])],
        "p_done_mid_sentence": [round(float(x), 3) for x in np.percentile(mids_a, [10, 50, 90])],
    }
    print(f"Smart Turn v3.2 on {result['prompts']} real French prompts (8 kHz), threshold "
          f"{threshold}")
    print(f"  true ends recognised as done:       {done_at_end:.1%}")
    print(f"  mid-sentence pauses cut (too early): {cut_early:.1%}   (a {SPLICED_PAUSE_MS} ms "
          f"pause without the model: {result['mid_sentence_cut_without_model']:.0%})")
    print(f"  wait at the end of a turn the words do not end: {wait_without} ms without, "
          f"{wait_with:.0f} ms with the model (mean)")
    print(f"  one prediction: p50 {result['predict_ms_p50']} ms, p95 "
          f"{result['predict_ms_p95']} ms")
    print("  other thresholds (the trade-off, not a tuning: the default is set above):")
    print(f"  {'threshold':>9} {'ends done':>9} {'mid cut':>8} {'end wait ms':>11}")
    result["curve"] = []
    for t in (0.5, 0.8, 0.9, 0.95, 0.98):
        wait = float(np.mean(np.where(ends_a >= t, ep.quick_end_ms, ep.mid_sentence_silence_ms)))
        row = {"threshold": t, "ends_done": round(float(np.mean(ends_a >= t)), 3),
               "mid_cut": round(float(np.mean(mids_a >= t)), 3), "end_wait_ms": round(wait)}
        result["curve"].append(row)
        print(f"  {t:>9} {row['ends_done']:>9.1%} {row['mid_cut']:>8.1%} {wait:>11.0f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
