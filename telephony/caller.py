"""A scripted pjsua2 caller: ``callbot call SIP_URI --wav q.wav --dtmf 0 --record reply.wav``.

It behaves like a polite person on the phone: each turn (a WAV played, or keys pressed)
starts once the bot has spoken and then stayed quiet for ``silence_ms``, judged from what
the caller actually hears, so the script needs no knowledge of the bot's timings. It
records everything it hears, follows a REFER like a phone would (or refuses it, to test
the bot's fallback), and prints what happened as JSON lines: answered, each turn, the
transfer request (target and X-Callbot headers), and who hung up.
"""

from __future__ import annotations

import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import numpy as np
import pjsua2 as pj

from callbot.audio import FRAME_MS, read_wav, write_wav

from . import pjlib
from .jsonlog import JsonLog
from .media import FRAME_BYTES, SILENCE, audio_format, read_buf, stream_stats, write_buf

VOICE_RMS = 300.0     # ~ -40 dBFS: above this, a heard frame is the bot speaking


@dataclass(frozen=True)
class Turn:
    kind: str          # "wav" | "dtmf"
    value: str


@dataclass
class CallerOptions:
    uri: str
    turns: list[Turn] = field(default_factory=list)
    record: str | None = None
    timeout_s: float = 60.0
    silence_ms: int = 1000
    bind: str = "127.0.0.1"
    refuse_transfer: bool = False
    dtmf_method: str = "rfc2833"     # rfc2833 | info
    hangup_after_turns_s: float = 0.0   # >0: hang up this long after the last turn
    transfer_hold_s: float = 2.0        # stay this long on a transferred call, then hang up
    codecs: tuple[str, ...] = ("PCMA", "PCMU", "G722")
    log_level: int = 0


class Ear(pj.AudioMediaPort):
    """The caller's port: records what it hears, speaks the queued frames."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: list[bytes] = []
        self.mouth: deque[bytes] = deque()
        self.frames = 0
        self.last_voice = -1          # frame index of the last voiced frame heard
        self.voiced = 0
        self.createPort("caller", audio_format())

    def onFrameReceived(self, frame: "pj.MediaFrame") -> None:
        try:
            pcm = read_buf(frame.buf, frame.size) if frame.size else SILENCE
            if len(pcm) != FRAME_BYTES:
                pcm = (pcm + SILENCE)[:FRAME_BYTES]
            self.heard.append(pcm)
            x = np.frombuffer(pcm, dtype="<i2").astype(np.float32)
            if math.sqrt(float(np.dot(x, x)) / x.size) > VOICE_RMS:
                self.last_voice = self.frames
                self.voiced += 1
            self.frames += 1
        except Exception:
            pass

    def onFrameRequested(self, frame: "pj.MediaFrame") -> None:
        try:
            pcm = self.mouth.popleft() if self.mouth else SILENCE
            write_buf(frame.buf, pcm)
            frame.size = FRAME_BYTES
            frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        except Exception:
            pass

    def say(self, pcm: bytes) -> None:
        n = FRAME_BYTES
        if len(pcm) % n:
            pcm += b"\x00" * (n - len(pcm) % n)
        self.mouth.extend(pcm[i:i + n] for i in range(0, len(pcm), n))

    @property
    def speaking(self) -> bool:
        return bool(self.mouth)


def parse_headers(message: str) -> dict[str, str]:
    head = message.split("\r\n\r\n", 1)[0]
    out: dict[str, str] = {}
    for line in head.split("\r\n")[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            out[name.strip()] = value.strip()
    return out


def refer_to(headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """Refer-To target without its header params, and those params (unescaped)."""
    raw = headers.get("Refer-To") or headers.get("r") or ""
    m = re.search(r"<([^>]*)>", raw)
    uri = m.group(1) if m else raw
    base, _, query = uri.partition("?")
    params = {}
    for part in filter(None, query.split("&")):
        k, _, v = part.partition("=")
        params[unquote(k)] = unquote(v)
    return base, params


class Dialer:
    """Owns the pjsua2 stack and the calls of one scripted call (plus a transferred leg)."""

    def __init__(self, opts: CallerOptions, out=None) -> None:
        self.opts = opts
        self.t0 = time.monotonic()
        self.log = JsonLog(out, clock=lambda: time.monotonic() - self.t0, keep=True)
        self.stack: pjlib.PjStack | None = None
        self.account: pj.Account | None = None
        self.ear: Ear | None = None
        self.calls: list[CallerCall] = []
        self.hung_up_by: str | None = None

    def emit(self, event: str, **fields: Any) -> None:
        """One JSON line; ``t`` is seconds since the caller started."""
        self.log(event, **fields)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Everything this caller reported, in order."""
        return self.log.records or []

    def run(self) -> int:
        o = self.opts
        transport = "tcp" if re.search(r";transport=tcp", o.uri, re.I) else "udp"
        # A measuring instrument: a deeper jitter buffer than a phone's, so what it records
        # is what the bot sent, not the caller's own underflows.
        self.stack = pjlib.create_stack(4, o.log_level, user_agent="callbot-caller",
                                        jitter_ms=60)
        try:
            pjlib.add_transports(self.stack, o.bind, 0, [transport])
            pjlib.start(self.stack)
            pjlib.set_codecs(self.stack, o.codecs)
            port = pjlib.local_port(self.stack)
            cfg = pj.AccountConfig()
            cfg.idUri = f"sip:caller@{o.bind}:{port}"
            cfg.mediaConfig.transportConfig.boundAddress = o.bind
            self.account = pj.Account()
            self.account.create(cfg, True)
            self.ear = Ear()
            return self._call()
        finally:
            self._release()

    def _call(self) -> int:
        o = self.opts
        turns = [self._load(t) for t in o.turns]
        first = CallerCall(self, "bot")
        self.calls.append(first)
        self.emit("calling", uri=o.uri)
        first.makeCall(o.uri, pj.CallOpParam(True))
        deadline = self.t0 + o.timeout_s
        heard_at_turn = -1        # bot frames: a turn waits for new bot speech after the last
        hangup_at = None
        next_stats = 0.0
        while time.monotonic() < deadline:
            self.stack.poll(10)
            self._end_transferred_legs()
            if time.monotonic() >= next_stats:
                next_stats = time.monotonic() + 0.5
                for c in self.calls:
                    if c.state == "confirmed":
                        c.stats = stream_stats(c) or c.stats
            if first.state == "disconnected" and all(c.state in ("disconnected", "never")
                                                     for c in self.calls):
                break
            if first.state != "confirmed" or self.ear is None:
                continue
            ear = self.ear
            quiet_ms = (ear.frames - ear.last_voice) * FRAME_MS
            if turns and not ear.speaking and ear.last_voice > heard_at_turn \
                    and quiet_ms >= o.silence_ms:
                kind, value, pcm = turns.pop(0)
                heard_at_turn = ear.frames
                if kind == "wav":
                    ear.say(pcm)
                    self.emit("turn", kind="wav", file=value, ms=len(pcm) // 16)
                else:
                    first.send_keys(value, o.dtmf_method)
                    self.emit("turn", kind="dtmf", keys=value, method=o.dtmf_method)
                if not turns and o.hangup_after_turns_s > 0:
                    hangup_at = time.monotonic() + o.hangup_after_turns_s + len(pcm or b"") / 16000
            if hangup_at is not None and time.monotonic() >= hangup_at:
                hangup_at = None
                self.hang_up_all("caller")
        else:
            self.emit("timeout", after_s=o.timeout_s)
            self.hang_up_all("caller_timeout")
            end = time.monotonic() + 2
            while time.monotonic() < end and any(c.state not in ("disconnected", "never")
                                                  for c in self.calls):
                self.stack.poll(10)
        if o.record and self.ear is not None:
            write_wav(o.record, b"".join(self.ear.heard))
        ear = self.ear
        self.emit("done", answered=first.answered, hung_up_by=first.hung_up_by,
                  heard_ms=(ear.frames * FRAME_MS if ear else 0),
                  bot_voice_ms=(ear.voiced * FRAME_MS if ear else 0), record=o.record)
        return 0 if first.answered else 1

    def _end_transferred_legs(self) -> None:
        now = time.monotonic()
        for c in self.calls:
            if c.leg == "transfer" and c.state == "confirmed" and c.confirmed_at \
                    and now - c.confirmed_at >= self.opts.transfer_hold_s and not c.hung_up_by:
                c.hung_up_by = "caller"
                try:
                    c.hangup(pj.CallOpParam(True))
                except pj.Error:
                    pass

    def hang_up_all(self, by: str) -> None:
        for c in self.calls:
            if c.state not in ("disconnected", "never"):
                c.hung_up_by = c.hung_up_by or by
                try:
                    c.hangup(pj.CallOpParam(True))
                except pj.Error:
                    pass

    @staticmethod
    def _load(turn: Turn) -> tuple[str, str, bytes | None]:
        if turn.kind == "wav":
            return "wav", turn.value, read_wav(turn.value).tobytes()
        return "dtmf", turn.value, None

    def connect(self, call: "CallerCall") -> None:
        info = call.getInfo()
        for i, m in enumerate(info.media):
            if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                am = call.getAudioMedia(i)
                am.startTransmit(self.ear)
                self.ear.startTransmit(am)
                try:
                    codec = call.getStreamInfo(i).codecName
                except pj.Error:
                    codec = "?"
                self.emit("media", leg=call.leg, codec=codec)

    def _release(self) -> None:
        """Drop every pjsua2 object before libDestroy (which aborts otherwise)."""
        stack = self.stack
        if stack is None:
            return
        for c in self.calls:
            c.dialer = None
        c = None  # noqa: F841 -- a loop variable would keep the last call alive past libDestroy
        self.calls.clear()
        self.ear = None
        if self.account is not None:
            try:
                self.account.shutdown()
            except pj.Error:
                pass
        self.account = None
        self.stack = None
        stack.destroy()


class CallerCall(pj.Call):
    def __init__(self, dialer: Dialer, leg: str) -> None:
        super().__init__(dialer.account)
        self.dialer = dialer
        self.leg = leg               # "bot" | "transfer"
        self.state = "never"
        self.answered = False
        self.confirmed_at = 0.0
        self.hung_up_by: str | None = None
        self.stats: dict = {}

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        d = self.dialer
        if d is None:
            return
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.state = "confirmed"
            self.answered = True
            self.confirmed_at = time.monotonic()
            d.emit("answered", leg=self.leg, remote=info.remoteUri, call=info.callIdString)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.state = "disconnected"
            self.hung_up_by = self.hung_up_by or ("bot" if self.leg == "bot" else "remote")
            d.emit("hangup", leg=self.leg, by=self.hung_up_by, code=info.lastStatusCode,
                   reason=info.lastReason, answered=self.answered, rx=self.stats)
        elif self.state == "never":
            self.state = "early"

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        if self.dialer is not None:
            self.dialer.connect(self)

    def onCallTsxState(self, prm: pj.OnCallTsxStateParam) -> None:
        d = self.dialer
        e = prm.e
        if d is None or e.type != pj.PJSIP_EVENT_TSX_STATE:
            return
        ts = e.body.tsxState
        if ts.type != pj.PJSIP_EVENT_RX_MSG or ts.tsx.role != pj.PJSIP_ROLE_UAS:
            return
        if ts.tsx.method != "REFER" or ts.tsx.state != pj.PJSIP_TSX_STATE_TRYING:
            return
        headers = parse_headers(ts.src.rdata.wholeMsg)
        target, uri_headers = refer_to(headers)
        d.emit("transfer_request", target=target,
               headers={k: v for k, v in headers.items() if k.lower().startswith("x-callbot")},
               refer_to_headers=uri_headers, accepted=not d.opts.refuse_transfer)

    def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
        d = self.dialer
        if d is None or d.opts.refuse_transfer:
            prm.statusCode = 603
            return
        new = CallerCall(d, "transfer")
        d.calls.append(new)
        prm.newCall = new

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        if self.dialer is not None:
            self.dialer.emit("dtmf_heard", digit=prm.digit)

    def send_keys(self, keys: str, method: str) -> None:
        if method == "info":
            p = pj.CallSendDtmfParam()
            p.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
            p.digits = keys
            self.sendDtmf(p)
        else:
            self.dialDtmf(keys)


def run(opts: CallerOptions) -> int:
    for t in opts.turns:
        if t.kind == "wav":
            read_wav(t.value)          # a bad file fails before any SIP traffic
    return Dialer(opts).run()
