"""A worker process: one pjsua2 Endpoint carrying up to ``sip.max_calls`` bot calls.

``python -m telephony.worker --config callbot.toml --port 5070`` (``--rtp-port`` too when
several workers share a host). The process owns one main loop that polls pjsua
(``libHandleEvents``), runs the actions the call runners post, and fires the calls' timers;
every pjsua call happens on that loop. Admission, in the order a caller meets it:

1. not from the front → 403: behind ``callbot serve`` an INVITE must carry the front's
   secret (``workers.front_secret``), so nothing skips the front's limits; the registrars
   of ``[[sip.accounts]]`` may call directly. A worker run alone checks the source against
   ``sip.allowed_sources`` instead;
2. draining for a shutdown → 503 "Draining" (Retry-After; the front tries another worker);
3. the worker full → 486 (``sip.max_calls``, one less with ``transfer.on_failure =
   "bridge"``, which keeps a slot for the bridged leg);
4. more than ``sip.max_setups_per_s`` calls answered in the last second → 503 "Setup Rate"
   (Retry-After; the front passes it back rather than spreading the burst).

pjsua has already opened the call's RTP sockets when it hands us an INVITE (the pjsua2
account-selection hook cannot refuse: measured, a -1 account index is ignored), so this
limit spares the sessions, not the sockets: bursts of call set-ups, which abort pjsua's
select ioqueue, must be rate-limited in front of the workers (Kamailio pike/pipelimit).

SIGTERM drains (no new calls, calls may finish for ``workers.drain_timeout_s``), then hangs
up, drops every pjsua2 object, collects garbage and destroys the library: an object still
alive at ``libDestroy`` aborts the process. A second SIGTERM or SIGINT skips the drain.
Events go to stdout as JSON lines; pjsip's own log goes to stderr.
"""

from __future__ import annotations

import os

# BLAS threads would spin on every core next to the media clock; the recognizer has its own
# thread pool. Must be set before numpy is first imported (by callbot).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import collections
import gc
import hmac
import queue
import resource
import signal
import socket
import sys
import time

import pjsua2 as pj

from callbot.asr.base import AsrOverloaded
from callbot.errors import CallbotError
from callbot.session import Engines

from . import pjlib
from .call import BotCall, BridgeCall, CallContext
from .dispatcher import FRONT_HEADER
from .media import PortPool
from .metrics import SipMetrics, worker_metrics
from .priority import COMPUTE_NICE, compute_nice, make_this_thread_realtime, run_lowered
from .runner import Action, Log, RunnerPool
from .settings import TelephonySettings, load_settings
from .transcript import open_worker_store

def front_stamp(message: str) -> str | None:
    """The value of the front's header in a SIP message, or None."""
    head = message.split("\r\n\r\n", 1)[0]
    for line in head.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name.strip().lower() == FRONT_HEADER.lower():
            return value.strip()
    return None


def registrar_addresses(accounts) -> frozenset[str]:
    """Addresses of the registrars we register with: they send us their INVITEs directly
    (not through the front). Resolved once at start; a name that does not resolve is the
    registration's error to report, not ours."""
    out = set()
    for acc in accounts:
        host = acc.registrar.split(":", 1)[1].split(";")[0].split("@")[-1]
        host = host[1:].split("]")[0] if host.startswith("[") else host.split(":")[0]
        try:
            for info in socket.getaddrinfo(host, None):
                out.add(info[4][0])
        except OSError:
            pass
    return frozenset(out)


def source_host(address: str) -> str:
    """'127.0.0.1:5060' → '127.0.0.1'; '[::1]:5060' → '::1'."""
    if address.startswith("["):
        return address[1:].split("]", 1)[0]
    if address.count(":") == 1:
        return address.rsplit(":", 1)[0]
    return address


class Account(pj.Account):
    """The local identity (trunk mode) or a registration; incoming calls go to the worker."""

    def __init__(self, worker: "Worker") -> None:
        super().__init__()
        self.worker = worker

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.worker.incoming(self, prm)

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        fields = {"code": prm.code, "reason": prm.reason, "expiration": prm.expiration}
        why = registration_error(prm.code)
        if why:
            fields["error"] = why
        self.worker.log("registration", **fields)


def allocator_in_use() -> str:
    """Which memory allocator this process runs on (workers.allocator)."""
    try:
        maps = open("/proc/self/maps", encoding="utf-8", errors="replace").read()
    except OSError:
        return "unknown"
    return "jemalloc" if "libjemalloc" in maps else "glibc"


def registration_error(code: int) -> str | None:
    """What an integrator should do about a failed registration (None when it worked).

    pjsua answers the registrar's digest challenge by itself; a 401/407 reported here is the
    registrar refusing the credentials we answered with."""
    if 200 <= code < 300 or code == 100:
        return None
    if code in (401, 407, 403):
        return (f"the registrar refused the credentials ({code}): check user, password, "
                f"realm and domain of [[sip.accounts]]")
    if code in (408, 503) or code == 0:
        return (f"the registrar did not answer ({code}): check sip.accounts.registrar, "
                f"the network and the firewall; pjsua retries on its own")
    return f"registration failed ({code}): see the registrar's logs"


class Worker:
    def _clock_priority(self) -> None:
        """On the media clock thread, at the first frame of the first call."""
        if self.settings.workers.media_priority != "realtime":
            return
        got = make_this_thread_realtime()
        if got == "realtime":
            self.log("media_clock", priority="realtime")
        else:
            self.log("media_clock", priority="normal",
                     hint="the media clock could not get real-time priority: run the "
                          "workers as root or grant CAP_SYS_NICE, or set "
                          "workers.media_priority = \"normal\" to silence this")

    def __init__(self, settings: TelephonySettings, engines: Engines, port: int,
                 rtp_port: int, log: Log, compute_nice: int = COMPUTE_NICE) -> None:
        self.settings = settings
        self.compute_nice = compute_nice
        self.engines = engines
        self.port = port
        self.rtp_port = rtp_port
        self.log = log
        self.actions: "queue.SimpleQueue[Action]" = queue.SimpleQueue()
        self.calls: dict[int, BotCall] = {}
        self.graveyard: list[BotCall | BridgeCall] = []   # ended, until pjsua frees them
        self.ports: PortPool | None = None
        self.setups: collections.deque[float] = collections.deque()
        self.next_key = 1
        self.total_calls = 0
        self.draining = False
        self.stopping = False
        self.force = False
        self.stack: pjlib.PjStack | None = None
        self.account: Account | None = None
        self.accounts: list[Account] = []
        self.pool: RunnerPool | None = None
        self.context: CallContext | None = None   # what calls get of this worker (start)
        self.store = None                 # the process's transcript store (opened in start)
        self.metrics: SipMetrics | None = None   # when `callbot serve` collects them
        self.secret = settings.workers.front_secret
        self.registrars = registrar_addresses(settings.sip.accounts)

    # --- setup -------------------------------------------------------------------------------
    def start(self) -> None:
        sip = self.settings.sip
        self.stack = pjlib.create_stack(sip.max_calls + 1, sip.log_level,
                                        user_agent="callbot-worker")
        try:
            pjlib.add_transports(self.stack, sip.bind, self.port, sip.transports,
                                 sip.public_address)
            pjlib.start(self.stack)
            codecs = pjlib.set_codecs(self.stack, sip.codecs)
        except BaseException:
            stack, self.stack = self.stack, None
            stack.destroy()          # nothing else exists yet: a clean exit, not an abort
            raise
        self.store = open_worker_store(self.settings.core, self.port)
        self.metrics = worker_metrics()
        self.pool = RunnerPool(sip.max_calls + 2, self.stack.ep.libRegisterThread,
                               self.compute_nice)
        self.ports = PortPool(sip.max_calls + 2, on_clock=self._clock_priority)
        self.context = CallContext(
            settings=self.settings, engines=self.engines, store=self.store,
            metrics=self.metrics, ports=self.ports, pool=self.pool, log=self.log,
            worker_port=self.port, post=self.post,
            forget=self.forget, bury=self.bury,
            bridge_ports=lambda: self.stack.ep.mediaActivePorts() if self.stack else None)
        self.account = self._account(None)
        for acc in sip.accounts:
            self.accounts.append(self._account(acc))
        self.log("ready", port=self.port, rtp_port=self.rtp_port, bind=sip.bind,
                 transports=list(sip.transports), codecs=codecs, max_calls=sip.max_calls,
                 pid=os.getpid(), pjsip=self.stack.ep.libVersion().full,
                 allocator=allocator_in_use())

    def _account(self, reg) -> Account:
        sip = self.settings.sip
        cfg = pj.AccountConfig()
        host = sip.public_address or sip.bind
        host = f"[{host}]" if ":" in host else host
        if reg is None:
            cfg.idUri = f"sip:{sip.user}@{host}:{self.port}"
        else:
            cfg.idUri = reg.id_uri
            cfg.regConfig.registrarUri = reg.registrar
            cfg.regConfig.timeoutSec = reg.expiry_s
            cfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", reg.realm, reg.user, 0,
                                                           reg.password))
        tc = cfg.mediaConfig.transportConfig
        tc.port = self.rtp_port
        tc.portRange = sip.rtp_port_range
        tc.boundAddress = sip.bind
        if sip.public_address:
            tc.publicAddress = sip.public_address
        acc = Account(self)
        acc.create(cfg, reg is None)
        return acc

    # --- admission (main thread) -------------------------------------------------------------
    def setup_rate_ok(self) -> bool:
        """At most sip.max_setups_per_s answered INVITEs in any second."""
        now = time.monotonic()
        while self.setups and now - self.setups[0] > 1.0:
            self.setups.popleft()
        if len(self.setups) >= self.settings.sip.max_setups_per_s:
            return False
        self.setups.append(now)
        return True

    def incoming(self, account: Account, prm: pj.OnIncomingCallParam) -> None:
        source = prm.rdata.srcAddress
        host = source_host(source)
        key = self.next_key
        self.next_key += 1
        call = BotCall(self.context, account, prm.callId, key, source)
        try:
            call.sip_call_id = call.getInfo().callIdString
        except pj.Error:
            pass
        if not self.admitted(host, prm.rdata.wholeMsg):
            code, why, reason = 403, "not_from_front" if self.secret else "source_not_allowed", ""
        elif self.draining:
            code, why, reason = 503, "draining", "Draining"
        elif len(self.calls) >= self.settings.inbound_calls:
            code, why, reason = 486, "busy", ""
        elif not self.setup_rate_ok():
            code, why, reason = 503, "setup_rate", "Setup Rate"
        else:
            code, why, reason = 200, "", ""
        if code != 200:
            self.log("rejected", code=code, why=why, source=source, call=call.sip_call_id)
            self.graveyard.append(call)
            try:
                call.answer_with(code, reason)
            except pj.Error as exc:
                self.log("error", where="reject", error=exc.info(False).strip())
            return
        self.calls[key] = call
        self.total_calls += 1
        self.log("incoming", call=call.sip_call_id, key=key, source=source)
        try:
            call.answer_with(200)
        except pj.Error as exc:
            self.log("error", where="answer", call=call.sip_call_id,
                     error=exc.info(False).strip())

    def admitted(self, host: str, message: str) -> bool:
        """From the front (its secret in the INVITE), from a registrar of ours, or, for a
        worker run alone, from ``sip.allowed_sources``."""
        if host in self.registrars:
            return True
        if not self.secret:
            return self.settings.sip.allows(host)
        stamp = front_stamp(message)
        return stamp is not None and hmac.compare_digest(stamp, self.secret)

    # --- called by calls ---------------------------------------------------------------------
    def post(self, action: Action) -> None:
        """From any thread: run ``action`` on the main loop."""
        self.actions.put(action)

    def forget(self, call: BotCall) -> None:
        """A call tore itself down: it no longer counts, and pjsua may free it later."""
        self.calls.pop(call.key, None)
        self.bury(call)

    def bury(self, call: BotCall | BridgeCall) -> None:
        if call not in self.graveyard:
            self.graveyard.append(call)

    # --- main loop ---------------------------------------------------------------------------
    def run(self) -> int:
        stack = self.stack
        assert stack is not None
        drain_until = 0.0
        while True:
            stack.poll(10)
            self._run_actions()
            now = time.monotonic()
            self._tick(now)
            self._reap(now)
            if self.stopping and not self.draining:
                self.draining = True
                drain_until = now + self.settings.workers.drain_timeout_s
                self.log("draining", calls=len(self.calls))
            if self.draining:
                if not self.calls or now >= drain_until or self.force:
                    break
            limit = self.settings.workers.recycle_after_calls
            if limit and self.total_calls >= limit and not self.stopping:
                self.log("recycle", calls=self.total_calls)
                self.stopping = True
        return self.shutdown()

    def _tick(self, now: float) -> None:
        # Not inlined in run(): a loop variable there would hold a call until libDestroy.
        for call in list(self.calls.values()):
            call.tick(now)

    def _run_actions(self) -> None:
        while True:
            try:
                action = self.actions.get_nowait()
            except queue.Empty:
                return
            call = self.calls.get(action.key)
            if call is not None:
                call.on_action(action)

    def _reap(self, now: float) -> None:
        if self.graveyard:
            dead = [c for c in self.graveyard if not self._active(c)]
            for c in dead:
                self.graveyard.remove(c)
                c.release()
            del dead
        if self.ports is not None:
            self.ports.tick(now)

    def _port_names(self) -> list[str]:
        """Names of the ports still on the conference bridge (a leak shows up here)."""
        try:
            return [m.getPortInfo().name for m in self.stack.ep.mediaEnumPorts2()] \
                if self.stack else []
        except Exception:  # diagnostics only: never in the way of a clean shutdown
            return []

    @staticmethod
    def _active(call: pj.Call) -> bool:
        try:
            return call.isActive()
        except pj.Error:
            return False

    def shutdown(self) -> int:
        """Hang up what is left, drop every pjsua2 object, then destroy the library."""
        self._release_all()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.log("stopped", calls=self.total_calls, bridge_ports=self.stack.ep.mediaActivePorts(),
                 port_names=self._port_names(),
                 cpu_s=round(usage.ru_utime + usage.ru_stime, 2))
        if self.store is not None:
            self.store.close()            # flushes the queued turns and call endings
            self.store = None
        stack, self.stack = self.stack, None
        assert stack is not None
        stack.destroy()
        return 0

    def _release_all(self) -> None:
        """In its own frame: no local or loop variable may outlive it and hold a pjsua2
        object while libDestroy runs (that aborts the process)."""
        stack = self.stack
        assert stack is not None
        for call in list(self.calls.values()):
            call.hung_up_by = call.hung_up_by or "shutdown"
            call.hangup_now()
        end = time.monotonic() + 2.0
        while (self.calls or any(self._active(c) for c in self.graveyard)) \
                and time.monotonic() < end:
            stack.poll(10)
            self._run_actions()
        for call in list(self.calls.values()):
            call.teardown(0, "shutdown")
        self.pool.close() if self.pool else None
        for call in self.graveyard:
            call.release()
        self.calls.clear()
        self.graveyard.clear()
        self.context = None        # the worker's own link to the port pool (the pool is
                                   # emptied below; ended calls keep only an empty one)
        if self.ports is not None:
            self.ports.close()     # the ports leave the bridge here, with no call left
            self.ports = None
            time.sleep(0.06)       # bridge removals take effect on the clock's next ticks
        for acc in [self.account, *self.accounts]:
            if acc is not None:
                try:
                    acc.shutdown()
                except pj.Error:
                    pass
        self.account = None
        self.accounts.clear()


def warm_up(engines: Engines, calls: int = 1, log: Log | None = None) -> Engines:
    """Recognition, classification and speech once before the first call: the first
    inference allocates and starts threads, and doing that during a call delayed the media
    clock (measured: 3-5 frames lost at the caller on the first call of a fresh worker). A
    streaming recognizer also builds decoder caches as it hears speech (Vosk: 2-3x faster
    once warm), so one recognizer per possible call hears the bot's own French prompts,
    as long as the longest utterance a caller may say (Whisper's buffers then have their
    final size). Every answer and prompt is read into memory, and the knowledge base's own
    phrasings go through the classifier (the sentence encoder's pages are mapped in): a
    soak measured the first callers' answers 30-50 % slower and the worker's memory still
    growing for 3 minutes without this."""
    longest = engines.config.endpointing.max_utterance_ms * 16     # bytes at 8 kHz
    if engines.asr is not None:
        speech = b""
        for text in engines.kb.prompts.values():
            if len(speech) < longest and "{" not in text:
                speech += engines.tts.get(text)
        try:
            engines.asr.warm(speech[:longest], calls)
        except AsrOverloaded as exc:
            # a busy shared service: the warm-up is an optimisation, the first call warms it
            if log is not None:
                log("warm_up_skipped", error=str(exc))
    for intent in engines.kb.intents.values():
        engines.tts.get(intent.answer)
    for p in engines.kb.phrasings[::40]:
        engines.classifier.classify(p.text)
    return engines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m telephony.worker",
                                description="One callbot SIP worker process.")
    p.add_argument("--config", help="TOML configuration (default: embedded, or $CALLBOT_CONFIG)")
    p.add_argument("--port", type=int, help="SIP port (default: sip.port)")
    p.add_argument("--rtp-port", type=int,
                   help="first RTP port (default: sip.rtp_port_start)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    log = Log()
    try:
        settings = load_settings(args.config)
        log.personal_data = settings.core.transcripts.debug_personal_data
        if log.personal_data:
            log("personal_data_logged", hint="transcripts.debug_personal_data is on: this "
                "log carries callers' numbers, words and keys; turn it off once the "
                "troubleshooting is done")
        port = args.port or settings.sip.port
        rtp = args.rtp_port or settings.sip.rtp_port_start
        t0 = time.perf_counter()
        nice = compute_nice(settings.workers.media_priority)
        engines = run_lowered(lambda: warm_up(Engines.load(settings.core, log=log),
                                              settings.sip.max_calls, log), by=nice)
        # A full garbage collection over the ~100k objects of the models and the knowledge
        # base holds the GIL for ~90 ms, stalling every call's clock (measured: 196 ms frame
        # gaps with 4 calls). Those objects live as long as the process: freeze them out of
        # the collector's reach.
        gc.collect()
        gc.freeze()
        log("engines", load_s=round(time.perf_counter() - t0, 2),
            asr=getattr(engines.asr, "name", None), tts=engines.tts.name, compute_nice=nice)
        worker = Worker(settings, engines, port, rtp, log, nice)
        worker.start()
    except CallbotError as exc:
        print(f"callbot worker: {exc}", file=sys.stderr)
        return exc.exit_code

    def stop(signum, frame) -> None:
        if worker.stopping or signum == signal.SIGINT:   # second signal or Ctrl-C: no drain
            worker.force = True
        worker.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return worker.run()


if __name__ == "__main__":
    sys.exit(main())
