"""The telephony sections of the one configuration file: [sip], [transfer], [workers].

The core keeps these sections as raw tables (``load_config(external=...)``); this module
owns their defaults (``telephony/default.toml``), their types and their checks. Like the
core, it refuses an unknown key or a bad value with the key and the reason, because a typo
in a port or an allowed network must never fall back silently to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

from callbot.config import Config, load_config
from callbot.configrules import build, env_overrides, merge, rule
from callbot.errors import ConfigError

SECTIONS = frozenset({"sip", "transfer", "workers"})
TRANSPORTS = ("udp", "tcp")
FAILURE_MODES = ("fallback", "bridge")
MEDIA_PRIORITIES = ("realtime", "normal")
ALLOCATORS = ("glibc", "jemalloc")
# Codecs of the pjsua2 wheel we use (no Opus); names as in pjsua's codec ids.
KNOWN_CODECS = ("PCMA", "PCMU", "G722", "GSM", "iLBC", "speex", "L16")
# PJSUA_MAX_CALLS of the pjsua2-python wheel: higher values are silently clamped by pjsua.
WHEEL_MAX_CALLS = 4
ACCOUNT_KEYS = {"registrar": "", "user": "", "password": "", "domain": "", "realm": "*",
                "expiry_s": 300}
SIP_URI = re.compile(r"^sips?:([^@\s;?]+@)?[A-Za-z0-9.\-\[\]:]+(;[^\s?]*)?$")


def default_table() -> dict[str, Any]:
    text = resources.files("telephony").joinpath("default.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


# --- parsers: each names the key in its error -------------------------------------------------
def _text(value: str, name: str, where: str) -> str:
    """A non-empty string, stripped."""
    if not value.strip():
        raise ConfigError(f"{where}: {name} must not be empty")
    return value.strip()


def _sentence(value: str, name: str, where: str) -> str:
    """A sentence to speak: one line, single spaces."""
    return " ".join(_text(value, name, where).split())


def _address(value: str, name: str, where: str) -> str:
    value = _text(value, name, where)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{where}: {name} = {value!r} is not an IP address "
                          f"(give a numeric IPv4 or IPv6 address)") from None
    return value


def _optional_address(value: str, name: str, where: str) -> str:
    return _address(value, name, where) if value.strip() else ""


def _sip_uri(value: str, name: str, where: str) -> str:
    value = _text(value, name, where)
    if not SIP_URI.match(value):
        raise ConfigError(f"{where}: {name} = {value!r} is not a SIP URI "
                          f"(expected sip:user@host[:port])")
    return value


def _strings(value: Any, name: str, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {name} must be a list of strings, not {value!r}")
    return value


def _transports(value: Any, name: str, where: str) -> tuple[str, ...]:
    transports = [x.lower() for x in _strings(value, name, where)]
    if not transports:
        raise ConfigError(f"{where}: {name} must name at least one of udp, tcp")
    for x in transports:
        if x not in TRANSPORTS:
            raise ConfigError(f"{where}: {name}: {x!r} is not one of udp, tcp "
                              f"(TLS is not offered: this pjsua2 wheel bundles OpenSSL 1.0.2)")
    return tuple(dict.fromkeys(transports))


def _networks(value: Any, name: str, where: str) -> tuple:
    nets = []
    for raw in _strings(value, name, where):
        try:
            nets.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            raise ConfigError(f"{where}: {name}: {raw!r} is not an address or network "
                              f"(e.g. 10.0.0.5 or 10.0.0.0/24)") from None
    return tuple(nets)


def _codecs(value: Any, name: str, where: str) -> tuple[str, ...]:
    codecs = _strings(value, name, where)
    if not codecs:
        raise ConfigError(f"{where}: {name} must name at least one codec (PCMA, PCMU...)")
    known = {c.lower() for c in KNOWN_CODECS}
    for c in codecs:
        if c.split("/")[0].lower() not in known:
            raise ConfigError(f"{where}: {name}: unknown codec {c!r} "
                              f"(this build has: {', '.join(KNOWN_CODECS)}; no Opus)")
    return tuple(codecs)


def _sip_user(value: str, name: str, where: str) -> str:
    user = _text(value, name, where)
    if not re.fullmatch(r"[A-Za-z0-9._\-+]+", user):
        raise ConfigError(f"{where}: {name} = {user!r} may only hold letters, digits and ._-+")
    return user


def _password(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {name} must be a non-empty string")
    return value


@dataclass(frozen=True)
class SipAccount:
    """A registration with a PBX or provider. The password never appears in a repr."""

    registrar: str = field(metadata=rule(parse=_sip_uri))
    user: str = field(metadata=rule(parse=_text))
    password: str = field(repr=False, metadata=rule(parse=_password))
    domain: str
    realm: str = field(metadata=rule(parse=_text))
    expiry_s: int = field(metadata=rule(ge=30, le=86400))

    @property
    def id_uri(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    def to_dict(self) -> dict[str, Any]:
        return {"registrar": self.registrar, "user": self.user,
                "password": "***" if self.password else "", "domain": self.domain,
                "realm": self.realm, "expiry_s": self.expiry_s}


def _accounts(raw: Any, name: str, where: str) -> tuple[SipAccount, ...]:
    raw = [] if raw is None else raw
    if not isinstance(raw, list) or not all(isinstance(a, Mapping) for a in raw):
        raise ConfigError(f"{where}: {name} must be written as [[sip.accounts]] tables")
    return tuple(_account(i, a, where) for i, a in enumerate(raw))


def _account(i: int, raw: Mapping[str, Any], where: str) -> SipAccount:
    name = f"sip.accounts[{i}]"
    for key in raw:
        if key not in ACCOUNT_KEYS:
            raise ConfigError(f"{where}: unknown key {name}.{key} "
                              f"(known: {', '.join(sorted(ACCOUNT_KEYS))})")
    account = build(SipAccount, name, raw, ACCOUNT_KEYS, where)
    domain = account.domain or account.registrar.split(":", 1)[1].split(";")[0] \
        .split("@")[-1].split(":")[0]
    return dataclasses.replace(account, domain=domain)


def _secret(value: str, name: str, where: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z0-9._\-]{16,128}", value):
        raise ConfigError(f"{where}: {name} must be 16 to 128 letters, digits or ._- "
                          f"(or empty for a random one at every start)")
    return value


# What one worker costs, measured on this project's 2-core machine (Whisper base, e5 encoder,
# 4 calls): 540-600 MB resident after a 30-minute soak, and one core to keep 4 callers'
# answers within a second (2 workers on 2 cores: long turns p95 0.8 s; 4 workers on the same
# 2 cores: p95 3.9 s, decodes queueing behind each other).
WORKER_MB = 700
RESERVED_MB = 1024         # the front, the supervisor, the console, the operating system
MAX_WORKERS = 256


def auto_workers(cores: int | None = None, available_mb: int | None = None) -> int:
    """``workers.count = "auto"``: one worker per core, as many as memory holds.

    Cores are those this process may run on (a container's CPU set, not the host's);
    memory is what is available now, or the cgroup's limit when lower."""
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
            (os.cpu_count() or 1)
    if available_mb is None:
        available_mb = _available_mb()
    by_memory = (available_mb - RESERVED_MB) // WORKER_MB if available_mb else cores
    return max(1, min(cores, by_memory, MAX_WORKERS))


def _available_mb() -> int:
    """MemAvailable, bounded by the cgroup v2 memory limit; 0 when unknown."""
    mb = 0
    try:
        for line in open("/proc/meminfo", encoding="ascii"):
            if line.startswith("MemAvailable:"):
                mb = int(line.split()[1]) // 1024
    except (OSError, ValueError):
        return 0
    try:
        limit = open("/sys/fs/cgroup/memory.max", encoding="ascii").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current", encoding="ascii").read())
        if limit != "max":
            mb = min(mb, (int(limit) - used) // 2**20)
    except (OSError, ValueError):
        pass
    return mb


def _count(value: Any, name: str, where: str) -> int:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return auto_workers()
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if not 0 <= n <= MAX_WORKERS or (isinstance(value, float) and not value.is_integer()) \
            or (n == 0 and str(value).strip() not in ("0", "0.0")):
        raise ConfigError(f"{where}: {name} = {value!r} must be \"auto\" or a whole number "
                          f"from 0 (a front for other hosts' workers) to {MAX_WORKERS}")
    return n


def _remote(value: Any, name: str, where: str) -> tuple[str, ...]:
    """["10.0.0.2:5070", "[fd00::3]:5071"]: workers of other hosts behind this front."""
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {name} must be a list of \"ADDRESS:PORT\" strings")
    out = []
    for item in value:
        m = re.fullmatch(r"\[?([0-9A-Fa-f.:]+?)\]?:(\d{1,5})", str(item).strip())
        ok = m is not None and 1 <= int(m.group(2)) <= 65535
        if ok:
            try:
                ip = ipaddress.ip_address(m.group(1))
            except ValueError:
                ok = False
        if not ok:
            raise ConfigError(f"{where}: {name} entry {item!r} is not ADDRESS:PORT (a numeric "
                              f"IP address and the SIP port of one worker of another host)")
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        out.append(f"{host}:{m.group(2)}")
    return tuple(out)


PORT = rule(ge=1, le=65535)
RTP_PORT = rule(ge=1024, le=65534)
POSITIVE = rule(gt=0)
AT_LEAST_ONE = rule(ge=1)


@dataclass(frozen=True)
class SipSettings:
    bind: str = field(metadata=rule(parse=_address))
    public_address: str = field(metadata=rule(parse=_optional_address))
    port: int = field(metadata=PORT)
    transports: tuple[str, ...] = field(metadata=rule(parse=_transports))
    rtp_port_start: int = field(metadata=RTP_PORT)
    rtp_port_range: int = field(metadata=PORT)       # at least 4 per call: checked below
    max_calls: int = field(metadata=rule(
        ge=1, le=WHEEL_MAX_CALLS,
        why=" (the pjsua2 wheel allows 4 calls per process: run more workers)"))
    max_setups_per_s: int = field(metadata=AT_LEAST_ONE)
    max_call_s: int = field(metadata=rule(ge=10))
    media_timeout_s: float = field(metadata=POSITIVE)
    dtmf_per_s: int = field(metadata=AT_LEAST_ONE)
    dtmf_per_call: int = field(metadata=AT_LEAST_ONE)
    user: str = field(metadata=rule(parse=_sip_user))
    allowed_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        metadata=rule(parse=_networks))
    codecs: tuple[str, ...] = field(metadata=rule(parse=_codecs))
    log_level: int = field(metadata=rule(ge=0, le=6))
    accounts: tuple[SipAccount, ...] = field(default=(), metadata=rule(parse=_accounts,
                                                                       env=False))

    def allows(self, address: str) -> bool:
        """Is this source address (no port) in allowed_sources?"""
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.allowed_sources if net.version == ip.version)


@dataclass(frozen=True)
class TransferSettings:
    queue_uri: str = field(metadata=rule(parse=_sip_uri))
    refer_timeout_s: float = field(metadata=POSITIVE)
    on_failure: str = field(metadata=rule(choices=FAILURE_MODES))
    bridge_timeout_s: float = field(metadata=POSITIVE)
    bridge_max_s: float = field(metadata=rule(ge=0, why=" (0: no limit)"))
    callback: bool
    fallback_text: str = field(metadata=rule(parse=_sentence))
    hold_text: str = field(metadata=rule(parse=_sentence))


@dataclass(frozen=True)
class WorkersSettings:
    count: int = field(metadata=rule(parse=_count))
    bind: str = field(metadata=rule(parse=_address))
    front_secret: str = field(repr=False, metadata=rule(parse=_secret))
    base_sip_port: int = field(metadata=PORT)
    base_rtp_port: int = field(metadata=RTP_PORT)
    drain_timeout_s: float = field(metadata=rule(ge=0))
    recycle_after_calls: int = field(metadata=rule(ge=0, why=" (0: never)"))
    health_interval_s: float = field(metadata=POSITIVE)
    media_priority: str = field(metadata=rule(choices=MEDIA_PRIORITIES))
    allocator: str = field(metadata=rule(choices=ALLOCATORS))
    recognition: str = field(metadata=rule(choices=("shared", "per-worker")))
    front: str = field(metadata=rule(choices=("local", "none")))
    remote: tuple[str, ...] = field(metadata=rule(parse=_remote, env=False))

    def sip_port(self, index: int) -> int:
        return self.base_sip_port + index


CLASSES = {"sip": SipSettings, "transfer": TransferSettings, "workers": WorkersSettings}


@dataclass(frozen=True)
class TelephonySettings:
    """Everything a worker needs: the core's Config plus the three telephony sections.

    ``core`` stays out of the repr: its ``extra`` holds the raw [sip] table, passwords
    included.
    """

    core: Config = field(repr=False)
    sip: SipSettings
    transfer: TransferSettings
    workers: WorkersSettings

    @property
    def inbound_calls(self) -> int:
        """Incoming calls a worker takes. pjsua is given sip.max_calls + 1 call slots for the
        outgoing leg of a bridged transfer, but this build caps it at 4: with on_failure =
        "bridge" and 4 calls, one is kept for that leg (else a full worker could never
        bridge, and every failed transfer would fall back)."""
        if self.transfer.on_failure == "bridge" and self.sip.max_calls >= WHEEL_MAX_CALLS:
            return WHEEL_MAX_CALLS - 1
        return self.sip.max_calls

    def rtp_port_for(self, index: int) -> int:
        return self.workers.base_rtp_port + index * self.sip.rtp_port_range

    def to_dict(self) -> dict[str, Any]:
        """The effective telephony sections, passwords masked: safe to print or log."""
        sip = {k: getattr(self.sip, k) for k in self.sip.__dataclass_fields__
               if k != "accounts"}
        sip["transports"] = list(self.sip.transports)
        sip["codecs"] = list(self.sip.codecs)
        sip["allowed_sources"] = [str(n) for n in self.sip.allowed_sources]
        sip["accounts"] = [a.to_dict() for a in self.sip.accounts]
        return {"sip": sip,
                "transfer": {k: getattr(self.transfer, k)
                             for k in self.transfer.__dataclass_fields__},
                "workers": {k: ("***" if k == "front_secret" and v else v)
                            for k in self.workers.__dataclass_fields__
                            for v in [getattr(self.workers, k)]}}


# --- loading ------------------------------------------------------------------------------
def load_settings(path: str | os.PathLike[str] | None = None,
                  env: Mapping[str, str] | None = None) -> TelephonySettings:
    """Load the whole configuration (core + telephony) and validate the telephony part."""
    env = os.environ if env is None else env
    core = load_config(path, env=env, external=SECTIONS)
    return settings_from(core, env)


def settings_from(core: Config, env: Mapping[str, str] | None = None) -> TelephonySettings:
    """The telephony sections of ``core`` (kept raw by the core), read by the same rules as
    the core's own: defaults, the file, then CALLBOT_SIP_* / _TRANSFER_* / _WORKERS_*."""
    env = os.environ if env is None else env
    where = core.source
    table = default_table()
    defaults = copy.deepcopy(table)
    merge(table, {s: core.extra.get(s) or {} for s in SECTIONS}, where,
          tables=frozenset({"sip.accounts"}))
    merge(table, env_overrides(table, env, CLASSES, strict=False), "environment")
    sip = build(SipSettings, "sip", table["sip"], defaults["sip"], where)
    transfer = build(TransferSettings, "transfer", table["transfer"], defaults["transfer"],
                     where)
    workers = build(WorkersSettings, "workers", table["workers"], defaults["workers"], where)
    _check_ports(sip, workers, where)
    _check_hosts(sip, workers, where)
    return TelephonySettings(core, sip, transfer, workers)


def _check_hosts(sip: SipSettings, w: WorkersSettings, where: str) -> None:
    """Several hosts: one front, the same secret everywhere, nothing left unreachable."""
    if w.count == 0 and (w.front == "none" or not w.remote):
        raise ConfigError(f"{where}: workers.count = 0 runs a front only: it needs "
                          f"workers.front = \"local\" and the other hosts' workers in "
                          f"workers.remote")
    if w.front == "none" and w.remote:
        raise ConfigError(f"{where}: workers.remote lists workers for this host's front, but "
                          f"workers.front = \"none\"")
    if (w.front == "none" or w.remote) and not w.front_secret:
        raise ConfigError(f"{where}: workers on several hosts admit only INVITEs stamped by "
                          f"the front: set the same workers.front_secret on every host")
    if w.front == "none" and (ipaddress.ip_address(w.bind).is_loopback
                              or ipaddress.ip_address(sip.bind).is_loopback
                              or (w.bind != sip.bind and not ipaddress.ip_address(
                                  sip.bind).is_unspecified)):
        raise ConfigError(f"{where}: workers.front = \"none\" (another host's front) needs "
                          f"workers.bind and sip.bind on the same address that host reaches "
                          f"(now {w.bind} and {sip.bind})")
    if w.remote and ipaddress.ip_address(sip.bind).is_loopback:
        raise ConfigError(f"{where}: workers.remote (workers of other hosts) needs sip.bind "
                          f"on an address they reach, not {sip.bind}")
    if len(set(w.remote)) != len(w.remote):
        raise ConfigError(f"{where}: workers.remote lists the same worker twice")


def _check_ports(sip: SipSettings, workers: WorkersSettings, where: str) -> None:
    """What no single key can check: ranges that must fit together."""
    if sip.rtp_port_range < 4 * sip.max_calls:
        raise ConfigError(f"{where}: sip.rtp_port_range = {sip.rtp_port_range} must be at least "
                          f"{4 * sip.max_calls} (each call needs an RTP and an RTCP port, and "
                          f"a bridged transfer a second call: allow 4 per call)")
    if sip.rtp_port_start + sip.rtp_port_range > 65536:
        raise ConfigError(f"{where}: sip.rtp_port_start + sip.rtp_port_range goes past 65535")
    if sip.rtp_port_start <= sip.port < sip.rtp_port_start + sip.rtp_port_range:
        raise ConfigError(f"{where}: sip.port {sip.port} lies inside the RTP range "
                          f"{sip.rtp_port_start}-{sip.rtp_port_start + sip.rtp_port_range - 1}")
    top = workers.base_rtp_port + workers.count * sip.rtp_port_range
    if top > 65536:
        raise ConfigError(f"{where}: workers.base_rtp_port + workers.count x "
                          f"sip.rtp_port_range = {top} goes past port 65535")
    if workers.base_sip_port + workers.count - 1 > 65535:
        raise ConfigError(f"{where}: workers.base_sip_port + workers.count goes past 65535")
    # A port inside the workers' RTP ports would be taken by a call's media at some point:
    # the SIP port that then fails to bind is found only under load, so refuse it now.
    if workers.count:
        span = f"{workers.base_rtp_port}-{top - 1} (workers.base_rtp_port + workers.count x " \
               f"sip.rtp_port_range)"
        if workers.front == "local" and workers.base_rtp_port <= sip.port < top:
            raise ConfigError(f"{where}: sip.port {sip.port} lies inside the workers' RTP "
                              f"ports {span}: choose another sip.port or base_rtp_port")
        last_sip = workers.base_sip_port + workers.count - 1
        if workers.base_sip_port < top and workers.base_rtp_port <= last_sip:
            raise ConfigError(f"{where}: the workers' SIP ports {workers.base_sip_port}-"
                              f"{last_sip} overlap their RTP ports {span}: move "
                              f"workers.base_sip_port or workers.base_rtp_port")


# --- the core's `callbot config check` ----------------------------------------------------
# Declared in pyproject.toml under the entry-point group "callbot.config" (one per section):
# the core accepts these sections in the one configuration file and prints them validated.
def effective_sip(core: Config) -> dict[str, Any]:
    return settings_from(core).to_dict()["sip"]


def effective_transfer(core: Config) -> dict[str, Any]:
    return settings_from(core).to_dict()["transfer"]


def effective_workers(core: Config) -> dict[str, Any]:
    return settings_from(core).to_dict()["workers"]
