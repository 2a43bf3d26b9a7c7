"""Where one Whisper decode spends its time: features, encoder, decoder.

    .venv/bin/python bench/whisper_stages.py [--wav vm-goodbye] [--windows 6,8,10] [--threads 1,2]

The configuration's Whisper model decodes one real French prompt (asterisk-core-sounds-fr,
8 kHz) on an otherwise idle machine, the stages timed apart, for each window length and
number of CPU threads: resampling, the log-mel features, the encoder over the padded window
and the decoder's generation (greedy, as in calls). Medians of ``--runs`` decodes after two
warm-ups. This is the floor under every short turn's wait: the turn taker cannot answer
before the decode of what the caller said is done (see bench/sip_latency.py for a call).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from callbot.asr import resolve_asr  # noqa: E402
from callbot.asr.whisper import SILENCE_BELOW_MAX, WHISPER_RATE, WhisperEngine  # noqa: E402
from asr_eval import SOUNDS  # noqa: E402
from callbot.audio import read_wav, resample  # noqa: E402
from callbot.config import load_config  # noqa: E402


def stages(engine: WhisperEngine, pcm: np.ndarray, runs: int) -> tuple[dict[str, float], str]:
    """Median milliseconds per stage, and the text decoded."""
    from faster_whisper.transcribe import get_ctranslate2_storage

    model = engine._whisper.model
    times: dict[str, list[float]] = {k: [] for k in ("resample", "features", "encoder",
                                                     "decoder")}
    text = ""
    for i in range(runs + 2):
        t0 = time.perf_counter()
        audio = (resample(pcm, 8000, WHISPER_RATE) / 32768.0).astype(np.float32)
        t1 = time.perf_counter()
        feats = engine._whisper.feature_extractor(audio)
        t2 = time.perf_counter()
        n = feats.shape[-1]
        window = np.empty((1, feats.shape[0], engine.window_frames(n)), dtype=np.float32)
        window[0, :, :n] = feats
        window[0, :, n:] = float(feats.max()) - SILENCE_BELOW_MAX
        encoded = model.encode(get_ctranslate2_storage(window), to_cpu=False)
        t3 = time.perf_counter()
        result = model.generate(encoded, [engine._prompt], beam_size=1, max_length=64,
                                return_scores=True, return_no_speech_prob=True,
                                suppress_blank=True, suppress_tokens=engine._suppress)[0]
        t4 = time.perf_counter()
        text = engine._transcript(result).text
        if i >= 2:
            for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                times[key].append(1000 * dt)
    return {k: statistics.median(v) for k, v in times.items()}, text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wav", default="vm-goodbye", help="a prompt of asterisk-core-sounds-fr")
    ap.add_argument("--windows", default="6,8,10", help="encoder windows in seconds")
    ap.add_argument("--threads", default="1,2", help="CPU threads of one decode")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args()
    path = SOUNDS / f"{args.wav}.wav"
    if not path.exists():
        print(f"{path} is missing: apt-get install asterisk-core-sounds-fr-wav", file=sys.stderr)
        return 2
    pcm = read_wav(path).astype(np.float32)
    config = load_config(None, env={})
    _, model = resolve_asr(config, "whisper")
    print(f"{args.wav}.wav, {pcm.size / 8000:.2f} s of speech, {model}, greedy; "
          f"median ms of {args.runs} decodes")
    print(f"{'window s':>8} {'threads':>7} {'resample':>8} {'features':>8} {'encoder':>8} "
          f"{'decoder':>8} {'total':>7}  text")
    for threads in (int(t) for t in args.threads.split(",")):
        for window in (float(w) for w in args.windows.split(",")):
            engine = WhisperEngine(config.paths.models / model, language=config.asr.language,
                                   threads=threads, decoders=1, window_s=window)
            ms, text = stages(engine, pcm, args.runs)
            print(f"{window:>8g} {threads:>7} {ms['resample']:>8.1f} {ms['features']:>8.1f} "
                  f"{ms['encoder']:>8.1f} {ms['decoder']:>8.1f} {sum(ms.values()):>7.0f}  "
                  f"{text}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
