"""The telephony sections of the one configuration file: [sip], [transfer], [workers].

The core keeps these sections as raw tables (``load_config(external=...)``); this module
owns their defaults (``telephony/default.toml``), their types and their checks. Like the
core, it refuses an unknown key or a bad value with the key and the reason, because a typo
in a port or an allowed network must never fall back silently to a default.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Mapping

from callbot.config import Config, load_config
from callbot.errors import ConfigError

SECTIONS = frozenset({"sip", "transfer", "workers"})
TRANSPORTS = ("udp", "tcp")
FAILURE_MODES = ("fallback", "bridge")
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


@dataclass(frozen=True)
class SipAccount:
    """A registration with a PBX or provider. The password never appears in a repr."""

    registrar: str
    user: str
    password: str = field(repr=False)
    domain: str
    realm: str
    expiry_s: int

    @property
    def id_uri(self) -> str:
        return f"sip:{self.user}@{self.domain}"

    def to_dict(self) -> dict[str, Any]:
        return {"registrar": self.registrar, "user": self.user,
                "password": "***" if self.password else "", "domain": self.domain,
                "realm": self.realm, "expiry_s": self.expiry_s}


@dataclass(frozen=True)
class SipSettings:
    bind: str
    public_address: str
    port: int
    transports: tuple[str, ...]
    rtp_port_start: int
    rtp_port_range: int
    max_calls: int
    max_setups_per_s: int
    max_call_s: int
    media_timeout_s: float
    dtmf_per_s: int
    dtmf_per_call: int
    user: str
    allowed_sources: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    codecs: tuple[str, ...]
    log_level: int
    accounts: tuple[SipAccount, ...] = ()

    def allows(self, address: str) -> bool:
        """Is this source address (no port) in allowed_sources?"""
        try:
            ip = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return False
        return any(ip in net for net in self.allowed_sources if net.version == ip.version)


@dataclass(frozen=True)
class TransferSettings:
    queue_uri: str
    refer_timeout_s: float
    on_failure: str
    bridge_timeout_s: float
    bridge_max_s: float
    fallback_text: str
    hold_text: str


@dataclass(frozen=True)
class WorkersSettings:
    count: int
    bind: str
    front_secret: str = field(repr=False)
    base_sip_port: int
    base_rtp_port: int
    drain_timeout_s: float
    recycle_after_calls: int
    health_interval_s: float
    media_priority: str

    def sip_port(self, index: int) -> int:
        return self.base_sip_port + index


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
    env = os.environ if env is None else env
    where = core.source
    table = default_table()
    defaults = copy.deepcopy(table)
    for section in SECTIONS:
        user = core.extra.get(section) or {}
        for key, value in user.items():
            if key not in table[section] and not (section == "sip" and key == "accounts"):
                raise ConfigError(f"{where}: unknown key {section}.{key} "
                                  f"(known: {', '.join(sorted(table[section]))})")
            table[section][key] = value
    _apply_env(table, env)
    sip = _sip(table["sip"], defaults["sip"], where)
    transfer = _transfer(table["transfer"], defaults["transfer"], where)
    workers = _workers(table["workers"], defaults["workers"], where)
    top = workers.base_rtp_port + workers.count * sip.rtp_port_range
    if top > 65536:
        raise ConfigError(f"{where}: workers.base_rtp_port + workers.count x "
                          f"sip.rtp_port_range = {top} goes past port 65535")
    if workers.base_sip_port + workers.count - 1 > 65535:
        raise ConfigError(f"{where}: workers.base_sip_port + workers.count goes past 65535")
    return TelephonySettings(core, sip, transfer, workers)


def _apply_env(table: dict[str, Any], env: Mapping[str, str]) -> None:
    """CALLBOT_SIP_PORT=5080 and the like; lists are comma-separated."""
    for name, value in env.items():
        for section in SECTIONS:
            prefix = f"CALLBOT_{section.upper()}_"
            if not name.startswith(prefix):
                continue
            key = name[len(prefix):].lower()
            if key not in table[section] or key == "accounts":
                raise ConfigError(f"environment: {name} names no key "
                                  f"(section [{section}] has: {', '.join(sorted(table[section]))})")
            default = table[section][key]
            table[section][key] = ([v.strip() for v in value.split(",") if v.strip()]
                                   if isinstance(default, list) else value)


# --- typed getters: each names the key in its error ------------------------------------------
def _int(t: Mapping[str, Any], section: str, key: str, where: str,
         lo: int | None = None, hi: int | None = None, why: str = "") -> int:
    value = t[key]
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        n = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {section}.{key} must be a whole number, not {value!r}") \
            from None
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        rng = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{where}: {section}.{key} = {n} must be {rng}{why}")
    return n


def _float(t: Mapping[str, Any], section: str, key: str, where: str, lo: float = 0.0) -> float:
    value = t[key]
    try:
        if isinstance(value, bool):
            raise ValueError
        x = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {section}.{key} must be a number, not {value!r}") from None
    if not x > lo:
        raise ConfigError(f"{where}: {section}.{key} = {x} must be greater than {lo}")
    return x


def _str(t: Mapping[str, Any], section: str, key: str, where: str, empty: bool = True) -> str:
    value = t[key]
    if not isinstance(value, str):
        raise ConfigError(f"{where}: {section}.{key} must be a string, not {value!r}")
    if not empty and not value.strip():
        raise ConfigError(f"{where}: {section}.{key} must not be empty")
    return value.strip() if key != "fallback_text" else " ".join(value.split())


def _list(t: Mapping[str, Any], section: str, key: str, where: str) -> list[str]:
    value = t[key]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: {section}.{key} must be a list of strings, not {value!r}")
    return value


def _address(value: str, name: str, where: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{where}: {name} = {value!r} is not an IP address "
                          f"(give a numeric IPv4 or IPv6 address)") from None
    return value


def _sip_uri(value: str, name: str, where: str) -> str:
    if not SIP_URI.match(value):
        raise ConfigError(f"{where}: {name} = {value!r} is not a SIP URI "
                          f"(expected sip:user@host[:port])")
    return value


# --- sections ---------------------------------------------------------------------------------
def _sip(t: dict[str, Any], d: dict[str, Any], where: str) -> SipSettings:
    s = "sip"
    bind = _address(_str(t, s, "bind", where, empty=False), "sip.bind", where)
    public = _str(t, s, "public_address", where)
    if public:
        _address(public, "sip.public_address", where)
    port = _int(t, s, "port", where, 1, 65535)
    transports = [x.lower() for x in _list(t, s, "transports", where)]
    if not transports:
        raise ConfigError(f"{where}: sip.transports must name at least one of udp, tcp")
    for x in transports:
        if x not in TRANSPORTS:
            raise ConfigError(f"{where}: sip.transports: {x!r} is not one of udp, tcp "
                              f"(TLS is not offered: this pjsua2 wheel bundles OpenSSL 1.0.2)")
    max_calls = _int(t, s, "max_calls", where, 1, WHEEL_MAX_CALLS,
                     " (the pjsua2 wheel allows 4 calls per process: run more workers)")
    rtp_start = _int(t, s, "rtp_port_start", where, 1024, 65534)
    rtp_range = _int(t, s, "rtp_port_range", where, 4 * max_calls, 65535,
                     " (each call needs an RTP and an RTCP port, and a bridged transfer "
                     "a second call: allow 4 per call)")
    if rtp_start + rtp_range > 65536:
        raise ConfigError(f"{where}: sip.rtp_port_start + sip.rtp_port_range goes past 65535")
    if rtp_start <= port < rtp_start + rtp_range:
        raise ConfigError(f"{where}: sip.port {port} lies inside the RTP range "
                          f"{rtp_start}-{rtp_start + rtp_range - 1}")
    nets = []
    for raw in _list(t, s, "allowed_sources", where):
        try:
            nets.append(ipaddress.ip_network(raw, strict=False))
        except ValueError:
            raise ConfigError(f"{where}: sip.allowed_sources: {raw!r} is not an address or "
                              f"network (e.g. 10.0.0.5 or 10.0.0.0/24)") from None
    codecs = _list(t, s, "codecs", where)
    if not codecs:
        raise ConfigError(f"{where}: sip.codecs must name at least one codec (PCMA, PCMU...)")
    known = {c.lower(): c for c in KNOWN_CODECS}
    for c in codecs:
        if c.split("/")[0].lower() not in known:
            raise ConfigError(f"{where}: sip.codecs: unknown codec {c!r} "
                              f"(this build has: {', '.join(KNOWN_CODECS)}; no Opus)")
    user = _str(t, s, "user", where, empty=False)
    if not re.fullmatch(r"[A-Za-z0-9._\-+]+", user):
        raise ConfigError(f"{where}: sip.user = {user!r} may only hold letters, digits and ._-+")
    accounts = tuple(_account(i, a, where) for i, a in enumerate(_accounts(t, where)))
    return SipSettings(
        bind=bind, public_address=public, port=port, transports=tuple(dict.fromkeys(transports)),
        rtp_port_start=rtp_start, rtp_port_range=rtp_range, max_calls=max_calls,
        max_setups_per_s=_int(t, s, "max_setups_per_s", where, 1),
        max_call_s=_int(t, s, "max_call_s", where, 10),
        media_timeout_s=_float(t, s, "media_timeout_s", where),
        dtmf_per_s=_int(t, s, "dtmf_per_s", where, 1),
        dtmf_per_call=_int(t, s, "dtmf_per_call", where, 1),
        user=user, allowed_sources=tuple(nets), codecs=tuple(codecs),
        log_level=_int(t, s, "log_level", where, 0, 6), accounts=accounts)


def _accounts(t: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    raw = t.get("accounts", [])
    if not isinstance(raw, list) or not all(isinstance(a, Mapping) for a in raw):
        raise ConfigError(f"{where}: sip.accounts must be written as [[sip.accounts]] tables")
    return raw


def _account(i: int, raw: Mapping[str, Any], where: str) -> SipAccount:
    name = f"sip.accounts[{i}]"
    for key in raw:
        if key not in ACCOUNT_KEYS:
            raise ConfigError(f"{where}: unknown key {name}.{key} "
                              f"(known: {', '.join(sorted(ACCOUNT_KEYS))})")
    t = {**ACCOUNT_KEYS, **raw}
    registrar = _sip_uri(_str(t, name, "registrar", where, empty=False),
                         f"{name}.registrar", where)
    user = _str(t, name, "user", where, empty=False)
    password = t["password"]
    if not isinstance(password, str) or not password:
        raise ConfigError(f"{where}: {name}.password must be a non-empty string")
    domain = _str(t, name, "domain", where) or registrar.split(":", 1)[1].split(";")[0] \
        .split("@")[-1].split(":")[0]
    return SipAccount(registrar=registrar, user=user, password=password, domain=domain,
                      realm=_str(t, name, "realm", where, empty=False),
                      expiry_s=_int(t, name, "expiry_s", where, 30, 86400))


def _transfer(t: dict[str, Any], d: dict[str, Any], where: str) -> TransferSettings:
    s = "transfer"
    on_failure = _str(t, s, "on_failure", where, empty=False)
    if on_failure not in FAILURE_MODES:
        raise ConfigError(f"{where}: transfer.on_failure = {on_failure!r} is not one of "
                          f"{', '.join(FAILURE_MODES)}")
    return TransferSettings(
        queue_uri=_sip_uri(_str(t, s, "queue_uri", where, empty=False), "transfer.queue_uri",
                           where),
        refer_timeout_s=_float(t, s, "refer_timeout_s", where),
        on_failure=on_failure,
        bridge_timeout_s=_float(t, s, "bridge_timeout_s", where),
        bridge_max_s=_float(t, s, "bridge_max_s", where, lo=-1e-9),
        fallback_text=_str(t, s, "fallback_text", where, empty=False),
        hold_text=_str(t, s, "hold_text", where, empty=False))


def _workers(t: dict[str, Any], d: dict[str, Any], where: str) -> WorkersSettings:
    s = "workers"
    secret = _str(t, s, "front_secret", where)
    if secret and not re.fullmatch(r"[A-Za-z0-9._\-]{16,128}", secret):
        raise ConfigError(f"{where}: workers.front_secret must be 16 to 128 letters, digits or "
                          f"._- (or empty for a random one at every start)")
    return WorkersSettings(
        count=_int(t, s, "count", where, 1, 256),
        bind=_address(_str(t, s, "bind", where, empty=False), "workers.bind", where),
        front_secret=secret,
        base_sip_port=_int(t, s, "base_sip_port", where, 1, 65535),
        base_rtp_port=_int(t, s, "base_rtp_port", where, 1024, 65534),
        drain_timeout_s=_float(t, s, "drain_timeout_s", where, lo=-1e-9),
        recycle_after_calls=_int(t, s, "recycle_after_calls", where, 0),
        health_interval_s=_float(t, s, "health_interval_s", where),
        media_priority=_choice(t, s, "media_priority", where, MEDIA_PRIORITIES))


MEDIA_PRIORITIES = ("realtime", "normal")


def _choice(t: dict[str, Any], s: str, key: str, where: str, choices: tuple[str, ...]) -> str:
    value = _str(t, s, key, where, empty=False)
    if value not in choices:
        raise ConfigError(f"{where}: {s}.{key} = {value!r} is not one of {', '.join(choices)}")
    return value


# --- the core's `callbot config check` ----------------------------------------------------
# Declared in pyproject.toml under the entry-point group "callbot.config" (one per section):
# the core accepts these sections in the one configuration file and prints them validated.
def effective_sip(core: Config) -> dict[str, Any]:
    return settings_from(core).to_dict()["sip"]


def effective_transfer(core: Config) -> dict[str, Any]:
    return settings_from(core).to_dict()["transfer"]


def effective_workers(core: Config) -> dict[str, Any]:
    return settings_from(core).to_dict()["workers"]
