"""A worker's side of the recognition service: engines that look local but decode remotely.

:class:`ServiceClient` is one connection per process, shared by every call, requests
multiplexed by id. :class:`RemoteWhisperEngine`, :class:`RemoteStreamEngine` and
:class:`RemoteEncoder` implement the core's engine interfaces on top of it, so the call
pipeline does not know where its models run.

When the service is gone (restarting, killed, its socket removed) or does not answer within
``recognition.timeout_s``, a worker never hangs: it loads its own copy of the model once
(:meth:`RemoteEngineBase.local`, said once in the log) and carries on with it; each request
tries the service again first (at most one reconnection attempt per second), so the shared
copy is used again as soon as it is back. A streaming recognizer keeps the audio of its
current utterance, and replays it into a local recognizer if its stream is lost mid-way.
"""

from __future__ import annotations

import itertools
import os
import struct
from collections import OrderedDict
import socket
import threading
import time
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..embedding import CACHE_SIZE
from ..asr.base import AsrEngine, AsrOverloaded, Recognizer, Transcript, check_rate
from .wire import WireError, receive, send

RECONNECT_EVERY_S = 1.0
HELLO_TIMEOUT_S = 5.0
SEND_TIMEOUT_S = 2
CANCEL_TIMEOUT_S = 1.0
WARM_STREAM_S = 4           # speech a worker gives the service's stream engine to warm


class ServiceUnavailable(Exception):
    """The recognition service is gone (no socket, connection lost): use a local model."""


class ServiceBusy(ServiceUnavailable):
    """The service is there but refused or did not answer in time: loading a second model
    into a machine that is already behind would make it worse."""


def _transcript(fields: dict | None) -> Transcript | None:
    if fields is None:
        return None
    return Transcript(fields["text"], fields["confidence"], fields["engine"], fields["final"])


class ServiceClient:
    def __init__(self, path: str | Path, timeout_s: float = 15.0,
                 log: Callable[..., None] | None = None) -> None:
        self.path = str(path)
        self.timeout_s = timeout_s
        self.log = log or (lambda event, **fields: None)
        self._sock: socket.socket | None = None
        self._send_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._pending: dict[int, Future] = {}
        self._ids = itertools.count(1)
        self._pushes: dict[int, Callable[[dict], None]] = {}
        self._last_try = 0.0
        self.generation = 0             # bumped at each new connection (streams are lost)
        self.busy = 0                   # the service's queue depth, from its last reply
        self.hello: dict = {}

    # --- connection -------------------------------------------------------------------------
    def connect(self, wait_s: float = 0.0) -> dict:
        """Connect (retrying for ``wait_s`` while the service starts); its hello."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self._open()
                return self.hello
            except ServiceUnavailable:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.2)

    def _open(self) -> None:
        with self._state_lock:
            if self._sock is not None:
                return
            self._last_try = time.monotonic()
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(2.0)
                sock.connect(self.path)
                sock.settimeout(None)
                # a service that stops reading must not block a call thread for long
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                                struct.pack("ll", SEND_TIMEOUT_S, 0))
            except OSError as exc:
                sock.close()
                raise ServiceUnavailable(f"recognition service at {self.path}: {exc}") from None
            self._sock = sock
            self.generation += 1
            generation = self.generation
        threading.Thread(target=self._reader, args=(sock, generation), daemon=True,
                         name="recognition-reader").start()
        try:
            hello = self.call({"op": "hello", "pid": os.getpid()},
                              timeout_s=min(self.timeout_s, HELLO_TIMEOUT_S))
        except ServiceUnavailable:
            self._lost(sock, generation)      # half-open: the next attempt starts afresh
            raise
        if "engine" not in hello[0]:
            self._lost(sock, generation)
            raise ServiceUnavailable(f"recognition service at {self.path}: bad hello {hello[0]}")
        self.hello = hello[0]

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _ensure(self, reconnect: bool = True) -> socket.socket:
        sock = self._sock
        if sock is not None:
            return sock
        if not reconnect or time.monotonic() - self._last_try < RECONNECT_EVERY_S:
            raise ServiceUnavailable("recognition service unreachable")
        self._open()
        if self._sock is None:
            raise ServiceUnavailable("recognition service unreachable")
        self.log("recognition_reconnected", path=self.path)
        return self._sock

    def _reader(self, sock: socket.socket, generation: int) -> None:
        try:
            self._read(sock)
        finally:
            self._lost(sock, generation)

    def _read(self, sock: socket.socket) -> None:
        try:
            while True:
                header, payload = receive(sock)
                if "push" in header:
                    handler = self._pushes.get(header.get("stream", -1))
                    if handler is not None:
                        try:
                            handler(header)
                        except Exception:   # noqa: BLE001 - one stream's bug, not the link
                            self.log("recognition_push_failed", push=header.get("push"))
                    continue
                if "busy" in header:
                    self.busy = int(header["busy"])
                fut = self._pending.pop(header.get("id"), None)
                if fut is None:
                    continue
                if "error" in header:
                    fut.set_exception(ServiceBusy(
                        f"{header['error']}: {header.get('message', '')}"))
                else:
                    fut.set_result((header, payload))
        except (WireError, OSError):
            pass

    def _lost(self, sock: socket.socket, generation: int) -> None:
        with self._state_lock:
            if self._sock is not sock:
                return
            self._sock = None
            pending, self._pending = self._pending, {}
        try:
            sock.close()
        except OSError:
            pass
        for fut in list(pending.values()):
            if not fut.done():
                fut.set_exception(ServiceUnavailable("recognition service connection lost"))
        self.log("recognition_lost", path=self.path, pending=len(pending))

    # --- requests ---------------------------------------------------------------------------
    def post(self, header: dict, payload: bytes = b"", reconnect: bool = True) -> None:
        """Send without waiting for an answer."""
        sock = self._ensure(reconnect)
        try:
            with self._send_lock:
                send(sock, header, payload)
        except OSError:
            self._lost(sock, self.generation)
            raise ServiceUnavailable("recognition service connection lost") from None

    def request(self, header: dict, payload: bytes = b"", reconnect: bool = True) -> Future:
        sock = self._ensure(reconnect)
        rid = next(self._ids)
        fut: Future = Future()
        fut.rid = rid                   # type: ignore[attr-defined] - to cancel it
        self._pending[rid] = fut
        try:
            with self._send_lock:
                send(sock, {**header, "id": rid}, payload)
        except OSError:
            self._pending.pop(rid, None)
            self._lost(sock, self.generation)
            raise ServiceUnavailable("recognition service connection lost") from None
        return fut

    def call(self, header: dict, payload: bytes = b"",
             timeout_s: float | None = None) -> tuple[dict, bytes]:
        fut = self.request(header, payload)
        wait = self.timeout_s if timeout_s is None else timeout_s
        try:
            return fut.result(timeout=wait)
        except FutureTimeout:
            rid = fut.rid                         # type: ignore[attr-defined]
            self._pending.pop(rid, None)
            if header.get("op") == "transcribe":
                try:
                    self.post({"op": "cancel", "target": rid}, reconnect=False)
                except ServiceUnavailable:
                    pass
            raise ServiceBusy(f"no answer from the recognition service in {wait:.0f} s") \
                from None

    def on_push(self, stream: int, handler: Callable[[dict], None] | None) -> None:
        if handler is None:
            self._pushes.pop(stream, None)
        else:
            self._pushes[stream] = handler

    def close(self) -> None:
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)   # the reader ends and fails what is pending
            except OSError:
                pass


class _Cancellable(Future):
    """A remote decode: cancelling it asks the service to drop it if not yet started."""

    def __init__(self, client: ServiceClient) -> None:
        super().__init__()
        self.client = client
        self.rid: int | None = None

    def cancel(self) -> bool:
        """True only if the service had not started it (asked, not assumed: a decode
        under way is worth waiting for rather than doing again)."""
        if self.done():
            return False
        if self.rid is not None:
            try:
                header, _ = self.client.call({"op": "cancel", "target": self.rid},
                                             timeout_s=CANCEL_TIMEOUT_S)
                if not header.get("cancelled"):
                    return False
            except ServiceBusy:
                return False
            except ServiceUnavailable:
                pass                  # the service is gone: so is the decode
        return super().cancel()


class RemoteEngineBase:
    """What remote engines share: the client, and a local engine loaded on first need."""

    def __init__(self, client: ServiceClient, load_local: Callable[[], AsrEngine]) -> None:
        self.client = client
        self.name = str(client.hello.get("engine", ""))
        self.model = str(client.hello.get("model", ""))
        self._load_local = load_local
        self._local: AsrEngine | None = None
        self._local_lock = threading.Lock()

    def local(self, why: str) -> AsrEngine:
        """This process's own copy of the model (loaded once, on the first failure)."""
        with self._local_lock:
            if self._local is None:
                t0 = time.perf_counter()
                self._local = self._load_local()
                self.client.log("recognition_degraded", reason=why,
                                load_s=round(time.perf_counter() - t0, 2))
            return self._local


class RemoteWhisperEngine(RemoteEngineBase):
    """Whisper decodes in the service; the per-call buffer stays in the worker."""

    @property
    def busy(self) -> int:
        return self.client.busy

    def recognizer(self, sample_rate: int = 8000) -> Recognizer:
        from ..asr.whisper import WhisperRecognizer

        return WhisperRecognizer(self, check_rate(sample_rate))   # type: ignore[arg-type]

    def warm(self, speech: bytes, count: int = 1) -> None:
        rec = self.recognizer(8000)
        rec.accept(speech)
        rec.finish()

    def submit(self, samples: np.ndarray, sample_rate: int, prev: str = "",
               background: bool = False) -> Future:
        """A decode ahead of the end of the turn; cancellable until the service starts it.
        If the service fails it, the recognizer decodes again at the end of the turn."""
        out = _Cancellable(self.client)
        pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
        try:
            inner = self.client.request({"op": "transcribe", "rate": sample_rate,
                                         "since": time.monotonic(), "prev": prev,
                                         "background": background}, pcm, reconnect=False)
        except ServiceUnavailable as exc:
            out.set_exception(exc)
            return out
        out.rid = inner.rid

        def done(f: Future) -> None:
            exc = f.exception()
            try:
                if exc is not None:
                    out.set_exception(exc)
                else:
                    out.set_result(_transcript(f.result()[0]["transcript"]))
            except InvalidStateError:
                pass                    # cancelled meanwhile: nobody reads it

        inner.add_done_callback(done)
        return out

    @property
    def wait_s(self) -> float:
        """How long a recognizer waits for a decode the service has started."""
        return self.client.timeout_s

    @property
    def early_decode_s(self) -> float:
        return float(self.client.hello.get("early_decode_s", 0.0))

    def transcribe(self, samples: np.ndarray, sample_rate: int,
                   since: float | None = None, prev: str = "") -> Transcript:
        if samples.size == 0:
            return Transcript("", 0.0, self.name, True)
        pcm = np.clip(samples, -32768, 32767).astype("<i2").tobytes()
        try:
            header, _ = self.client.call({"op": "transcribe", "rate": sample_rate,
                                          "since": time.monotonic() if since is None
                                          else since, "prev": prev}, pcm)
            return _transcript(header["transcript"])
        except ServiceBusy as exc:
            # Full or too slow: one caller hears "could you repeat", rather than a second
            # model loaded into a machine that is already behind.
            self.client.log("recognition_overloaded", reason=str(exc))
            raise AsrOverloaded(str(exc)) from None
        except ServiceUnavailable as exc:
            return self.local(str(exc)).transcribe(samples, sample_rate,  # type: ignore
                                                   prev=prev)


class RemoteStreamRecognizer:
    """A streaming recognizer (Vosk) running in the service, one stream per call."""

    _ids = itertools.count(1)

    def __init__(self, engine: "RemoteStreamEngine", sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self.sid = next(self._ids)
        self._audio = bytearray()       # this utterance, for a replay if the stream is lost
        self._partial: Transcript | None = None
        self._hyp: Transcript | None = None
        self._spec = 0                  # number of the speculation a hypothesis must answer
        self._local: Recognizer | None = None
        self._lost = False              # the stream is gone; a local recognizer on next need
        self._generation = -1
        client = engine.client
        try:
            client.on_push(self.sid, self._pushed)
            client.post({"op": "open", "stream": self.sid, "rate": sample_rate})
            self._generation = client.generation
        except ServiceUnavailable:
            self._lost = True

    def _pushed(self, h: dict) -> None:
        if h["push"] == "partial":
            self._partial = _transcript(h["transcript"])
        elif h["push"] == "hypothesis" and h.get("spec") == self._spec:
            self._hyp = _transcript(h["transcript"])   # only for the current pause

    def _go_local(self, why: str) -> Recognizer:
        """Stream lost: a local recognizer hears this utterance again from its start."""
        if self._local is None:
            client = self.engine.client
            client.on_push(self.sid, None)
            if client.generation == self._generation:      # still there: free its stream
                try:
                    client.post({"op": "close", "stream": self.sid}, reconnect=False)
                except ServiceUnavailable:
                    pass
            self._local = self.engine.local(why).recognizer(self.sample_rate)
            if self._audio:
                self._local.accept(bytes(self._audio))
        return self._local

    def _send(self, header: dict, payload: bytes = b"") -> bool:
        """To the service's stream; False when it is lost (marked, nothing loaded here)."""
        if self._local is not None or self._lost:
            return False
        client = self.engine.client
        try:
            if client.generation != self._generation:
                raise ServiceUnavailable("recognition service restarted")
            client.post({**header, "stream": self.sid}, payload, reconnect=False)
            return True
        except ServiceUnavailable:
            self._lost = True
            return False

    def accept(self, pcm: bytes) -> Transcript | None:
        if self._local is not None:
            self._audio += pcm
            return self._local.accept(pcm)
        self._audio += pcm
        if self._send({"op": "audio"}, pcm):
            partial, self._partial = self._partial, None
            return partial
        self._go_local("recognition stream lost")     # replays the audio, this chunk too
        return None

    def speculate(self) -> None:
        self._spec += 1
        self._hyp = None
        if not self._send({"op": "speculate", "spec": self._spec}):
            self._go_local("recognition stream lost").speculate()

    def drop_speculation(self) -> None:
        self._spec += 1                 # a late answer to the last pause is ignored
        self._hyp = None
        if not self._send({"op": "drop"}):
            self._go_local("recognition stream lost").drop_speculation()

    def hypothesis(self) -> Transcript | None:
        if self._local is not None:
            return self._local.hypothesis()
        return self._hyp

    def commit(self, hypothesis: Transcript) -> Transcript:
        self._audio, self._hyp, self._partial = bytearray(), None, None
        self._spec += 1
        if self._local is not None:
            return self._local.commit(hypothesis)
        fields = {"text": hypothesis.text, "confidence": hypothesis.confidence,
                  "engine": hypothesis.engine, "final": True}
        self._send({"op": "commit", "transcript": fields})
        return Transcript(hypothesis.text, hypothesis.confidence, hypothesis.engine, True)

    def finish(self) -> Transcript:
        self._hyp = self._partial = None
        self._spec += 1
        if self._local is None and not self._lost:
            client = self.engine.client
            try:
                if client.generation != self._generation:
                    raise ServiceUnavailable("recognition service restarted")
                header, _ = client.call({"op": "finish", "stream": self.sid})
                self._audio = bytearray()
                return _transcript(header["transcript"])   # type: ignore[return-value]
            except ServiceBusy as exc:
                self._audio = bytearray()
                self.engine.client.log("recognition_overloaded", reason=str(exc))
                raise AsrOverloaded(str(exc)) from None
            except ServiceUnavailable:
                self._lost = True
        local = self._go_local("recognition stream lost")
        self._audio = bytearray()
        return local.finish()

    def close(self) -> None:
        self.engine.client.on_push(self.sid, None)
        if self._local is not None:
            self._local.close()
        else:
            self._send({"op": "close"})


class RemoteStreamEngine(RemoteEngineBase):
    """A streaming engine (Vosk) whose recognizers live in the service."""

    def recognizer(self, sample_rate: int = 8000) -> Recognizer:
        return RemoteStreamRecognizer(self, check_rate(sample_rate))

    def warm(self, speech: bytes, count: int = 1) -> None:
        """One recognizer on a few seconds of speech, whatever ``count``: the service's
        recognizers are pooled for every worker, so each worker adds one warm recognizer
        to that pool. Warming ``count`` of them on 15 s each from every worker at once
        (8 workers, 32 streams) kept the service busy past the 20 s answer timeout and
        the workers died before their first call."""
        r = self.recognizer(8000)
        speech = speech[:WARM_STREAM_S * 16000]
        for i in range(0, len(speech), 320):
            r.accept(speech[i:i + 320])
        r.finish()
        r.close()


class RemoteEncoder:
    """The sentence encoder of the service; a local one when the service is gone."""

    def __init__(self, client: ServiceClient, name: str, load_local: Callable[[], Any]) -> None:
        self.client = client
        self.name = name
        self._load_local = load_local
        self._local = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.dim = int(self.encode(["query: test"]).shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        try:
            header, payload = self.client.call({"op": "embed", "encoder": self.name,
                                                "texts": list(texts)})
            return np.frombuffer(payload, dtype=np.float32).reshape(header["shape"])
        except ServiceUnavailable as exc:
            if self._local is None:
                self._local = self._load_local()
                self.client.log("embedding_degraded", reason=str(exc))
            return self._local.encode(texts)

    def encode_one(self, text: str) -> np.ndarray:
        """Cached: the quick end-of-turn check and the final reading embed the same words."""
        with self._lock:
            hit = self._cache.get(text)
            if hit is not None:
                self._cache.move_to_end(text)
                return hit
        vec = self.encode([text])[0]
        with self._lock:
            self._cache[text] = vec
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return vec
