"""20 ms frames between pjsua2's conference bridge and Python, on the bridge's clock thread.

Every frame callback of every call runs on ONE clock thread holding the GIL, so these
callbacks only copy bytes: caller audio goes into a queue drained by the call's worker
thread; bot audio comes from a callable that must be cheap and thread-safe
(``CallSession.pull``). ``frame.buf`` is a SWIG ByteVector whose element-by-element
iteration costs ~450 µs a frame; the ctypes path below (libstdc++ vector layout: the first
word of the vector is its data pointer) costs a few µs and is what keeps 60+ calls per core.
"""

from __future__ import annotations

import ctypes
import queue
import time
from typing import Callable

import pjsua2 as pj

from callbot.audio import FRAME_MS, TELEPHONY_RATE, frame_bytes

from .priority import OnFirstCall

RATE = TELEPHONY_RATE
FRAME_BYTES = frame_bytes(RATE, FRAME_MS)      # 320: 160 samples of 16-bit mono
SILENCE = b"\x00" * FRAME_BYTES


def audio_format(rate: int = RATE) -> pj.MediaFormatAudio:
    fmt = pj.MediaFormatAudio()
    fmt.type = pj.PJMEDIA_TYPE_AUDIO
    fmt.id = pj.PJMEDIA_FORMAT_PCM
    fmt.clockRate = rate
    fmt.channelCount = 1
    fmt.bitsPerSample = 16
    fmt.frameTimeUsec = FRAME_MS * 1000
    fmt.avgBps = rate * 16
    fmt.maxBps = rate * 16
    return fmt


def read_buf(buf: "pj.ByteVector", size: int) -> bytes:
    """Copy ``size`` bytes out of a ByteVector without iterating it."""
    n = min(size, buf.size())
    if n <= 0:
        return b""
    begin = ctypes.c_void_p.from_address(int(buf.this)).value
    return ctypes.string_at(begin, n)


def write_buf(buf: "pj.ByteVector", data: bytes) -> None:
    """Replace a ByteVector's content with ``data`` without building a new vector."""
    buf.resize(len(data))
    begin = ctypes.c_void_p.from_address(int(buf.this)).value
    ctypes.memmove(begin, data, len(data))


class FrameStats:
    """Callback timing on the clock thread (interval between frames and time spent)."""

    __slots__ = ("count", "last", "max_gap_ms", "gaps_over_30", "busy_s", "tx_busy_s",
                 "tx_count")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.max_gap_ms = 0.0
        self.gaps_over_30 = 0
        self.busy_s = 0.0
        self.tx_busy_s = 0.0
        self.tx_count = 0

    def tick(self, now: float) -> None:
        if self.last:
            gap = (now - self.last) * 1000.0
            if gap > self.max_gap_ms:
                self.max_gap_ms = gap
            if gap > 30.0:
                self.gaps_over_30 += 1
        self.last = now
        self.count += 1

    def to_json(self) -> dict:
        return {"frames": self.count, "max_gap_ms": round(self.max_gap_ms, 1),
                "gaps_over_30ms": self.gaps_over_30,
                "callback_us": round(self.busy_s / max(1, self.count) * 1e6, 1),
                "tx_callback_us": round(self.tx_busy_s / max(1, self.tx_count) * 1e6, 1)}


class CallPort(pj.AudioMediaPort):
    """One call's port on the bridge: caller frames → ``inbox``; ``source()`` → caller.

    ``source`` is replaced (not wrapped) when the call must say something the session
    did not queue; a plain attribute read is atomic under the GIL.
    """

    def __init__(self, name: str, inbox: "queue.SimpleQueue[bytes]",
                 source: Callable[[], bytes], on_clock: OnFirstCall | None = None) -> None:
        super().__init__()
        self.inbox = inbox
        self.source = source
        self.on_clock = on_clock or OnFirstCall(None)
        self.rx = FrameStats()
        self.createPort(name, audio_format())

    @staticmethod
    def silence() -> bytes:
        return SILENCE

    nowhere: "queue.SimpleQueue[bytes]"   # set below: a sink for frames after the call ended

    def onFrameReceived(self, frame: "pj.MediaFrame") -> None:
        t0 = time.perf_counter()
        try:
            self.rx.tick(t0)
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size:
                self.inbox.put(read_buf(frame.buf, frame.size))
            else:
                self.inbox.put(SILENCE)
        except Exception:  # an exception must never unwind into the clock thread
            pass
        self.rx.busy_s += time.perf_counter() - t0

    def onFrameRequested(self, frame: "pj.MediaFrame") -> None:
        t0 = time.perf_counter()
        self.on_clock()
        try:
            pcm = self.source()
            if len(pcm) != FRAME_BYTES:
                pcm = (pcm + SILENCE)[:FRAME_BYTES]
            write_buf(frame.buf, pcm)
            frame.size = FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        except Exception:
            pass
        self.rx.tx_busy_s += time.perf_counter() - t0
        self.rx.tx_count += 1


class _Sink:
    """Swallows frames that arrive after the call's runner stopped."""

    def put(self, item: bytes) -> None:
        pass


CallPort.nowhere = _Sink()  # type: ignore[assignment]


def stream_stats(call: pj.Call) -> dict:
    """Jitter buffer and RTP receive figures of the call's first active audio stream.

    The stream is gone once the call is disconnected, so callers sample this while the call
    is up and keep the last value.
    """
    try:
        info = call.getInfo()
        for i, m in enumerate(info.media):
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                st = call.getStreamStat(i)
                jb, rx = st.jbuf, st.rtcp.rxStat
                return {"jb_lost": jb.lost, "jb_discard": jb.discard, "jb_empty": jb.empty,
                        "jb_avg_delay_ms": jb.avgDelayMsec, "rtp_rx": rx.pkt,
                        "rtp_loss": rx.loss, "jitter_us_max": rx.jitterUsec.max}
    except pj.Error:
        pass
    return {}


class PortPool:
    """Call ports created once and reused: a port is never destroyed while calls run.

    Destroying an AudioMediaPort removes it from the bridge, and pjmedia may carry that out
    on the clock thread's next tick, after the C++ object (whose callbacks the tick would
    call) is gone. Reusing ports keeps that window out of the call path entirely (ports are
    destroyed only at shutdown, when no call is left), and saves a pool and a bridge slot
    allocation per call. A released port stays out of use for ``linger_s`` so that frames
    already in flight for the old call never reach the new one.
    """

    def __init__(self, size: int, linger_s: float = 0.2,
                 on_clock: Callable[[], None] | None = None) -> None:
        """``on_clock``: run once on the media clock thread, at the first frame (priority)."""
        self.linger_s = linger_s
        hook = OnFirstCall(on_clock)
        self.free: list[CallPort] = [CallPort(f"call-port-{i}", CallPort.nowhere,
                                              CallPort.silence, hook) for i in range(size)]
        self.resting: list[tuple[float, CallPort]] = []

    def acquire(self, inbox: "queue.SimpleQueue[bytes]",
                source: Callable[[], bytes]) -> CallPort | None:
        self.tick(time.monotonic())
        if not self.free:
            return None
        port = self.free.pop()
        port.rx = FrameStats()
        port.inbox = inbox
        port.source = source
        return port

    def release(self, port: CallPort) -> None:
        port.source = CallPort.silence
        port.inbox = CallPort.nowhere
        self.resting.append((time.monotonic(), port))

    def tick(self, now: float) -> None:
        while self.resting and now - self.resting[0][0] >= self.linger_s:
            self.free.append(self.resting.pop(0)[1])

    def close(self) -> None:
        """Drop every port (shutdown only, after every call has ended)."""
        self.free.clear()
        self.resting.clear()
