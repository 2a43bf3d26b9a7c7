"""One answered call on the SIP side: pjsua2 callbacks, media wiring, and how it ends.

Everything here runs on the worker's main loop thread (``threadCnt=0``, ``mainThreadOnly``),
so it may call pjsua freely; the session itself lives on the call's runner thread, and the
two talk through queues only (:class:`CallRunner` commands one way, :class:`Action` the
other). The ending follows the session: a HangUp hangs up once the last words are played;
a Transfer sends a blind REFER and follows its NOTIFYs, hanging up the bot's leg on success
(the transferee does not); a refused or silent REFER (or bridge, when bridging the caller
to the queue from here is configured) ends in the dialogue's callback offer
(``transfer.callback``), or in the configured fallback text.
"""

from __future__ import annotations

import collections
import queue
import time
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

import pjsua2 as pj

from callbot.events import HangUp, Transfer

from .media import CallPort, stream_stats
from .runner import Action, CallRunner
from .transcript import caller_number, new_recorder
from .transfer import context_headers, refer_target

if TYPE_CHECKING:
    from callbot.session import Engines

    from .media import PortPool
    from .runner import Log, RunnerPool
    from .settings import TelephonySettings

TAIL_S = 0.3    # after the last frame is pulled, let it cross the jitter buffer before BYE
HOLD_GAP_S = 1.5   # longest silence a caller hears while a transfer is pending
BYE_GIVE_UP_S = 40.0   # our BYE unanswered this long (past its 32 s transaction): call over
REASONS = {403: "Forbidden", 486: "Busy Here"}


class Phase(str, Enum):
    """Where a call is. new → answered → talking → hangup | transferring → (transferred |
    fallback | talking again for the callback offer | bridging → bridged) → hangup_sent →
    gone; refused INVITEs go straight to gone."""

    NEW = "new"
    ANSWERED = "answered"
    TALKING = "talking"
    HANGUP = "hangup"
    TRANSFERRING = "transferring"
    TRANSFERRED = "transferred"
    FALLBACK = "fallback"
    BRIDGING = "bridging"
    BRIDGED = "bridged"
    HANGUP_SENT = "hangup_sent"
    GONE = "gone"


@dataclass(frozen=True)
class CallContext:
    """What a call may use of its worker: the shared engines, pools and store, the log, and
    three callbacks. The call owns everything else and tears itself down."""

    settings: "TelephonySettings"
    engines: "Engines"
    store: Any                       # the worker's transcript store, or None
    metrics: Any                     # the worker's SipMetrics, or None (not collected)
    ports: "PortPool"
    pool: "RunnerPool"
    log: "Log"
    worker_port: int
    post: Callable[[Action], None]   # runner threads → the main loop
    forget: Callable[["BotCall"], None]   # the worker drops a call that is over
    bury: Callable[[Any], None]      # keep a pjsua2 call object until pjsua is done with it
    bridge_ports: Callable[[], int | None]


def _audio_media(call: pj.Call) -> list[pj.AudioMedia]:
    out = []
    try:
        info = call.getInfo()
    except pj.Error:
        return out
    for i, m in enumerate(info.media):
        if m.type == pj.PJMEDIA_TYPE_AUDIO and m.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
            try:
                out.append(call.getAudioMedia(i))
            except pj.Error:
                pass
    return out


def _op(code: int = 0, headers: list[tuple[str, str]] | None = None) -> pj.CallOpParam:
    prm = pj.CallOpParam(True)
    if code:
        prm.statusCode = code
    for name, value in headers or []:
        h = pj.SipHeader()
        h.hName, h.hValue = name, value
        prm.txOption.headers.append(h)
    return prm


class BotCall(pj.Call):
    """An incoming call the bot answers (or refuses)."""

    def __init__(self, context: CallContext, account: pj.Account, call_id: int, key: int,
                 source: str) -> None:
        super().__init__(account, call_id)
        self.context = context
        self.key = key
        self.source = source
        self.sip_call_id = ""
        self.account = account          # a bridged transfer leaves through the same account
        self.phase = Phase.NEW
        self.refused = False
        self.inbox: "queue.SimpleQueue[bytes]" = queue.SimpleQueue()
        self.port: CallPort | None = None
        self.runner: CallRunner | None = None
        self.media: list[pj.AudioMedia] = []
        self.bridge: BridgeCall | None = None
        self.hangup_at: float | None = None
        self.deadline: float | None = None
        self.quiet_since = 0.0            # last moment the caller heard the bot (dead air)
        self.transfer: Transfer | None = None
        self.hung_up_by = ""
        self.opened = time.monotonic()
        self.stats: dict = {}
        self.stats_at = 0.0
        self.alive_check_at = 0.0         # next check that pjsua still holds the session
        self.hangup_sent_at = 0.0
        self.bridged_at = 0.0
        self.confirmed = False            # the caller's ACK came
        self.media_seen = False           # ...and at least one RTP packet
        self.dtmf_times: "collections.deque[float]" = collections.deque()
        self.dtmf_count = 0
        self.flood_logged = False
        self.recorder = None            # callbot.transcripts.CallRecorder once talking
        self.metered = None             # callbot.metrics.CallMetrics once talking
        self.error = ""                 # why the call broke, for its transcript
        self.caller_id: str | None = None   # the From user part, offered for a callback

    # --- SIP callbacks (main thread) ----------------------------------------------------------
    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            info = self.getInfo()
        except pj.Error:
            # pjsua already ended the INVITE session ("INVITE session already terminated"):
            # this was its last state change. Returning here once left the call, and its
            # slot, held until the worker stopped (a soak: 6 of 8 lines held for minutes).
            self.gone_unseen("session ended before its state could be read")
            return
        self.sip_call_id = self.sip_call_id or info.callIdString
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.refused:
            self.confirmed = True
            self.context.log("answered", call=self.sip_call_id, key=self.key, source=self.source)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            if not self.hung_up_by:
                self.hung_up_by = "caller"
            self.teardown(info.lastStatusCode, info.lastReason)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        media = _audio_media(self)
        if not media or self.phase in (Phase.HANGUP_SENT, Phase.GONE):
            return
        if self.port is None:
            self._start_session()
        if self.port is not None:
            self._connect(media)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        if not self._dtmf_allowed():
            return
        method = {0: "rfc2833", 1: "sip_info"}.get(prm.method, str(prm.method))
        log = self.context.log
        log("dtmf", call=self.sip_call_id, method=method, **log.personal(digit=prm.digit))
        if self.runner is not None and self.phase is Phase.TALKING:
            self.runner.dtmf(prm.digit)

    def _dtmf_allowed(self) -> bool:
        """A person types a few keys a second and a SIREN is 9 to 14 keys; beyond
        ``sip.dtmf_per_s`` per second or ``sip.dtmf_per_call`` in all, keys are a flood:
        ignored (each one would be a turn, log lines and a transcript write)."""
        sip = self.context.settings.sip
        now = time.monotonic()
        while self.dtmf_times and now - self.dtmf_times[0] > 1.0:
            self.dtmf_times.popleft()
        self.dtmf_count += 1
        if len(self.dtmf_times) >= sip.dtmf_per_s or self.dtmf_count > sip.dtmf_per_call:
            if self.dtmf_count == sip.dtmf_per_call + 1 or not self.flood_logged:
                self.flood_logged = True
                self.context.log("dtmf_flood", call=self.sip_call_id, keys=self.dtmf_count)
            return False
        self.dtmf_times.append(now)
        return True

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        self.context.log("transfer_status", call=self.sip_call_id, code=prm.statusCode,
                        reason=prm.reason, final=prm.finalNotify)
        if self.phase is not Phase.TRANSFERRING:
            prm.cont = False
            return
        if 200 <= prm.statusCode < 300 and prm.finalNotify:
            self.phase = Phase.TRANSFERRED
            self.context.log("transferred", call=self.sip_call_id)
            self.record_transfer("accepted")
            self.hangup_at = time.monotonic()   # the transferee keeps our leg up otherwise
            prm.cont = False
        elif prm.statusCode >= 300 or prm.finalNotify:
            prm.cont = False
            self.transfer_failed(f"{prm.statusCode} {prm.reason}".strip())
        else:
            prm.cont = True

    # --- driven by the worker's main loop --------------------------------------------------
    def answer_with(self, code: int, reason: str = "") -> None:
        """200 answers; anything else refuses the INVITE (403, 486, 503...)."""
        if self.context.metrics is not None:
            self.context.metrics.response(code)
        if code >= 300:
            self.refused = True
            self.phase = Phase.GONE
            self.hung_up_by = "bot"
            prm = _op(code, [("Retry-After", "5")] if code == 503 else None)
            reason = reason or REASONS.get(code, "")
            if reason:
                prm.reason = reason
            self.hangup(prm)
        else:
            self.phase = Phase.ANSWERED
            try:
                self.answer(_op(200))
            except pj.Error as exc:   # cancelled by the caller while we decided
                self.gone_unseen(f"not answered: {exc.info(False).strip()[:120]}")

    def on_action(self, action: Action) -> None:
        if action.kind == "ended":
            self.ending(action.payload)
        elif action.kind == "said" and self.phase is Phase.FALLBACK:
            self.hangup_at = time.monotonic() + TAIL_S
        elif action.kind == "failed":
            self.error = f"runner: {action.payload}"
            self.force_hangup("failed", action.payload)

    def force_hangup(self, why: str, detail: object = None) -> None:
        """End the call now for a reason of the SIP side (logged, kept in the transcript)."""
        self.context.log("hangup_forced", call=self.sip_call_id, why=why, detail=detail)
        self.error = self.error or ("" if why == "max_duration" else why)
        self.hangup_now()

    def ending(self, event: HangUp | Transfer | None) -> None:
        """The session played its last words: hang up, or transfer."""
        if self.phase is not Phase.TALKING:
            return
        if isinstance(event, Transfer):
            self.start_transfer(event)
        else:
            self.phase = Phase.HANGUP
            self.hangup_at = time.monotonic() + TAIL_S

    def start_transfer(self, event: Transfer) -> None:
        ts = self.context.settings.transfer
        self.transfer = event
        headers = context_headers(event, self.sip_call_id)
        target = refer_target(ts.queue_uri, headers)
        self.phase = Phase.TRANSFERRING
        self.deadline = time.monotonic() + ts.refer_timeout_s
        log = self.context.log
        log("refer", call=self.sip_call_id, target=ts.queue_uri,
            reason=event.reason, intent=event.context.intent,
            **log.personal(headers=dict(headers)))
        try:
            self.xfer(target, _op(headers=headers))
        except pj.Error as exc:
            self.transfer_failed(f"REFER not sent: {exc.info(False).strip()}")

    def transfer_failed(self, why: str) -> None:
        if self.phase is not Phase.TRANSFERRING:
            return
        self.deadline = None
        ts = self.context.settings.transfer
        bridge = ts.on_failure == "bridge" and self.transfer is not None and self.bridge is None
        self.context.log("transfer_failed", call=self.sip_call_id, why=why,
                        next="bridge" if bridge else "callback" if ts.callback else "fallback")
        self.record_transfer(f"failed: {why}")
        if bridge and self.start_bridge():
            return
        self.fallback(why)

    def fallback(self, why: str) -> None:
        """No advisor can take the caller: offer a callback (the session talks again), or
        say the fallback text and hang up."""
        self.deadline = None
        if self.context.settings.transfer.callback and self.runner is not None:
            self.phase = Phase.TALKING
            self.context.log("callback_offered", call=self.sip_call_id, why=why)
            self.runner.transfer_failed(why, self.caller_id)
            return
        self.phase = Phase.FALLBACK
        if self.runner is None:
            self.hangup_now()
            return
        self.runner.say_then_report(self.context.settings.transfer.fallback_text)

    def start_bridge(self) -> bool:
        """Call the queue ourselves and connect the two calls (caller's REFER refused)."""
        ts = self.context.settings.transfer
        headers = context_headers(self.transfer, self.sip_call_id) if self.transfer else []
        bridge = BridgeCall(self)
        try:
            bridge.makeCall(ts.queue_uri, _op(headers=headers))
        except pj.Error as exc:
            self.context.log("bridge_failed", call=self.sip_call_id,
                            why=exc.info(False).strip())
            return False
        self.bridge = bridge
        self.phase = Phase.BRIDGING
        self.deadline = time.monotonic() + ts.bridge_timeout_s
        self.context.log("bridge_dialing", call=self.sip_call_id, target=ts.queue_uri)
        return True

    def bridge_up(self, media: list[pj.AudioMedia]) -> None:
        """The queue answered: caller ↔ queue, and the bot's port off the call."""
        self.deadline = None
        self._disconnect()
        for mine in self.media:
            for theirs in media:
                mine.startTransmit(theirs)
                theirs.startTransmit(mine)
        self.phase = Phase.BRIDGED
        self.bridged_at = time.monotonic()
        self.context.log("bridged", call=self.sip_call_id)
        self.record_transfer("bridged")

    def bridge_down(self, answered: bool) -> None:
        if self.phase not in (Phase.BRIDGING, Phase.BRIDGED):
            return
        self.bridge = None
        if answered:
            self.hangup_now()     # the advisor hung up: the caller's call is over
        else:
            self.fallback("bridge not answered")

    def tick(self, now: float) -> None:
        """The call's clock, on the main loop whatever its media: a call that never gets
        audio, or lasts too long, is ended here (a slot is never held by a silent INVITE)."""
        sip = self.context.settings.sip
        if self.phase is Phase.GONE:
            return
        if now >= self.alive_check_at:
            self.alive_check_at = now + 1.0
            if not self._session_alive():
                self.gone_unseen("INVITE session ended without a state change")
                return
        if self.phase is Phase.HANGUP_SENT:
            if now - self.hangup_sent_at >= BYE_GIVE_UP_S:
                # the far end never answered our BYE, nor did any proxy: the call is over
                self.gone_unseen(f"no answer to BYE within {BYE_GIVE_UP_S:g} s")
            return
        if not self.media_seen and now - self.opened >= sip.media_timeout_s:
            # no audio stream (a=sendonly, a=inactive), no ACK, or no RTP packet at all
            self.force_hangup("no_media", f"no audio within {sip.media_timeout_s:g} s "
                                          f"(sendonly, inactive, unanswered or no RTP)")
            return
        if self.phase is Phase.BRIDGED:
            limit = self.context.settings.transfer.bridge_max_s
            if limit and now - self.bridged_at >= limit:
                self.force_hangup("bridge_max_duration")
                return
        elif self.phase not in (Phase.HANGUP_SENT, Phase.GONE) and now - self.opened >= sip.max_call_s:
            self.force_hangup("max_duration")
            return
        self._no_dead_air(now)
        if self.phase is Phase.TALKING and now >= self.stats_at:
            self.stats_at = now + (1.0 if self.media_seen else 0.25)
            self.stats = stream_stats(self) or self.stats
            self.media_seen = self.media_seen or (self.confirmed
                                                  and self.stats.get("rtp_rx", 0) > 0)
        if self.hangup_at is not None and now >= self.hangup_at:
            self.hangup_at = None
            self.hangup_now()
        if self.deadline is not None and now >= self.deadline:
            self.deadline = None
            if self.phase is Phase.TRANSFERRING:
                self.transfer_failed("timeout")
            elif self.phase is Phase.BRIDGING and self.bridge is not None:
                self.bridge.hangup_quietly()

    def _no_dead_air(self, now: float) -> None:
        """While a transfer is pending (REFER sent, or the queue being dialled for a bridge),
        the caller still hears the bot's port: fill silences longer than HOLD_GAP_S."""
        waiting = self.phase in (Phase.TRANSFERRING, Phase.BRIDGING) and self.deadline is not None
        if not waiting or self.runner is None:
            self.quiet_since = now
            return
        if self.runner.speaking:
            self.quiet_since = now
        elif now - self.quiet_since >= HOLD_GAP_S:
            self.quiet_since = now + 1.0      # the sentence takes a moment to start playing
            self.runner.say_then_report(self.context.settings.transfer.hold_text)

    def hangup_now(self) -> None:
        if self.phase in (Phase.HANGUP_SENT, Phase.GONE):
            return
        self.phase = Phase.HANGUP_SENT
        self.hangup_sent_at = time.monotonic()
        self.hung_up_by = self.hung_up_by or "bot"
        self._disconnect()
        try:
            self.hangup(_op())
        except pj.Error as exc:
            # nothing left to hang up: pjsua ended the session already
            self.gone_unseen(f"hang-up refused: {exc.info(False).strip()[:120]}")
            return
        if self.bridge is not None:
            self.bridge.hangup_quietly()

    def _session_alive(self) -> bool:
        try:
            return bool(self.isActive())
        except pj.Error:
            return False

    def gone_unseen(self, why: str) -> None:
        """The call ended without pjsua telling us (its session is gone, or our BYE got no
        answer at all): log it, and free the call's slot as if it had been disconnected."""
        if self.phase is Phase.GONE:
            return
        self.context.log("call_lost", call=self.sip_call_id, key=self.key, why=why,
                         phase=self.phase.value)
        if not self.hung_up_by:
            self.hung_up_by = "lost"
        self.teardown(0, why)

    def teardown(self, code: int, reason: str) -> None:
        """The call is over (BYE, CANCEL, error, shutdown): log it, stop its runner, close
        its transcript, give its port back, hang up a bridge leg; then the worker forgets it."""
        if self.phase is Phase.GONE:       # refused, or already torn down
            return
        self.phase = Phase.GONE
        ctx = self.context
        stats = self.port.rx.to_json() if self.port is not None else {}
        turns = self.runner.turns if self.runner is not None else 0
        ctx.log("hangup", call=self.sip_call_id, key=self.key, by=self.hung_up_by,
                code=code, reason=reason, turns=turns, rx=stats, stream=self.stats,
                duration_s=round(time.monotonic() - self.opened, 2),
                bridge_ports=ctx.bridge_ports())
        if self.runner is not None:
            self.runner.stop.set()
            # after the runner's last step: the words of a caller who hung up while they
            # were being decoded are written too (a soak lost such turns)
            self.runner.when_done(lambda: self.close_transcript(code, reason))
        else:
            self.close_transcript(code, reason)
        # No _disconnect() here: the stream's bridge slot is gone with the call, and with it
        # every connection to our port; the port itself leaves the bridge below.
        if self.port is not None:
            ctx.ports.release(self.port)
            self.port = None
        if self.bridge is not None:
            self.bridge.hangup_quietly()
        ctx.forget(self)

    def release(self) -> None:
        """pjsua is done with this call: drop the references that form cycles with it."""
        self.bridge = None
        self.runner = None

    # --- transcript ---------------------------------------------------------------------
    def record_transfer(self, result: str) -> None:
        """The final outcome of the transfer, as the SIP side saw it (last one wins)."""
        if self.metered is not None:
            self.metered.transfer(self.transfer.reason if self.transfer else "",
                                  result.split(":", 1)[0])
        if self.recorder is not None:
            self.recorder.transfer_result(self.context.settings.transfer.queue_uri, result)

    def close_transcript(self, code: int, reason: str) -> None:
        """The call is over: outcome from the dialogue, or "error" if the call broke."""
        recorder, self.recorder = self.recorder, None
        metered, self.metered = self.metered, None
        outcome, detail = None, None
        if self.error:
            outcome, detail = "error", self.error[:300]
        elif self.hung_up_by == "shutdown":
            outcome, detail = "error", "worker shut down during the call"
        if metered is not None:
            metered.close(outcome)
        if recorder is not None:
            recorder.close(outcome, detail=detail)

    # --- media ----------------------------------------------------------------------------
    def _start_session(self) -> None:
        w = self.context
        try:
            from_uri = self.getInfo().remoteUri
        except pj.Error:
            from_uri = ""
        self.caller_id = caller_number(from_uri)
        self.recorder = new_recorder(w.store, self.sip_call_id, from_uri, w.worker_port)
        self.metered = w.metrics.call() if w.metrics is not None else None
        self.runner = CallRunner(self.key, w.engines, self.sip_call_id, self.inbox, w.post,
                                 w.log, [o for o in (self.recorder, self.metered) if o])
        if self.recorder is not None:
            w.log("transcript", call=self.sip_call_id, id=self.recorder.info.call_id,
                  **w.log.personal(caller=self.recorder.info.caller_number))
        self.port = w.ports.acquire(self.inbox, self.runner.pull)
        if self.port is None:     # cannot happen with max_calls + 2 ports; be safe anyway
            w.log("error", call=self.sip_call_id, where="media", error="no free call port")
            self.error = "no free call port"
            self.runner = None
            self.hangup_now()
            return
        self.phase = Phase.TALKING
        w.pool.submit(self.runner)

    def _connect(self, media: list[pj.AudioMedia]) -> None:
        if self.phase in (Phase.BRIDGING, Phase.BRIDGED) and self.bridge is not None:
            self.media = media
            return
        new = [m for m in media if m.getPortId() not in {x.getPortId() for x in self.media}]
        try:
            for am in new:
                am.startTransmit(self.port)
                self.port.startTransmit(am)
        except pj.Error as exc:
            self.error = f"media: {exc.info(False).strip()[:200]}"
            self.force_hangup("media_error", self.error)
            return
        self.media = media

    def _disconnect(self) -> None:
        """Take the bot's port off every stream (the conference-slot leak otherwise)."""
        if self.port is None:
            return
        for am in self.media:
            for a, b in ((am, self.port), (self.port, am)):
                try:
                    a.stopTransmit(b)
                except pj.Error:
                    pass


class BridgeCall(pj.Call):
    """The bot's own call to the advisor queue, when the caller could not be transferred."""

    def __init__(self, parent: BotCall) -> None:
        super().__init__(parent.account)
        self.parent = parent
        self.answered = False
        self.media: list[pj.AudioMedia] = []

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        try:
            info = self.getInfo()
        except pj.Error:
            return
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED:
            self.answered = True
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.parent.context.log("bridge_ended", call=self.parent.sip_call_id,
                                   code=info.lastStatusCode, answered=self.answered)
            self.parent.context.bury(self)
            self.parent.bridge_down(self.answered)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        media = _audio_media(self)
        if media and not self.media:
            self.media = media
            self.parent.bridge_up(media)

    def release(self) -> None:
        """pjsua is done with this leg: drop its link to the caller's call."""
        self.parent = None

    def hangup_quietly(self) -> None:
        try:
            self.hangup(_op())
        except pj.Error:
            pass
