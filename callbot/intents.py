"""Intent classification: what did the caller ask, and how sure are we.

Character n-grams (within words) carry the classifier through recognition errors ("si ret",
"sirette"); word n-grams carry the meaning. A logistic regression gives probabilities that
the dialogue turns into three decisions: answer, confirm, or not understood. Out-of-scope
talk is a class of its own (``hors_sujet``) *and* a probability threshold, so near misses
and unseen topics are both rejected.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .augment import augment
from .config import Config
from .errors import ModelMissing
from .kb import OUT_OF_SCOPE, KnowledgeBase
from .text import normalize

FORMAT_VERSION = 1
CONFIDENT, CONFIRM, REJECT = "confident", "confirm", "reject"


@dataclass(frozen=True)
class Understanding:
    """The classifier's reading of one utterance."""

    text: str
    intent: str                         # an intent id, or "hors_sujet" when rejected
    confidence: float                   # probability of the best class
    alternatives: list[tuple[str, float]]
    decision: str                       # confident | confirm | reject

    def to_json(self) -> dict:
        return {"text": self.text, "intent": self.intent,
                "confidence": round(self.confidence, 4),
                "alternatives": [[i, round(s, 4)] for i, s in self.alternatives]}


@dataclass
class Thresholds:
    reject: float
    confident: float
    margin: float


@dataclass
class TrainReport:
    cv_accuracy: float           # in-scope top-1 accuracy, out of fold
    cv_oos_rejected: float       # out-of-scope rejected, out of fold
    cv_false_reject: float       # in-scope wrongly rejected, out of fold
    thresholds: Thresholds
    n_phrasings: int
    n_intents: int
    seconds: float
    path: Path | None = None
    confusions: list[tuple[str, str, int]] = field(default_factory=list)


def _pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                        min_df=1, dtype=np.float32),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                        min_df=1, dtype=np.float32),
    )
    return make_pipeline(features, LogisticRegression(C=20.0, max_iter=3000))


def _decide(probs: np.ndarray, classes: list[str], oos: int, th: Thresholds
            ) -> tuple[str, float, str]:
    """(intent or hors_sujet, confidence, decision)."""
    order = np.argsort(probs)[::-1]
    best = int(order[0])
    inscope = [int(i) for i in order if int(i) != oos]
    top_in = inscope[0]
    second_in = inscope[1] if len(inscope) > 1 else top_in
    p_in = float(probs[top_in])
    if best == oos or p_in < th.reject:
        return OUT_OF_SCOPE, float(probs[best]), REJECT
    margin = p_in - float(probs[second_in])
    if p_in >= th.confident and margin >= th.margin:
        return classes[top_in], p_in, CONFIDENT
    return classes[top_in], p_in, CONFIRM


class FastScorer:
    """The fitted pipeline's probabilities for one utterance, without scikit-learn overhead.

    scikit-learn spends ~3 ms building sparse matrices for a single sentence; a call needs one
    sentence at a time. This applies the same analyzers, idf weights, sublinear tf, l2 norm
    and softmax over the logistic regression's weights directly (checked equal in tests).
    """

    def __init__(self, pipeline):
        union, lr = pipeline.steps[0][1], pipeline.steps[-1][1]
        self.parts = []
        offset = 0
        for _, vec in union.transformer_list:
            if not (vec.sublinear_tf and vec.norm == "l2" and vec.use_idf):
                raise ValueError("FastScorer expects sublinear tf, idf and l2 norm")
            self.parts.append((vec.build_analyzer(), vec.vocabulary_,
                               np.asarray(vec.idf_, dtype=np.float64), offset))
            offset += len(vec.vocabulary_)
        self.coef = np.ascontiguousarray(lr.coef_.T, dtype=np.float64)   # features x classes
        self.intercept = np.asarray(lr.intercept_, dtype=np.float64)

    def proba(self, text: str) -> np.ndarray:
        z = self.intercept.copy()
        for analyzer, vocab, idf, offset in self.parts:
            counts: dict[int, int] = {}
            for gram in analyzer(text):
                j = vocab.get(gram)
                if j is not None:
                    counts[j] = counts.get(j, 0) + 1
            if not counts:
                continue
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            vals = (1.0 + np.log(tf)) * idf[cols]
            vals /= np.sqrt(np.dot(vals, vals))
            z += vals @ self.coef[cols + offset]
        z -= z.max()
        e = np.exp(z)
        return e / e.sum()


class IntentClassifier:
    """A trained classifier with its thresholds; cheap to call once per utterance."""

    def __init__(self, pipeline, thresholds: Thresholds, kb_digest: str = "",
                 report: dict | None = None):
        self.pipeline = pipeline
        self.scorer = FastScorer(pipeline)
        self.thresholds = thresholds
        self.classes: list[str] = [str(c) for c in pipeline.classes_]
        self.oos = self.classes.index(OUT_OF_SCOPE)
        self.kb_digest = kb_digest
        self.report = report or {}

    def with_overrides(self, reject: float = 0.0, confident: float = 0.0, margin: float = 0.0
                       ) -> "IntentClassifier":
        th = Thresholds(reject or self.thresholds.reject,
                        confident or self.thresholds.confident,
                        margin or self.thresholds.margin)
        return IntentClassifier(self.pipeline, th, self.kb_digest, self.report)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Batch probabilities through scikit-learn (evaluation, tests)."""
        return self.pipeline.predict_proba([normalize(t) for t in texts])

    def classify(self, text: str) -> Understanding:
        """Classify one utterance."""
        probs = self.scorer.proba(normalize(text))
        intent, conf, decision = _decide(probs, self.classes, self.oos, self.thresholds)
        order = np.argsort(probs)[::-1][:3]
        alts = [(self.classes[int(i)], float(probs[int(i)])) for i in order]
        return Understanding(text=text, intent=intent, confidence=conf, alternatives=alts,
                             decision=decision)

    # --- persistence -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump({"format": FORMAT_VERSION, "pipeline": self.pipeline,
                         "thresholds": self.thresholds.__dict__, "kb_digest": self.kb_digest,
                         "report": self.report}, f, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)   # atomic: a running bot never reads half a model

    @classmethod
    def load(cls, path: Path) -> "IntentClassifier":
        if not path.exists():
            raise ModelMissing(f"intent classifier {path} not found: run `callbot train`")
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
        except Exception as exc:
            raise ModelMissing(f"intent classifier {path} is unreadable ({exc}): "
                               f"run `callbot train` again") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
            raise ModelMissing(f"intent classifier {path} is from another version: "
                               f"run `callbot train` again")
        return cls(data["pipeline"], Thresholds(**data["thresholds"]), data.get("kb_digest", ""),
                   data.get("report", {}))


def load_classifier(config: Config) -> IntentClassifier:
    clf = IntentClassifier.load(config.paths.models / config.nlu.model)
    return clf.with_overrides(config.nlu.reject_threshold, config.nlu.confident_threshold,
                              config.nlu.margin)


def kb_digest(kb: KnowledgeBase) -> str:
    h = hashlib.sha256()
    for p in sorted(kb.phrasings, key=lambda p: (p.intent, p.text)):
        h.update(f"{p.intent}\t{p.text}\n".encode())
    return h.hexdigest()[:16]


def _training_set(kb: KnowledgeBase) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for p in kb.phrasings:
        texts.append(normalize(p.text))
        labels.append(p.intent)
    return texts, labels


def _choose_thresholds(probs: np.ndarray, y: np.ndarray, classes: list[str]) -> Thresholds:
    """Pick thresholds on out-of-fold probabilities.

    reject: the highest value that keeps wrongly rejected in-scope phrasings under 2 %
    (callers are served before out-of-scope talk is caught); confident: the lowest value at
    which answered-at-once predictions are right 97 % of the time.
    """
    oos = classes.index(OUT_OF_SCOPE)
    inscope_mask = np.ones(len(classes), bool)
    inscope_mask[oos] = False
    p_in = probs[:, inscope_mask].max(axis=1)
    pred_in = np.array(classes)[inscope_mask][probs[:, inscope_mask].argmax(axis=1)]
    is_oos_pred = probs.argmax(axis=1) == oos
    in_rows = y != OUT_OF_SCOPE
    reject = 0.05
    for t in np.arange(0.05, 0.6, 0.01):
        rejected_in = np.mean(is_oos_pred[in_rows] | (p_in[in_rows] < t))
        if rejected_in > 0.02:
            break
        reject = float(t)
    accepted = in_rows & ~is_oos_pred & (p_in >= reject)
    confident = 0.9
    for t in np.arange(reject, 0.9, 0.01):
        sel = accepted & (p_in >= t)
        if sel.sum() and np.mean(pred_in[sel] == y[sel]) >= 0.97:
            confident = float(t)
            break
    return Thresholds(reject=round(reject, 2), confident=round(max(confident, reject), 2),
                      margin=0.1)


def train(kb: KnowledgeBase, folds: int = 5, copies: int = 2,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> tuple[IntentClassifier, TrainReport]:
    """Cross-validate (to report accuracy and choose thresholds), then fit on everything."""
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    texts, labels = _training_set(kb)
    y = np.array(labels)
    classes = sorted(set(labels))
    oof = np.zeros((len(texts), len(classes)), dtype=np.float64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    for k, (tr, te) in enumerate(skf.split(texts, y), 1):
        log(f"  cross-validation fold {k}/{folds}...")
        tr_t, tr_l = augment([texts[i] for i in tr], [labels[i] for i in tr], copies, seed=k)
        pipe = _pipeline().fit(tr_t, tr_l)
        cols = [classes.index(c) for c in pipe.classes_]
        oof[np.ix_(te, cols)] = pipe.predict_proba([texts[i] for i in te])
    th = _choose_thresholds(oof, y, classes)
    oos = classes.index(OUT_OF_SCOPE)
    decided = [_decide(row, classes, oos, th)[0] for row in oof]
    decided = np.array(decided)
    in_rows = y != OUT_OF_SCOPE
    acc = float(np.mean(decided[in_rows] == y[in_rows]))
    rej = float(np.mean(decided[~in_rows] == OUT_OF_SCOPE)) if (~in_rows).any() else 0.0
    fr = float(np.mean(decided[in_rows] == OUT_OF_SCOPE))
    pairs: dict[tuple[str, str], int] = {}
    for gold, got in zip(y, decided):
        if gold != got:
            pairs[(gold, got)] = pairs.get((gold, got), 0) + 1
    confusions = sorted(((a, b, n) for (a, b), n in pairs.items()), key=lambda r: -r[2])[:10]
    log(f"  fitting the final model on {len(texts)} phrasings (+{copies} noisy copies each)...")
    all_t, all_l = augment(texts, labels, copies, seed=99)
    pipe = _pipeline().fit(all_t, all_l)
    report = TrainReport(cv_accuracy=acc, cv_oos_rejected=rej, cv_false_reject=fr,
                         thresholds=th, n_phrasings=len(texts),
                         n_intents=len(classes) - 1, seconds=time.perf_counter() - start,
                         confusions=confusions)
    clf = IntentClassifier(pipe, th, kb_digest(kb), report={
        "cv_accuracy": acc, "cv_oos_rejected": rej, "cv_false_reject": fr,
        "n_phrasings": len(texts), "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return clf, report
