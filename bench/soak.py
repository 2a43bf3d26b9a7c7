"""Soak: `callbot serve` under a long, realistic load with some hostile traffic (prints figures).

    .venv/bin/python bench/soak.py [--minutes 30] [--workers 2] [--load 0.8]
                                   [--hostile 0.05] [--json soak.json]

Calls arrive as a Poisson process sized so that ``--load`` of the capacity (workers x calls
per worker) is in use on average; each lasts 20–60 s (uniform): a pjsua2 caller
(`callbot call`) says real French speech (Asterisk "June" prompts: a request the bot does not
understand, then "Merci.", again, … and "Au revoir."), waiting for the bot each time, and
hangs up at the call's end if the bot has not. ``--hostile`` of the arrivals are hostile
instead: a burst of malformed datagrams, an INVITE whose audio never flows (a=sendonly), a
flood of 300 DTMF keys by SIP INFO, an INVITE sent straight to a worker, a burst of 200
OPTIONS, each kind in turn.

Reported (and written to ``--json``):
  calls attempted / answered / completed (ended by a goodbye or the caller's hang-up);
  turns lost: caller turns said to the bot at least 3 s before it hung up (or before a
  transfer was asked of the caller: from then on the caller talks to the queue, or waits)
  that are missing from the call's transcript;
  worker RSS after the first third of the run (warm: model buffers and caches have grown
  to what the load needs, measured to level off after 3-4 minutes) and at the end of the
  arrivals (growth in %), with a trace every 30 s; open file descriptors at the warm point
  and once every call has ended (a leak per call shows there);
  late media frames: the workers' receive callbacks more than 30 ms apart, over all frames;
  turn latency as the caller hears it (its last voiced frame to the bot's first voiced
  frame, first turn of each call), p50/p95 per 5-minute window (per minute when shorter).
The callers run on the same cores as the bot: the figures are pessimistic for the bot.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from callbot.audio import read_wav  # noqa: E402
from sip_latency import _pct, rss_mb, turn_latency_ms, voiced  # noqa: E402
from telephony import probe  # noqa: E402
from telephony.testing import (ServeProcess, child_env, free_port, serve_config,  # noqa: E402
                               start_sipp_uas)

SOUNDS = Path("/usr/share/asterisk/sounds/fr")
QUESTIONS = ["vm-intro", "vm-options", "agent-newlocation", "conf-getpin", "vm-instructions"]
THANKS, GOODBYE = SOUNDS / "auth-thankyou.wav", SOUNDS / "vm-goodbye.wav"
SIPP = ROOT / "tests" / "sipp"
SILENCE_MS = 800
MIN_S, MAX_S = 20.0, 60.0
HOSTILE = ("malformed", "sendonly", "dtmf_flood", "direct", "options_flood")


@dataclass
class Call:
    index: int
    start: float                     # seconds since the soak began
    duration: float
    kind: str = "normal"             # normal | one of HOSTILE
    proc: subprocess.Popen | None = None
    events: list[dict] = field(default_factory=list)
    question: str = ""
    clips: list[str] = field(default_factory=list)   # what the caller says, in order
    done: bool = False


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Soak:
    def __init__(self, args, folder: Path) -> None:
        self.args = args
        self.folder = folder
        self.rng = random.Random(args.seed)
        self.calls: list[Call] = []
        self.hostile: dict[str, int] = {k: 0 for k in HOSTILE}
        self.lost_detail: list[dict] = []
        self.merged = 0
        self.lock = threading.Lock()

    # --- callers ------------------------------------------------------------------------
    def place(self, call: Call, uri: str) -> None:
        q = self.rng.choice(QUESTIONS)
        call.question = q
        turns = []
        for _ in range(4):
            turns += ["--wav", str(SOUNDS / f"{q}.wav"), "--wav", str(THANKS)]
            call.clips += [q, THANKS.stem]
        turns += ["--wav", str(GOODBYE)]
        call.clips.append(GOODBYE.stem)
        call.proc = subprocess.Popen(
            [sys.executable, "-m", "callbot", "call", uri, *turns,
             "--record", str(self.folder / f"call-{call.index}.wav"),
             "--silence-ms", str(SILENCE_MS), "--timeout", f"{call.duration:.1f}"],
            cwd=ROOT, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)

        def read() -> None:
            out, _ = call.proc.communicate()
            call.events = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
            call.done = True

        threading.Thread(target=read, daemon=True).start()

    def hostile_traffic(self, kind: str, serve: ServeProcess, worker_port: int) -> None:
        port = serve.port
        self.hostile[kind] += 1
        if kind == "malformed":
            for _ in range(20):
                probe.send_raw(os.urandom(self.rng.randint(20, 1400)), "127.0.0.1", port)
        elif kind == "sendonly":
            subprocess.Popen(
                ["sipp", "-sf", str(SIPP / "media_direction.xml"), "-set", "dir", "sendonly",
                 "-s", "callbot", f"127.0.0.1:{port}", "-i", "127.0.0.1",
                 "-p", str(free_port("udp")), "-mi", "127.0.0.1", "-mp",
                 str(free_port("udp")), "-m", "1", "-timeout", "30s", "-nostdin"],
                cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        elif kind == "dtmf_flood":
            subprocess.Popen(
                [sys.executable, "-m", "callbot", "call", serve.uri, "--dtmf", "1" * 300,
                 "--dtmf-method", "info", "--hangup-after", "3", "--timeout", "20"],
                cwd=ROOT, env=child_env(), stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
        elif kind == "direct":
            threading.Thread(target=probe.exchange, args=("INVITE", "127.0.0.1", worker_port),
                             daemon=True).start()
        elif kind == "options_flood":
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", 0))
                local = s.getsockname()
                for i in range(200):
                    s.sendto(probe.request("OPTIONS", "127.0.0.1", port, local, f"o{i}@soak"),
                             ("127.0.0.1", port))

    # --- the run ------------------------------------------------------------------------
    def run(self) -> dict:
        args = self.args
        queue_port = free_port("udp")
        cfg = serve_config(self.folder, workers=args.workers,
                           workers_table={"allocator": args.allocator},
                           transfer={"queue_uri": f"sip:conseillers@127.0.0.1:{queue_port}"})
        # the advisor queue answers every transfer, as a real one does
        queue = start_sipp_uas(queue_port, self.folder / "queue.log", self.folder,
                               timeout_s=int(args.minutes * 60 + 300), calls=None)
        serve = ServeProcess(cfg, self.folder)
        try:
            ready = serve.wait_ready()
            return self._load(serve, ready)
        finally:
            for c in self.calls:
                if c.proc is not None and c.proc.poll() is None:
                    c.proc.kill()
            serve.stop()
            if queue.poll() is None:
                queue.kill()

    def _load(self, serve: ServeProcess, ready: dict) -> dict:
        args = self.args
        capacity = ready["calls"]
        mean_s = (MIN_S + MAX_S) / 2
        rate = args.load * capacity / mean_s                  # arrivals per second
        total_s = args.minutes * 60.0
        workers = serve.worker_pids()
        worker_port = next(e["port"] for e in serve.events if e["event"] == "worker_started")
        print(f"# soak: {args.minutes:g} min, {args.workers} workers ({capacity} calls), "
              f"load {args.load:.0%} -> {rate * 60:.1f} arrivals/min, hostile "
              f"{args.hostile:.0%}; serve ready in {ready['start_s']} s; "
              f"allocator {args.allocator}", flush=True)
        t0 = time.monotonic()
        warm_at = total_s / 3
        warm = end = None
        self.rss_trace: list[tuple[float, dict]] = []
        next_sample = 0.0
        next_arrival = self.rng.expovariate(rate)
        i = 0
        while True:
            now = time.monotonic() - t0
            if warm is None and now >= warm_at:
                warm = {w: (rss_mb(p), fds(p)) for w, p in serve.worker_pids().items()}
            if now >= next_sample:
                next_sample += 30.0
                self.rss_trace.append((round(now), {w: rss_mb(p) for w, p in
                                                    serve.worker_pids().items()}))
            if now >= total_s:
                end = {w: (rss_mb(p), fds(p)) for w, p in serve.worker_pids().items()}
                break
            if now >= next_arrival:
                next_arrival += self.rng.expovariate(rate)
                if self.rng.random() < args.hostile:
                    # in turn, so that a run draws every kind rather than luck's mix
                    kind = HOSTILE[sum(self.hostile.values()) % len(HOSTILE)]
                    self.hostile_traffic(kind, serve, worker_port)
                else:
                    call = Call(i, now, self.rng.uniform(MIN_S, MAX_S))
                    i += 1
                    self.calls.append(call)
                    self.place(call, serve.uri)
            time.sleep(0.05)
        # no new calls; let those under way finish, then read the end state
        deadline = time.monotonic() + MAX_S + 30
        while not all(c.done for c in self.calls) and time.monotonic() < deadline:
            time.sleep(0.5)
        time.sleep(3.0)                # last transcripts written, hangup events logged
        idle_fds = {w: fds(p) for w, p in serve.worker_pids().items()}
        end = {w: (v[0], idle_fds.get(w, v[1])) for w, v in end.items()}
        restarted = len(serve.worker_pids()) != len(workers) or \
            serve.worker_pids() != workers
        return self._report(serve, warm or end, end, restarted)

    def _report(self, serve: ServeProcess, warm: dict, end: dict, restarted: bool) -> dict:
        calls = [c for c in self.calls]
        answered = [c for c in calls if any(e["event"] == "answered" for e in c.events)]
        busy = [c for c in calls if c not in answered and any(
            e["event"] == "hangup" and e.get("code") in (486, 503) for e in c.events)]
        completed = [c for c in answered if any(
            e["event"] == "done" and e.get("hung_up_by") in ("bot", "caller", "caller_timeout")
            for e in c.events)]
        lost, said = self._turns_lost(serve, answered)
        hangups = [e for e in serve.events if e["event"] == "hangup" and "rx" in e]
        frames = sum(e["rx"].get("frames", 0) for e in hangups)
        late = sum(e["rx"].get("gaps_over_30ms", 0) for e in hangups)
        window = 300.0 if self.args.minutes >= 10 else 60.0
        lat: dict[int, list[float]] = {}
        for c in answered:
            ms = self._latency(c)
            if ms is not None:
                lat.setdefault(int(c.start // window), []).append(ms)
        rss_growth = {w: round(100.0 * (end[w][0] - warm[w][0]) / max(1, warm[w][0]), 1)
                      for w in end if w in warm}
        return {
            "minutes": self.args.minutes, "workers": self.args.workers,
            "allocator": self.args.allocator,
            "calls_attempted": len(calls), "calls_answered": len(answered),
            "calls_busy": len(busy), "calls_completed": len(completed),
            "rss_trace": self.rss_trace,
            "caller_turns": said, "turns_lost": lost, "turns_merged": self.merged,
            "lost_detail": self.lost_detail,
            "hostile": self.hostile,
            "rss_mb_warm": {w: v[0] for w, v in warm.items()},
            "rss_mb_end": {w: v[0] for w, v in end.items()},
            "rss_growth_pct": rss_growth,
            "fds_warm": {w: v[1] for w, v in warm.items()},
            "fds_end": {w: v[1] for w, v in end.items()},
            "late_frames_pct": round(100.0 * late / frames, 3) if frames else None,
            "frames": frames, "worker_restarted": restarted,
            "latency_window_s": window,
            "latency": [{"window": k, "calls": len(v), "p50_ms": _pct(v, 50),
                         "p95_ms": _pct(v, 95)} for k, v in sorted(lat.items())],
        }

    def _latency(self, call: Call) -> float | None:
        rec = self.folder / f"call-{call.index}.wav"
        if not rec.is_file():
            return None
        clip = read_wav(SOUNDS / f"{call.question}.wav")
        last = int(max(i for i, v in enumerate(voiced(clip)) if v))
        try:
            return turn_latency_ms(read_wav(rec), last, SILENCE_MS // 20)
        except Exception:          # a recording cut short: no figure for this call
            return None

    def _turns_lost(self, serve: ServeProcess, answered: list[Call]) -> tuple[int, int]:
        """Caller turns said >= 3 s before the call ended whose words are missing from its
        transcript.

        Said turns are matched in order to the transcript's caller turns by their words (at
        least half of the clip's reference words in one transcript turn, recognition errors
        allowed). Two said turns found in the same transcript turn were heard as one
        utterance (the caller went on without the pause that ends a turn): counted in
        ``self.merged``, not lost, since every word reached the bot. Each call with a lost
        turn is described in ``self.lost_detail`` (the caller's turns and events, the
        transcript's caller turns) so that a loss can be traced."""
        from callbot.transcripts import open_store
        from telephony.settings import load_settings

        store = open_store(load_settings(str(self.folder / "callbot.toml"), env={}).core)
        lost = said = 0
        try:
            for c in answered:
                sip_id = next(e["call"] for e in c.events if e["event"] == "answered")
                # the end of the conversation with the bot: the bot's leg hung up, or a
                # transfer asked of the caller (REFER), whichever came first
                ends = [e["t"] for e in c.events if e["event"] == "transfer_request"
                        or (e["event"] == "hangup" and e.get("leg") in (None, 0, "bot"))]
                ended = min(ends, default=None)
                turns = [e for e in c.events if e["event"] == "turn"]
                if ended is None:
                    continue
                counted = [(e, c.clips[i]) for i, e in enumerate(turns)
                           if i < len(c.clips) and e["t"] + e.get("ms", 0) / 1000 <= ended - 3.0]
                said += len(counted)
                ids = [e["id"] for e in serve.events if e["event"] == "transcript"
                       and e.get("call") == sip_id]
                heard = [_words(t["text"]) for sid in ids for t in store.turns(sid)
                         if t["speaker"] == "caller" and t["kind"] == "speech"]
                missing, pos, used = [], 0, set()
                for e, clip in counted:
                    ref = _words(REFERENCES[clip])
                    found = next((k for k in range(pos, len(heard))
                                  if len(ref & heard[k]) * 2 >= len(ref)), None)
                    if found is None:
                        missing.append(clip)
                        continue
                    if found in used:
                        self.merged += 1
                    used.add(found)
                    pos = found
                if missing:
                    lost += len(missing)
                    self.lost_detail.append({
                        "call": c.index, "sip_call": sip_id, "started_s": round(c.start, 1),
                        "missing": missing, "caller_events": c.events,
                        "transcript": [{k: t[k] for k in ("speaker", "kind", "text")}
                                       for sid in ids for t in store.turns(sid)]})
        finally:
            store.close()
        return lost, said


def _words(text: str) -> set[str]:
    from callbot.text import normalize

    return set(normalize(text).split())


def _references() -> dict[str, str]:
    import gzip

    texts = {}
    with gzip.open("/usr/share/doc/asterisk-core-sounds-fr/core-sounds-fr.txt.gz", "rt",
                   encoding="utf-8") as f:
        for line in f:
            key, _, text = line.partition(":")
            texts[key.strip()] = text.strip()
    return {k: texts[k] for k in (*QUESTIONS, THANKS.stem, GOODBYE.stem)}


REFERENCES = _references()


def print_report(r: dict) -> None:
    print(f"calls: {r['calls_attempted']} attempted, {r['calls_answered']} answered, "
          f"{r['calls_busy']} busy (every line taken: Poisson arrivals), "
          f"{r['calls_completed']} completed; caller turns {r['caller_turns']}, "
          f"lost {r['turns_lost']} (heard joined to the next one: {r['turns_merged']})")
    print(f"hostile traffic: {r['hostile']}")
    print(f"late media frames: {r['late_frames_pct']} % of {r['frames']}; worker restarted: "
          f"{r['worker_restarted']}")
    for w in sorted(r["rss_mb_end"]):
        print(f"worker {w}: RSS {r['rss_mb_warm'].get(w)} -> {r['rss_mb_end'][w]} MB "
              f"({r['rss_growth_pct'].get(w)} %), fds {r['fds_warm'].get(w)} -> "
              f"{r['fds_end'][w]}")
    print("worker RSS every 30 s: " + ", ".join(
        f"{t}s {'/'.join(str(v) for v in m.values())}" for t, m in r["rss_trace"]))
    print(f"turn latency per {r['latency_window_s']:g} s window (first turn of each call):")
    for row in r["latency"]:
        print(f"  window {row['window']}: {row['calls']} calls, p50 {row['p50_ms']} ms, "
              f"p95 {row['p95_ms']} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--load", type=float, default=0.8, help="share of the capacity in use")
    ap.add_argument("--hostile", type=float, default=0.05, help="share of hostile arrivals")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    ap.add_argument("--allocator", choices=("glibc", "jemalloc"), default="glibc",
                    help="the workers' allocator (workers.allocator); jemalloc reads "
                         "MALLOC_CONF from this environment")
    args = ap.parse_args()
    # A stopped run (SIGTERM, as from `timeout`) still stops its serve and callers.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = Soak(args, Path(tmp)).run()
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
