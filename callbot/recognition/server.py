"""The machine's recognition service: one copy of each model, every worker's requests.

Each worker process used to load its own Whisper model and decode on its own threads. On a
small machine that is the worst of both: N copies of the weights in memory, and N decodes
fighting over the same cores, each slowed by all the others, so that every waiting caller
finishes late (processor sharing). Here one process holds the models and decodes one
utterance at a time on every core, the caller who has waited longest first (the engine's
own queue, ordered by when each caller stopped speaking): the first caller in line is
answered as fast as on an idle machine, and the mean wait drops.

Requests (:mod:`callbot.recognition.wire` frames over a Unix socket, multiplexed by id):

- ``hello``: the engine, its model, the service's pid;
- ``transcribe`` (Whisper): one utterance of 16-bit PCM, ``since`` = when the caller
  stopped (``time.monotonic()``, the same clock in every process of the machine); refused
  with ``overloaded`` past ``recognition.queue`` waiting utterances, so a flood cannot
  grow the queue without bound;
- ``embed``: sentence vectors (float32) from the encoder the request names, on a thread of
  its own so that a 10 ms embedding never waits behind a 1 s decode;
- ``open`` / ``audio`` / ``speculate`` / ``drop`` / ``commit`` / ``finish`` / ``close``:
  a streaming recognizer (Vosk) per stream, its operations run in order on a small pool;
  partial transcripts and speculative hypotheses are pushed back as they appear;
- ``ping``: the queue's depth (the supervisor's health probe).

It knows nothing of SIP or calls: audio in, text and vectors out.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import struct
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..asr.base import AsrEngine, Recognizer, Transcript
from ..config import Config
from ..private import private_dir
from .wire import WireError, receive, send

STREAM_THREADS = 2


def transcript_fields(t: Transcript | None) -> dict[str, Any] | None:
    if t is None:
        return None
    return {"text": t.text, "confidence": t.confidence, "engine": t.engine, "final": t.final}


class Connection:
    """One worker process; replies and pushes are written under one lock."""

    def __init__(self, server: "RecognitionServer", sock: socket.socket, number: int) -> None:
        self.server = server
        self.sock = sock
        self.number = number
        self.lock = threading.Lock()
        self.streams: dict[int, "Stream"] = {}
        self.decodes: dict[Any, Any] = {}      # request id -> queued decode (cancellable)
        self.open = True
        self.worker = False                    # said hello (a probe only pings)

    def reply(self, header: dict, payload: bytes = b"") -> None:
        if not self.open:
            return
        try:
            with self.lock:
                send(self.sock, header, payload)
        except OSError:
            self.open = False
            try:
                self.sock.shutdown(socket.SHUT_RDWR)    # the worker sees the link lost
            except OSError:
                pass

    def error(self, rid: Any, message: str, kind: str = "failed") -> None:
        self.reply({"id": rid, "error": kind, "message": message})

    def serve(self) -> None:
        try:
            while True:
                header, payload = receive(self.sock)
                try:
                    self.server.handle(self, header, payload)
                except Exception as exc:   # noqa: BLE001 - one bad request, not the service
                    self.error(header.get("id"), f"{type(exc).__name__}: {exc}")
        except (WireError, OSError):
            pass
        finally:
            self.open = False
            for fut in list(self.decodes.values()):
                fut.cancel()        # nobody is left to read them
            for stream in list(self.streams.values()):
                stream.post(stream.close)
            self.streams.clear()
            try:
                self.sock.close()
            except OSError:
                pass
            self.server._open_connections.discard(self)
            if self.worker:         # (health probes come and go unannounced)
                self.server.log("disconnected", connection=self.number)


class Stream:
    """A streaming recognizer; its operations run one after the other, off the reader."""

    def __init__(self, conn: Connection, sid: int, rec: Recognizer,
                 pool: ThreadPoolExecutor) -> None:
        self.conn, self.sid, self.rec, self.pool = conn, sid, rec, pool
        self.ops: deque[Callable[[], None]] = deque()
        self.lock = threading.Lock()
        self.running = False

    def post(self, op: Callable[[], None]) -> None:
        with self.lock:
            self.ops.append(op)
            if self.running:
                return
            self.running = True
        self.pool.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self.lock:
                if not self.ops:
                    self.running = False
                    return
                op = self.ops.popleft()
            try:
                op()
            except Exception as exc:   # noqa: BLE001 - reported to the worker, stream kept
                self.conn.reply({"push": "error", "stream": self.sid,
                                 "message": f"{type(exc).__name__}: {exc}"})

    # operations (run in order on the pool)
    def audio(self, pcm: bytes) -> None:
        partial = self.rec.accept(pcm)
        if partial is not None:
            self.conn.reply({"push": "partial", "stream": self.sid,
                             "transcript": transcript_fields(partial)})

    def speculate(self, spec: int) -> None:
        self.rec.speculate()
        self.conn.reply({"push": "hypothesis", "stream": self.sid, "spec": spec,
                         "transcript": transcript_fields(self.rec.hypothesis())})

    def drop(self) -> None:
        self.rec.drop_speculation()

    def commit(self, fields: dict) -> None:
        self.rec.commit(Transcript(fields["text"], fields["confidence"], fields["engine"],
                                   True))

    def finish(self, rid: Any) -> None:
        try:
            result = self.rec.finish()
        except Exception as exc:   # noqa: BLE001 - answered, so the worker does not wait
            self.conn.error(rid, f"{type(exc).__name__}: {exc}")
            return
        self.conn.reply({"id": rid, "transcript": transcript_fields(result)})

    def close(self) -> None:
        self.rec.close()


class RecognitionServer:
    def __init__(self, config: Config, path: Path, queue_max: int = 64,
                 asr: AsrEngine | None = None, out=None) -> None:
        from ..asr import load_asr

        self.config = config
        self.path = Path(path)
        self.queue_max = queue_max
        self.out = out or sys.stdout
        self.asr = asr if asr is not None else load_asr(config)
        self._out_lock = threading.Lock()
        self._embed_q: queue.Queue = queue.Queue()
        self._streams = ThreadPoolExecutor(STREAM_THREADS, thread_name_prefix="stream")
        self._sock: socket.socket | None = None
        self._connections = 0
        self._open_connections: set[Connection] = set()
        self.stopping = False

    def log(self, event: str, **fields: Any) -> None:
        with self._out_lock:
            self.out.write(json.dumps({"event": event, "ts": round(time.time(), 3), **fields})
                           + "\n")
            self.out.flush()

    # --- requests ---------------------------------------------------------------------------
    def handle(self, conn: Connection, h: dict, payload: bytes) -> None:
        op, rid = h.get("op"), h.get("id")
        if op == "transcribe":
            self._transcribe(conn, rid, h, payload)
        elif op == "embed":
            self._embed_q.put((conn, rid, str(h["encoder"]), list(h["texts"])))
        elif op == "audio":
            s = conn.streams.get(h["stream"])
            if s is not None:
                s.post(lambda: s.audio(payload))
        elif op == "speculate":
            s = conn.streams.get(h["stream"])
            if s is not None:
                s.post(lambda: s.speculate(h.get("spec", 0)))
        elif op in ("drop", "close"):
            s = conn.streams.get(h["stream"])
            if s is not None:
                s.post(getattr(s, op))
                if op == "close":
                    del conn.streams[h["stream"]]
        elif op == "commit":
            s = conn.streams.get(h["stream"])
            if s is not None:
                s.post(lambda: s.commit(h["transcript"]))
        elif op == "finish":
            s = conn.streams.get(h["stream"])
            if s is None:
                conn.error(rid, f"no stream {h['stream']}")
            else:
                s.post(lambda: s.finish(rid))
        elif op == "open":
            rec = self.asr.recognizer(int(h.get("rate", 8000)))
            conn.streams[h["stream"]] = Stream(conn, h["stream"], rec, self._streams)
        elif op == "cancel":
            fut = conn.decodes.get(h.get("target"))
            # only if not started; its own request is then answered "cancelled"
            cancelled = fut.cancel() if fut is not None else False
            if rid is not None:
                conn.reply({"id": rid, "cancelled": cancelled})
        elif op == "stats":
            conn.reply({"id": rid, **self.stats()})
        elif op == "ping":
            since = getattr(self.asr, "decoding_since", None)
            conn.reply({"id": rid, "busy": self.busy,
                        "decoding_s": round(time.monotonic() - since, 1) if since else 0.0})
        elif op == "hello":
            if not conn.worker:
                conn.worker = True
                self.log("connected", connection=conn.number, worker_pid=h.get("pid"))
            conn.reply({"id": rid, "engine": self.asr.name, "model": self.asr.model,
                        "pid": os.getpid(), "batch": hasattr(self.asr, "enqueue"),
                        "early_decode_s": getattr(self.asr, "early_decode_s", 0.0)})
        else:
            conn.error(rid, f"unknown operation {op!r}")

    def stats(self) -> dict[str, Any]:
        """Queue wait and decode time (p50/p95 ms, waiting callers and background apart)
        of the decodes since the last call (benchmarks read it after each level)."""
        timings = getattr(self.asr, "timings", None)
        if timings is None:
            return {}
        rows = list(timings)
        timings.clear()
        out: dict[str, Any] = {"decodes": len(rows)}
        for name, bg in (("waiting", False), ("background", True)):
            sel = [r for r in rows if r[0] == bg]
            out[name] = {"n": len(sel)}
            for i, what in ((1, "queue"), (2, "decode")):
                vals = [r[i] for r in sel]
                if vals:
                    out[name][f"{what}_p50_ms"] = round(float(np.percentile(vals, 50)))
                    out[name][f"{what}_p95_ms"] = round(float(np.percentile(vals, 95)))
        return out

    @property
    def busy(self) -> int:
        return int(getattr(self.asr, "busy", 0))

    def _transcribe(self, conn: Connection, rid: Any, h: dict, payload: bytes) -> None:
        enqueue = getattr(self.asr, "enqueue", None)
        if enqueue is None:
            conn.error(rid, f"the {self.asr.name} engine streams: open a stream")
            return
        if self.busy >= self.queue_max:
            conn.error(rid, f"{self.busy} utterances waiting", kind="overloaded")
            return
        samples = np.frombuffer(payload[: len(payload) // 2 * 2], dtype="<i2").astype(
            np.float32)
        fut = enqueue(samples, int(h.get("rate", 8000)), h.get("since"), str(h.get("prev", "")),
                      bool(h.get("background", False)))
        conn.decodes[rid] = fut

        def done(f) -> None:
            conn.decodes.pop(rid, None)
            if f.cancelled():
                conn.error(rid, "cancelled", kind="cancelled")
                return
            exc = f.exception()
            if exc is not None:
                conn.error(rid, f"{type(exc).__name__}: {exc}")
            else:
                conn.reply({"id": rid, "transcript": transcript_fields(f.result()),
                            "busy": self.busy})

        fut.add_done_callback(done)

    def _embedder(self) -> None:
        from ..embedding import load_encoder

        while True:
            conn, rid, name, texts = self._embed_q.get()
            try:
                vectors = load_encoder(name, self.config.paths.models).encode(texts)
                vectors = np.ascontiguousarray(vectors, dtype=np.float32)
                conn.reply({"id": rid, "shape": list(vectors.shape)}, vectors.tobytes())
            except Exception as exc:   # noqa: BLE001 - the worker falls back on its own
                conn.error(rid, f"{type(exc).__name__}: {exc}")

    # --- lifecycle --------------------------------------------------------------------------
    def bind(self) -> None:
        """Listen on the socket (a stale file from a killed service is replaced), owner-only:
        the audio of calls crosses it."""
        private_dir(self.path.parent)
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(64)
        self._sock = sock

    def serve_forever(self) -> None:
        assert self._sock is not None, "bind() first"
        threading.Thread(target=self._embedder, name="embed", daemon=True).start()
        while not self.stopping:
            try:
                client, _ = self._sock.accept()
            except OSError:
                break
            self._connections += 1
            # A worker that stops reading (stopped, swapping) must not block the decoder
            # thread that answers it: a reply that cannot be sent in 2 s drops that link.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", 2, 0))
            conn = Connection(self, client, self._connections)
            self._open_connections.add(conn)
            threading.Thread(target=conn.serve, name=f"conn-{conn.number}",
                             daemon=True).start()

    def close(self) -> None:
        self.stopping = True
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        for conn in list(self._open_connections):     # the workers see the service gone
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
