"""Start and stop one pjsua2 Endpoint the way the measurements (shared/notes/telephony.md) say works.

One Endpoint per process, no sound device (the null device's clock drives the conference
bridge), ``threadCnt=0`` + ``mainThreadOnly=True`` so that every SIP callback, DTMF included,
arrives on the thread that polls :meth:`Endpoint.libHandleEvents`. The bridge runs at 8 kHz
so that G.711 calls are never resampled. Both the worker and the test caller use this.
"""

from __future__ import annotations

import gc
import os
import sys
from dataclasses import dataclass, field

import pjsua2 as pj

from callbot.audio import FRAME_MS
from callbot.errors import ConfigError

BRIDGE_RATE = 8000


class StderrLog(pj.LogWriter):
    """pjsip writes its log to stdout by default; stdout carries our JSON events."""

    def write(self, entry: "pj.LogEntry") -> None:
        try:
            sys.stderr.write(entry.msg if entry.msg.endswith("\n") else entry.msg + "\n")
        except Exception:  # never raise into C++
            pass


@dataclass
class PjStack:
    """The Endpoint and what must outlive it (the log writer)."""

    ep: pj.Endpoint
    log: StderrLog
    transports: dict[str, int] = field(default_factory=dict)

    def poll(self, ms: int = 10) -> None:
        self.ep.libHandleEvents(ms)

    def destroy(self) -> None:
        """Every Call, port, player and recorder must be unreferenced before this."""
        gc.collect()
        self.ep.libDestroy()


def create_stack(max_calls: int, log_level: int = 1, user_agent: str = "callbot",
                 ep: pj.Endpoint | None = None, jitter_ms: int = 40) -> PjStack:
    """``ep``: an Endpoint subclass instance when the caller overrides its callbacks.

    ``jitter_ms``: the receive jitter buffer's initial and minimum prefetch. pjsua's adaptive
    default settles at one frame (20 ms), so a single packet sent 12 ms late by a busy peer
    becomes a lost frame; two frames absorb the late clock ticks measured on 2-core hosts.
    """
    ep = ep or pj.Endpoint()
    # libCreate logs at level 5 to stdout before any log configuration applies; stdout
    # carries our JSON events, so point file descriptor 1 at stderr while it runs.
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        ep.libCreate()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = True
    cfg.uaConfig.maxCalls = max_calls
    cfg.uaConfig.userAgent = user_agent
    cfg.medConfig.clockRate = BRIDGE_RATE
    cfg.medConfig.sndClockRate = BRIDGE_RATE
    cfg.medConfig.audioFramePtime = FRAME_MS
    cfg.medConfig.ptime = FRAME_MS
    cfg.medConfig.noVad = True
    cfg.medConfig.ecTailLen = 0
    cfg.medConfig.jbInit = jitter_ms
    # Keep the null device (the bridge's clock) running when no call is up: closing it after
    # 1 s idle (the default) would also freeze pending bridge removals until the next call.
    cfg.medConfig.sndAutoCloseTime = -1
    cfg.medConfig.jbMinPre = jitter_ms
    log = StderrLog()
    cfg.logConfig.writer = log
    cfg.logConfig.level = log_level
    cfg.logConfig.consoleLevel = log_level
    cfg.logConfig.msgLogging = 1 if log_level >= 4 else 0
    cfg.logConfig.decor = cfg.logConfig.decor & ~pj.PJ_LOG_HAS_NEWLINE
    ep.libInit(cfg)
    return PjStack(ep, log)


def add_transports(stack: PjStack, bind: str, port: int, transports: tuple[str, ...] | list[str],
                   public_address: str = "") -> dict[str, int]:
    """UDP and/or TCP on bind:port (port 0: let the system choose, for the test caller)."""
    kinds = {"udp": pj.PJSIP_TRANSPORT_UDP, "tcp": pj.PJSIP_TRANSPORT_TCP}
    if ":" in bind:
        kinds = {"udp": pj.PJSIP_TRANSPORT_UDP6, "tcp": pj.PJSIP_TRANSPORT_TCP6}
    for name in transports:
        tc = pj.TransportConfig()
        tc.port = port
        tc.boundAddress = bind
        if public_address:
            tc.publicAddress = public_address
        try:
            stack.transports[name] = stack.ep.transportCreate(kinds[name], tc)
        except pj.Error as exc:
            raise ConfigError(f"sip: cannot open SIP {name.upper()} on {bind}:{port}: "
                              f"{exc.reason} (sip.port / --port)") from None
        if port == 0:  # the UDP transport chose a port: TCP takes the same one
            port = int(stack.ep.transportGetInfo(stack.transports[name]).localName
                       .rsplit(":", 1)[1])
    return stack.transports


def local_port(stack: PjStack) -> int:
    tid = next(iter(stack.transports.values()))
    return int(stack.ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])


def start(stack: PjStack) -> None:
    stack.ep.libStart()
    stack.ep.audDevManager().setNullDev()


def set_codecs(stack: PjStack, wanted: tuple[str, ...] | list[str]) -> list[str]:
    """Disable every codec, then enable ``wanted`` best first (two pjsua2 peers pick speex
    otherwise). Returns the codec ids enabled; an unavailable name is a ConfigError."""
    ids = [c.codecId for c in stack.ep.codecEnum2()]
    for cid in ids:
        stack.ep.codecSetPriority(cid, 0)
    enabled: list[str] = []
    priority = 255
    for name in wanted:
        want = name.lower()
        match = [cid for cid in ids
                 if cid.lower() == want or cid.lower().startswith(want + "/")]
        if not match:
            raise ConfigError(f"sip.codecs: codec {name!r} is not in this pjsua2 build "
                              f"(it has: {', '.join(sorted(ids))})")
        for cid in match:
            stack.ep.codecSetPriority(cid, priority)
            enabled.append(cid)
            priority -= 1
    return enabled
