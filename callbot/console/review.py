"""The review queue: what the bot did not understand, grouped so a supervisor reads each
kind of request once.

Utterances are compared on character n-grams (TF-IDF within words), which survive the
recognizer's spelling ("si ret", "sirette") the way the classifier does, then grouped by
average-linkage agglomerative clustering on cosine distance: a group holds utterances
that are, on average, at least ``similarity`` alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..kb import OUT_OF_SCOPE
from ..text import normalize

SIMILARITY = 0.45


@dataclass
class Variant:
    """One wording of a group: identical utterances (once normalized) shown once."""

    text: str
    items: list[dict[str, Any]]           # newest first
    keys: list[str]

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def latest(self) -> dict[str, Any]:
        return self.items[0]


@dataclass
class Group:
    items: list[dict[str, Any]]
    representative: dict[str, Any]
    suggestion: str | None = None          # the classifier's best in-scope guess
    preselect: str | None = None           # the guess, when the bot half understood
    cohesion: float = 1.0
    keys: list[str] = field(default_factory=list)   # "call_id|seq" of each item
    variants: list[Variant] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.items)


def item_key(item: dict[str, Any]) -> str:
    return f"{item['call_id']}|{item['seq']}"


def _suggestion(items: list[dict[str, Any]]) -> str | None:
    votes: dict[str, float] = {}
    for it in items:
        alts = it.get("alternatives") or []
        if isinstance(alts, str):
            import json
            alts = json.loads(alts)
        for intent, p in alts:
            if intent != OUT_OF_SCOPE:
                votes[intent] = votes.get(intent, 0.0) + float(p)
                break
    return max(votes, key=votes.get) if votes else None


def _variants(members: list[dict[str, Any]]) -> list[Variant]:
    by_text: dict[str, list[dict[str, Any]]] = {}
    for m in members:
        by_text.setdefault(normalize(m["text"]), []).append(m)
    out = [Variant(text=ms[0]["text"], items=ms, keys=[item_key(m) for m in ms])
           for ms in by_text.values()]
    out.sort(key=lambda v: (-v.count, -(v.latest.get("at") or 0)))
    return out


def _labels(texts: list[str], similarity: float) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and the cosine similarity matrix of ``texts``."""
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
    x = vec.fit_transform(texts)
    sim = (x @ x.T).toarray()
    np.clip(sim, 0.0, 1.0, out=sim)
    if len(texts) < 2:
        return np.zeros(len(texts), dtype=int), sim
    model = AgglomerativeClustering(n_clusters=None, metric="precomputed", linkage="average",
                                    distance_threshold=1.0 - similarity)
    return model.fit_predict(1.0 - sim), sim


def cluster(items: list[dict[str, Any]], similarity: float = SIMILARITY) -> list[Group]:
    """Groups of similar utterances, biggest (then most recent) first."""
    items = [it for it in items if normalize(it.get("text") or "")]
    if not items:
        return []
    texts = [normalize(it["text"]) for it in items]
    labels, sim = _labels(texts, similarity)
    groups: list[Group] = []
    for label in dict.fromkeys(labels.tolist()):
        idx = [i for i, lab in enumerate(labels) if lab == label]
        sub = sim[np.ix_(idx, idx)]
        centre = idx[int(np.argmax(sub.mean(axis=1)))]
        n = len(idx)
        cohesion = float((sub.sum() - n) / (n * (n - 1))) if n > 1 else 1.0
        groups.append(_group([items[i] for i in idx], items[centre], cohesion))
    _sort(groups)
    return groups


def _group(members: list[dict[str, Any]], representative: dict[str, Any],
           cohesion: float = 1.0) -> Group:
    members = sorted(members, key=lambda it: -(it.get("at") or 0))
    suggestion = _suggestion(members)
    # Preselecting a guess the classifier itself rejected would invite a hasty "Assign".
    half = any(m.get("decision") in ("confirm", "confident") for m in members)
    return Group(items=members, representative=representative, suggestion=suggestion,
                 preselect=suggestion if half else None, cohesion=cohesion,
                 keys=[item_key(m) for m in members], variants=_variants(members))


def _sort(groups: list[Group]) -> None:
    groups.sort(key=lambda g: (-g.size, -max(it.get("at") or 0 for it in g.items)))


def refit(groups: list[Group], items: list[dict[str, Any]]) -> list[Group]:
    """An earlier grouping fitted to the queue as it is now, while the new one is computed:
    utterances handled since then leave their group (a supervisor never acts twice on one),
    and utterances that came since stand alone, each in a group of its own."""
    current = {item_key(it): it for it in items if normalize(it.get("text") or "")}
    placed: set[str] = set()
    out: list[Group] = []
    for g in groups:
        members = [current[k] for k in g.keys if k in current]
        if not members:
            continue
        placed.update(item_key(m) for m in members)
        rep = current.get(item_key(g.representative), members[0])
        out.append(g if len(members) == g.size else _group(members, rep, g.cohesion))
    out += [_group([it], it) for k, it in current.items() if k not in placed]
    _sort(out)
    return out
