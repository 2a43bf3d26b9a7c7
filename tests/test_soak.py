"""The soak benchmark's short version (3 minutes): `callbot serve` under Poisson arrivals of
real spoken calls at 80 % of its capacity, with 5 % hostile traffic. The full 30-minute run
is `bench/soak.py` (figures in the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_short_soak(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "soak.py"), "--minutes", "3",
                        "--workers", "1", "--seed", "3", "--json", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    s = json.loads(out.read_text())
    assert s["calls_attempted"] >= 5, s
    # every call answered, or refused busy when all lines were taken (Poisson arrivals at
    # 80 % of the capacity sometimes exceed it for a moment)
    assert s["calls_answered"] + s["calls_busy"] == s["calls_attempted"], s
    assert s["calls_answered"] >= 0.6 * s["calls_attempted"], s
    assert s["calls_completed"] == s["calls_answered"], s
    assert s["caller_turns"] > 0 and s["turns_lost"] == 0, s
    # The 0.1 % target is the 30-minute benchmark's (400,000 frames: measured 0.09 %); in 3
    # minutes on one worker (about 30,000 frames) a few scheduler hiccups of the shared CI
    # machine move it by 0.05 points either way. Here: the media clock never stalls behind
    # the decodes (a clock blocked by a decode would lose several % of frames).
    assert s["late_frames_pct"] is not None and s["late_frames_pct"] <= 0.5, s
    assert not s["worker_restarted"], s
    for w, n in s["fds_end"].items():          # no descriptor leak per call
        assert n <= s["fds_warm"][w] + 8, s
    for w, pct in s["rss_growth_pct"].items():
        assert pct <= 10.0, s
    assert s["latency"] and all(row["p50_ms"] for row in s["latency"]), s
