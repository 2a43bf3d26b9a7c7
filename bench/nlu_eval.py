"""Intent classifier on the independent development set (tests/data/nlu_dev.tsv).

Prints in-scope top-1 accuracy, out-of-scope rejection, in-scope wrongly rejected and the
errors, for the classifier trained by `callbot train`. Targets: >= 0.92, >= 0.85, <= 0.05.

    .venv/bin/python bench/nlu_eval.py [--errors]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from callbot.config import load_config  # noqa: E402
from callbot.intents import load_classifier  # noqa: E402
from callbot.kb import OUT_OF_SCOPE  # noqa: E402

DEV = Path(__file__).resolve().parent.parent / "tests" / "data" / "nlu_dev.tsv"


def load_dev(path: Path = DEV) -> list[tuple[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            gold, text = line.split("\t", 1)
            rows.append((gold, text))
    return rows


def evaluate(clf, rows):
    res = {"in": 0, "in_ok": 0, "in_rejected": 0, "oos": 0, "oos_rejected": 0, "errors": []}
    for gold, text in rows:
        u = clf.classify(text)
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
    ap.add_argument("--errors", action="store_true")
    args = ap.parse_args()
    clf = load_classifier(load_config())
    r = evaluate(clf, load_dev())
    if args.errors:
        for e in sorted(r["errors"]):
            print("\t".join(map(str, e)))
    print(f"dev set: {r['in']} in-scope, {r['oos']} out-of-scope")
    print(f"in-scope top-1 accuracy   {r['accuracy']:.3f}  (target >= 0.92)")
    print(f"out-of-scope rejected     {r['oos_rejection']:.3f}  (target >= 0.85)")
    print(f"in-scope wrongly rejected {r['false_reject']:.3f}  (target <= 0.05)")
    print(f"thresholds: {clf.thresholds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
