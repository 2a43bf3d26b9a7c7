"""Intent classifier on the evaluation sets, with its speed.

Two sets, both written apart from kb/ and never trained on:
  tests/data/nlu_heldout.tsv  written from the intent taxonomy only, frozen before the
                              knowledge base and the classifier were tuned (the target set)
  tests/data/nlu_dev.tsv      the earlier development set (a second score)

Prints in-scope top-1 accuracy, out-of-scope rejection, in-scope wrongly rejected, and the
time to classify one utterance (embedding included), for the classifier trained by
`callbot train`. Targets on the held-out set: >= 0.93, >= 0.90, <= 0.04; p95 <= 25 ms.

    .venv/bin/python bench/nlu_eval.py [--errors]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callbot.config import load_config  # noqa: E402
from callbot.intents import load_classifier  # noqa: E402
from callbot.kb import OUT_OF_SCOPE  # noqa: E402

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
DEV = DATA / "nlu_dev.tsv"
HELDOUT = DATA / "nlu_heldout.tsv"
TARGETS = {"accuracy": 0.93, "oos_rejection": 0.90, "false_reject": 0.04}


def load_dev(path: Path = DEV) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            gold, text = line.split("\t", 1)
            rows.append((gold, text))
    return rows


def evaluate(clf, rows):
    res = {"in": 0, "in_ok": 0, "in_rejected": 0, "oos": 0, "oos_rejected": 0, "errors": [],
           "ms": []}
    for gold, text in rows:
        t0 = time.perf_counter()
        u = clf.classify(text)
        res["ms"].append((time.perf_counter() - t0) * 1000)
        if gold == OUT_OF_SCOPE:
            res["oos"] += 1
            res["oos_rejected"] += u.intent == OUT_OF_SCOPE
        else:
            res["in"] += 1
            res["in_ok"] += u.intent == gold
            res["in_rejected"] += u.intent == OUT_OF_SCOPE
        if u.intent != gold:
            res["errors"].append((gold, u.intent, round(u.confidence, 2), text))
    res["accuracy"] = res["in_ok"] / res["in"]
    res["oos_rejection"] = res["oos_rejected"] / max(1, res["oos"])
    res["false_reject"] = res["in_rejected"] / res["in"]
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--errors", action="store_true", help="list every misread utterance")
    args = ap.parse_args()
    clf = load_classifier(load_config())
    clf.classify("bonjour")                      # load the encoder before timing
    print(f"classifier: {clf.report.get('n_phrasings', '?')} phrasings, encoder "
          f"{clf.report.get('encoder') or 'none'}, thresholds {clf.thresholds}")
    print(f"{'set':28s} {'in':>4s} {'oos':>4s} {'accuracy':>9s} {'oos rej.':>9s} "
          f"{'false rej.':>10s} {'p50 ms':>7s} {'p95 ms':>7s}")
    for name, path in (("held-out (target)", HELDOUT), ("development (earlier)", DEV)):
        r = evaluate(clf, load_dev(path))
        p50, p95 = np.percentile(r["ms"], [50, 95])
        print(f"{name:28s} {r['in']:4d} {r['oos']:4d} {r['accuracy']:9.3f} "
              f"{r['oos_rejection']:9.3f} {r['false_reject']:10.3f} {p50:7.1f} {p95:7.1f}")
        if args.errors:
            for e in sorted(r["errors"]):
                print("   " + "\t".join(map(str, e)))
    print(f"targets (held-out): accuracy >= {TARGETS['accuracy']}, out-of-scope rejected >= "
          f"{TARGETS['oos_rejection']}, wrongly rejected <= {TARGETS['false_reject']}, "
          f"p95 <= 25 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
