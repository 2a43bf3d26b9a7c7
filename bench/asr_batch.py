"""Batched Whisper decoding: how long callers wait when many finish speaking together.

    .venv/bin/python bench/asr_batch.py [--calls 4,16,32] [--batches 1,2,4,8] [--spread-s 2]

One Whisper engine (the configuration's model, window and threads), as a machine-wide
recognizer would hold it. For each level, ``calls`` real French prompts (the
bench/asr_eval.py set, 1-5 s each) end within ``--spread-s`` seconds of each other
(uniformly, a fixed seed), each decoded from its own thread as a call's would be. Reported
per batch size: the wait of each utterance (end of speech to transcript) p50/p95/max, and
the CPU time per utterance. The machine does nothing else meanwhile: this is the decoder
alone, not a call (see bench/sip_latency.py for that).
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from asr_eval import SOUNDS, sample  # noqa: E402
from callbot.asr.whisper import WhisperEngine  # noqa: E402
from callbot.audio import read_wav  # noqa: E402
from callbot.config import load_config  # noqa: E402


def level(engine: WhisperEngine, clips: list[np.ndarray], spread_s: float, seed: int) -> dict:
    rng = random.Random(seed)
    starts = sorted(rng.uniform(0, spread_s) for _ in clips)
    waits: list[float] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    def call(clip: np.ndarray, at: float) -> None:
        time.sleep(max(0.0, t0 + at - time.monotonic()))
        ended = time.monotonic()
        engine.transcribe(clip, 8000, since=ended)
        with lock:
            waits.append((time.monotonic() - ended) * 1000)

    threads = [threading.Thread(target=call, args=(c, s)) for c, s in zip(clips, starts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
    return {"p50": float(np.percentile(waits, 50)), "p95": float(np.percentile(waits, 95)),
            "max": max(waits), "cpu_ms": cpu * 1000 / len(clips)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", default="4,16,32")
    ap.add_argument("--batches", default="1,2,4,8")
    ap.add_argument("--spread-s", type=float, default=2.0)
    args = ap.parse_args()
    config = load_config(env={})
    prompts = sample(120)
    clips = [read_wav(SOUNDS / f"{n}.wav") for n, _ in prompts]
    engine = WhisperEngine(config.paths.models / config.asr.whisper_model,
                           language=config.asr.language, threads=config.asr.threads or 2,
                           window_s=config.asr.whisper_window_s)
    engine.transcribe(clips[0], 8000)                    # warm
    print(f"Whisper {engine.model}, window {engine.window_s:g} s; utterances ending within "
          f"{args.spread_s:g} s of each other; wait = end of speech -> transcript")
    print(f"{'calls':>5} {'batch':>5} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} "
          f"{'cpu ms/utt':>10}")
    for n in (int(x) for x in args.calls.split(",")):
        for b in (int(x) for x in args.batches.split(",")):
            engine.batch = b
            r = level(engine, clips[:n], args.spread_s, seed=n)
            print(f"{n:>5} {b:>5} {r['p50']:7.0f} {r['p95']:7.0f} {r['max']:7.0f} "
                  f"{r['cpu_ms']:10.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
