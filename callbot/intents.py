"""Intent classification: what did the caller ask, and how sure are we.

Character n-grams (within words) carry the classifier through recognition errors ("si ret",
"sirette"); word n-grams carry the meaning. A logistic regression gives probabilities that
the dialogue turns into three decisions: answer, confirm, or not understood. Out-of-scope
talk is a class of its own (``hors_sujet``) *and* a probability threshold, so near misses
and unseen topics are both rejected.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .augment import noisy_copies
from .config import Config
from .embedding import E5, SentenceEncoder, embedding_text, encode_all, load_encoder
from .errors import ModelMissing, ModelRefused
from .kb import OUT_OF_SCOPE, KnowledgeBase
from .replies import is_follow_up
from .text import normalize

FORMAT_VERSION = 2
C_REGULARISATION = 20.0
# Weight of the out-of-scope class: sentence embeddings pull near misses ("j'ai déjà le
# siret, comment je remplis le dossier de subvention") towards an intent; weight 2 measured:
# out-of-scope rejected 0.886 -> 0.900 (5-fold), in-scope accuracy 0.915 -> 0.911.
OUT_OF_SCOPE_WEIGHT = 2.0
# Noisy copies of each phrasing (simulated recognition errors, callbot/augment.py). With
# sentence embeddings they no longer pay: measured, 5-fold accuracy 0.913 with 2 copies
# against 0.915 without, for twice the training time; the KB itself now holds phrasings
# with recognition errors on domain words.
NOISY_COPIES = 0
EMBED_CACHE = "nlu-embeddings.{}.npz"   # under paths.models: phrasings already embedded
EMBED_WEIGHT = 2.0        # scale of the sentence embedding next to the l2-normed n-grams
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


@dataclass(frozen=True)
class Context:
    """What the classifier knows of the conversation when it reads an utterance.

    A caller who just heard an answer leans on it: "et pour une association" after the
    SIREN answer means the association's SIREN. ``previous_request`` (what the caller said
    to get that answer) is read together with the new words when they are a follow-up or
    unclear alone. ``rejected`` is an intent the caller has just said was not what they
    meant ("non pas ça…"): it is not proposed again.
    """

    previous_intent: str | None = None
    previous_request: str | None = None
    rejected: str | None = None


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


def _features():
    """Character n-grams within words (robust to recognition spellings) and word n-grams."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_union

    return make_union(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True,
                        min_df=1, dtype=np.float32),
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True,
                        min_df=1, dtype=np.float32),
    )


def _regression():
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C_REGULARISATION, max_iter=3000,
                              class_weight={OUT_OF_SCOPE: OUT_OF_SCOPE_WEIGHT})


class Model:
    """The fitted classifier: n-gram features, optionally next to sentence embeddings scaled
    by ``embed_weight``, into one logistic regression. Picklable without the encoder (a
    process loads it once and lends it to every model, see :mod:`callbot.embedding`)."""

    def __init__(self, features, regression, encoder_name: str | None, embed_weight: float):
        self.features = features
        self.regression = regression
        self.encoder_name = encoder_name
        self.embed_weight = embed_weight
        self.encoder: SentenceEncoder | None = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "encoder"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.encoder = None

    @property
    def classes_(self):
        return self.regression.classes_

    def design(self, normalized: list[str], raw: list[str] | None = None,
               embeddings: np.ndarray | None = None):
        """The feature matrix of texts (normalized for the n-grams; raw for the encoder)."""
        from scipy.sparse import csr_matrix, hstack

        x = self.features.transform(normalized)
        if not self.encoder_name:
            return x
        if embeddings is None:
            embeddings = encode_all(self.encoder, raw if raw is not None else normalized)
        return hstack([x, csr_matrix(self.embed_weight * embeddings)]).tocsr()

    def fit(self, normalized: list[str], labels: list[str], embeddings: np.ndarray | None
            ) -> "Model":
        from scipy.sparse import csr_matrix, hstack

        x = self.features.fit_transform(normalized)
        if self.encoder_name:
            x = hstack([x, csr_matrix(self.embed_weight * embeddings)]).tocsr()
        self.regression.fit(x, labels)
        return self

    def predict_proba(self, normalized: list[str], raw: list[str] | None = None,
                      embeddings: np.ndarray | None = None) -> np.ndarray:
        return self.regression.predict_proba(self.design(normalized, raw, embeddings))


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
    """The model's probabilities for one utterance, without scikit-learn overhead.

    scikit-learn spends ~3 ms building sparse matrices for a single sentence; a call needs one
    sentence at a time. This applies the same analyzers, idf weights, sublinear tf, l2 norm,
    the scaled sentence embedding and the softmax over the logistic regression's weights
    directly (checked equal in tests).
    """

    def __init__(self, model: Model):
        lr = model.regression
        self.parts = []
        offset = 0
        for _, vec in model.features.transformer_list:
            if not (vec.sublinear_tf and vec.norm == "l2" and vec.use_idf):
                raise ValueError("FastScorer expects sublinear tf, idf and l2 norm")
            self.parts.append((vec.build_analyzer(), vec.vocabulary_,
                               np.asarray(vec.idf_, dtype=np.float64), offset))
            offset += len(vec.vocabulary_)
        coef = np.asarray(lr.coef_.T, dtype=np.float64)                 # features x classes
        self.coef = np.ascontiguousarray(coef[:offset])
        # the embedding's block, pre-scaled: z += e @ (w * coef)
        self.embed_coef = np.ascontiguousarray(coef[offset:] * model.embed_weight, np.float32)
        self.intercept = np.asarray(lr.intercept_, dtype=np.float64)
        self.model = model
        words = [vec for _, vec in model.features.transformer_list if vec.analyzer == "word"]
        self.vocabulary = set(words[0].vocabulary_) if words else None
        self.oos = list(model.classes_).index(OUT_OF_SCOPE)

    def knows_a_word(self, text: str) -> bool:
        """Does ``text`` (normalized) share at least one word with the knowledge base? The
        sentence encoder is multilingual and finds a meaning in any language; what shares
        no word at all with thousands of French phrasings (another language, noise turned
        into text) is out of scope whatever the encoder says."""
        return self.vocabulary is None or any(w in self.vocabulary for w in text.split())

    def unknown(self) -> np.ndarray:
        probs = np.zeros(len(self.intercept))
        probs[self.oos] = 1.0
        return probs

    def proba(self, text: str, raw: str | None = None) -> np.ndarray:
        """``text`` normalized (n-grams); ``raw`` as heard (the encoder keeps accents)."""
        if not self.knows_a_word(text):
            return self.unknown()
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
        if self.embed_coef.shape[0]:
            e = self.model.encoder.encode_one(embedding_text(raw if raw is not None else text))
            z += (e @ self.embed_coef).astype(np.float64)
        z -= z.max()
        e = np.exp(z)
        return e / e.sum()


class IntentClassifier:
    """A trained classifier with its thresholds; cheap to call once per utterance."""

    def __init__(self, model: Model, thresholds: Thresholds, kb_digest: str = "",
                 report: dict | None = None, models_dir: Path | None = None, threads: int = 0,
                 encoders: Callable[[str], SentenceEncoder] | None = None):
        if model.encoder_name and model.encoder is None and encoders is not None:
            model.encoder = encoders(model.encoder_name)
        if model.encoder_name and model.encoder is None:
            if models_dir is None:
                raise ModelMissing("this classifier uses sentence embeddings: load it with its "
                                   "models folder")
            model.encoder = load_encoder(model.encoder_name, models_dir, threads)
        self.model = model
        self.scorer = FastScorer(model)
        self.thresholds = thresholds
        self.classes: list[str] = [str(c) for c in model.classes_]
        self.oos = self.classes.index(OUT_OF_SCOPE)
        self.kb_digest = kb_digest
        self.report = report or {}

    def with_overrides(self, reject: float = 0.0, confident: float = 0.0, margin: float = 0.0
                       ) -> "IntentClassifier":
        th = Thresholds(reject or self.thresholds.reject,
                        confident or self.thresholds.confident,
                        margin or self.thresholds.margin)
        return IntentClassifier(self.model, th, self.kb_digest, self.report)   # encoder kept

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """Batch probabilities through scikit-learn (evaluation, tests)."""
        normalized = [normalize(t) for t in texts]
        probs = self.model.predict_proba(normalized, list(texts))
        for i, t in enumerate(normalized):
            if not self.scorer.knows_a_word(t):
                probs[i] = self.scorer.unknown()
        return probs

    def proba(self, text: str) -> np.ndarray:
        """One utterance's probabilities over :attr:`classes`."""
        return self.scorer.proba(normalize(text), text)

    def decide(self, text: str, probs: np.ndarray) -> Understanding:
        """Thresholds applied to probabilities (possibly combined from several readings)."""
        intent, conf, decision = _decide(probs, self.classes, self.oos, self.thresholds)
        order = np.argsort(probs)[::-1][:3]
        alts = [(self.classes[int(i)], float(probs[int(i)])) for i in order]
        return Understanding(text=text, intent=intent, confidence=conf, alternatives=alts,
                             decision=decision)

    def classify(self, text: str, context: Context | None = None) -> Understanding:
        """Classify one utterance, in the light of the conversation when ``context`` is given.

        A follow-up ("et pour…", "mais si…") or an utterance unclear on its own is also read
        joined to the request before it, and both readings are averaged: the words that are
        new decide, the previous request supplies what they leave out ("la" = "mon
        entreprise"). One extra encoding, only for those turns.
        """
        probs = self.proba(text)
        if context is not None:
            follow_up = is_follow_up(text)
            if (context.previous_request and context.previous_intent
                    and (follow_up or self.decide(text, probs).decision != CONFIDENT)):
                joined = self.proba(f"{context.previous_request} {text}")
                if follow_up and context.previous_intent in self.classes:
                    # "et pour la rouvrir" after closing a business: the joined text is
                    # mostly the previous request, so it votes for the previous topic; only
                    # the new words may bring that topic back.
                    j = self.classes.index(context.previous_intent)
                    joined[j] = min(joined[j], probs[j])
                    joined /= joined.sum()
                probs = (probs + joined) / 2.0
            if context.rejected in self.classes:
                probs = probs.copy()
                probs[self.classes.index(context.rejected)] = 0.0
                probs /= probs.sum()
        return self.decide(text, probs)

    # --- persistence -------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write the model where running bots pick it up, never half-written: a temporary
        file of its own (a console retrain and `callbot train` may save at once), synced to
        disk with its folder, renamed into place. The model it replaces stays as
        ``<name>.prev`` (hard link first: there is always a model at ``path``)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": FORMAT_VERSION, "model": self.model,
                             "thresholds": self.thresholds.__dict__,
                             "kb_digest": self.kb_digest, "report": self.report}, f,
                            protocol=pickle.HIGHEST_PROTOCOL)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            if path.exists():
                prev_tmp = tmp.with_suffix(".prev.tmp")
                os.link(path, prev_tmp)
                os.replace(prev_tmp, path.with_name(path.name + ".prev"))
                # rename(2) between two links of one file does nothing and succeeds (saves
                # racing on the same model): the temporary link must still go
                prev_tmp.unlink(missing_ok=True)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)              # the rename itself survives a power cut
        finally:
            os.close(dir_fd)

    @classmethod
    def load(cls, path: Path, models_dir: Path | None = None, threads: int = 0,
             encoders: Callable[[str], SentenceEncoder] | None = None) -> "IntentClassifier":
        """The model saved at ``path``; its encoder (if any) is installed in ``models_dir``
        (by default the model's own folder)."""
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
        return cls(data["model"], Thresholds(**data["thresholds"]), data.get("kb_digest", ""),
                   data.get("report", {}), models_dir or path.parent, threads, encoders)


def report_of(path: Path) -> dict:
    """The training report saved with a model ({} when there is no readable model of this
    version: it is simply replaced)."""
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
    except Exception:   # noqa: BLE001 - missing, truncated, another version: no report
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        return {}
    return data.get("report") or {}


MAX_ACCURACY_DROP = 0.02   # cross-validated in-scope accuracy a new model may lose


def activate(clf: IntentClassifier, path: Path, force: bool = False) -> float | None:
    """Put a newly trained model in service at ``path`` (see :meth:`IntentClassifier.save`),
    unless its cross-validated accuracy is more than 2 points below the model in place,
    measured with as many folds: a bad edit of the knowledge base must not reach callers
    unnoticed. Returns the old accuracy (None: no model, or one without a report)."""
    old = report_of(path)
    before = old.get("cv_accuracy")
    after = clf.report.get("cv_accuracy")
    # Accuracies from different fold counts are not comparable (2 folds train each model on
    # half the phrasings: measured 0.840 against 0.878 with 5, same knowledge base).
    # (Models trained before the count was recorded had the default, 5.)
    comparable = old.get("folds", 5) == clf.report.get("folds", 5)
    if not force and comparable and before is not None and after is not None \
            and after < before - MAX_ACCURACY_DROP:
        raise ModelRefused(
            f"the new model was not activated: its cross-validated accuracy is "
            f"{after:.3f} against {before:.3f} for the model in service "
            f"({(before - after) * 100:.1f} points less; at most "
            f"{MAX_ACCURACY_DROP * 100:.0f} allowed). Check the phrasings changed since "
            f"(`callbot kb check`, the review queue), or `callbot train --force` to "
            f"activate it anyway.")
    clf.save(path)
    return before


def load_classifier(config: Config, encoders: Callable[[str], SentenceEncoder] | None = None
                    ) -> IntentClassifier:
    """``encoders``: where the sentence encoder comes from when not from this process (the
    machine's recognition service)."""
    clf = IntentClassifier.load(config.paths.models / config.nlu.model, config.paths.models,
                                config.asr.threads, encoders)
    return clf.with_overrides(config.nlu.reject_threshold, config.nlu.confident_threshold,
                              config.nlu.margin)


def kb_digest(kb: KnowledgeBase) -> str:
    h = hashlib.sha256()
    for p in sorted(kb.phrasings, key=lambda p: (p.intent, p.text)):
        h.update(f"{p.intent}\t{p.text}\n".encode())
    return h.hexdigest()[:16]


def _training_set(kb: KnowledgeBase) -> tuple[list[str], list[str], list[str]]:
    """(as written, normalized, intent) for every phrasing."""
    raw = [p.text for p in kb.phrasings]
    return raw, [normalize(t) for t in raw], [p.intent for p in kb.phrasings]


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


def train(kb: KnowledgeBase, folds: int = 5, copies: int = NOISY_COPIES,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
          encoder: str | None = E5, embed_weight: float = EMBED_WEIGHT, threads: int = 0,
          models_dir: Path | None = None) -> tuple[IntentClassifier, TrainReport]:
    """Cross-validate (to report accuracy and choose thresholds), then fit on everything.

    Every phrasing (and noisy copy) is embedded once, before the folds: the folds only
    choose rows. A copy is trained on only in the folds where its original is.
    """
    from sklearn.model_selection import StratifiedKFold

    start = time.perf_counter()
    raw, texts, labels = _training_set(kb)
    noisy = noisy_copies(texts, labels, copies, seed=99)
    origin = np.array([i for i, _ in noisy], dtype=np.int64)
    all_norm = texts + [v for _, v in noisy]
    all_raw = raw + [v for _, v in noisy]
    all_labels = np.array(labels + [labels[i] for i, _ in noisy])
    emb = None
    if encoder:
        enc = load_encoder(encoder, models_dir, threads)

        def shown(done: int, total: int) -> None:
            if done == total or done % 2048 < 256:
                log(f"  embedding phrasings ({enc.name}): {done}/{total}")
        emb = encode_all(enc, all_raw, shown, cache=(models_dir / EMBED_CACHE.format(enc.name)
                                                     if models_dir else None))
    y = np.array(labels)
    classes = sorted(set(labels))
    oof = np.zeros((len(texts), len(classes)), dtype=np.float64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=0)
    n = len(texts)
    for k, (tr, te) in enumerate(skf.split(texts, y), 1):
        log(f"  cross-validation fold {k}/{folds}...")
        rows = np.concatenate([tr, n + np.flatnonzero(np.isin(origin, tr))])
        model = Model(_features(), _regression(), encoder, embed_weight)
        model.fit([all_norm[i] for i in rows], list(all_labels[rows]),
                  None if emb is None else emb[rows])
        cols = [classes.index(c) for c in model.classes_]
        oof[np.ix_(te, cols)] = model.predict_proba(
            [texts[i] for i in te], embeddings=None if emb is None else emb[te])
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
    log(f"  fitting the final model on {len(texts)} phrasings (+{len(noisy)} noisy copies)...")
    model = Model(_features(), _regression(), encoder, embed_weight)
    model.fit(all_norm, list(all_labels), emb)
    report = TrainReport(cv_accuracy=acc, cv_oos_rejected=rej, cv_false_reject=fr,
                         thresholds=th, n_phrasings=len(texts),
                         n_intents=len(classes) - 1, seconds=time.perf_counter() - start,
                         confusions=confusions)
    clf = IntentClassifier(model, th, kb_digest(kb), report={
        "cv_accuracy": acc, "cv_oos_rejected": rej, "cv_false_reject": fr,
        "n_phrasings": len(texts), "encoder": encoder or "", "folds": folds,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, models_dir=models_dir,
        threads=threads)
    return clf, report
