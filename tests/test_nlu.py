"""The intent classifier: output contract, speed-independent quality on the development set."""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from nlu_eval import evaluate, load_dev  # noqa: E402


def test_classify_command_contract(config):
    lines = ["comment je télécharge mon avis de situation", "quel temps fait-il à Lille",
             "Mon code APE ne correspond pas à mon activité, je fais comment ?"]
    r = subprocess.run([sys.executable, "-m", "callbot", "nlu", "classify"],
                       input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    out = [json.loads(line) for line in r.stdout.splitlines()]
    assert [o["text"] for o in out] == lines
    assert out[0]["intent"] == "obtenir_avis_situation"
    assert out[1]["intent"] == "hors_sujet"
    assert out[2]["intent"] == "modifier_code_ape"
    for o in out:
        assert set(o) == {"text", "intent", "confidence", "alternatives"}
        assert 0.0 <= o["confidence"] <= 1.0
        assert all(len(a) == 2 and isinstance(a[1], float) for a in o["alternatives"])


def test_targets_on_independent_development_set(classifier):
    """tests/data/nlu_dev.tsv is written apart from kb/ and never trained on."""
    r = evaluate(classifier, load_dev())
    assert r["in"] >= 500 and r["oos"] >= 100
    assert r["accuracy"] >= 0.92, r["errors"][:20]
    assert r["oos_rejection"] >= 0.85
    assert r["false_reject"] <= 0.05


def test_robust_to_recognition_spellings(classifier):
    for text, intent in [
        ("c'est quoi la différence entre le si rène et le si ret", "difference_siren_siret"),
        ("euh je voudrais connaître mon code a p e", "connaitre_code_ape"),
        ("Je voudrais connaître mon code APE.", "connaitre_code_ape"),
        ("est-ce que l'avis de situation c'est pareil qu'un cas bis", "obtenir_kbis"),
    ]:
        assert classifier.classify(text).intent == intent, text


def test_fast_scorer_matches_scikit_learn(classifier):
    import numpy as np

    from callbot.text import normalize

    texts = [t for _, t in load_dev()][:200]
    ref = classifier.probabilities(texts)
    fast = np.array([classifier.scorer.proba(normalize(t)) for t in texts])
    assert np.allclose(ref, fast, atol=1e-4)
    assert (ref.argmax(axis=1) == fast.argmax(axis=1)).all()
