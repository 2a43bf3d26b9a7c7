"""Whole calls: scripted callers through the real dialogue, classifier and knowledge base.

  tests/data/calls_heldout.jsonl  48 calls written from the taxonomy and a description of
                                  the dialogue only, frozen before tuning (the target: >= 92 %)
  tests/data/calls_dev.jsonl      22 calls used while building context handling

Each call is played by `callbot simulate`'s engine (text turns); a call is handled as
expected when every turn is read as the intent its author expected and the call ends as
expected (goodbye, transfer and its reason).

    .venv/bin/python bench/calls_eval.py [--failures]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callbot.config import load_config  # noqa: E402
from callbot.scenarios import load_scenarios, run_scenarios  # noqa: E402
from callbot.session import Engines  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
SETS = (("held-out (target)", DATA / "calls_heldout.jsonl"),
        ("development", DATA / "calls_dev.jsonl"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--failures", action="store_true", help="say why each failed call failed")
    args = ap.parse_args()
    engines = Engines.load(load_config(), asr=False)
    for name, path in SETS:
        t0 = time.perf_counter()
        results = run_scenarios(engines, load_scenarios(path))
        ok = sum(r.passed for r in results)
        print(f"{name:20s} {ok:3d}/{len(results)} calls handled as expected "
              f"({ok / len(results):.1%}) in {time.perf_counter() - t0:.1f} s")
        if args.failures:
            for r in results:
                if not r.passed:
                    print(f"   {r.scenario.id}: " + "; ".join(r.failures))
    print("target (held-out): >= 92 %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
