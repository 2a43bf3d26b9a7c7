"""One TOML configuration: embedded defaults, an optional file, then environment variables.

The embedded ``default.toml`` is the documentation of every key. A user file only
changes what it names; an unknown section or key, or a value of the wrong type, is
refused with the key and the reason, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

ENV_PREFIX = "CALLBOT_"


def project_root() -> Path:
    """The folder holding kb/ and models/: the checkout this package runs from."""
    env = os.environ.get("CALLBOT_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class PathsConfig:
    kb: Path
    models: Path
    data: Path


@dataclass(frozen=True)
class AsrConfig:
    engine: str
    language: str
    whisper_model: str
    vosk_model: str
    beam_size: int
    recordings_beam_size: int
    prompt: str
    threads: int
    whisper_window_s: float


@dataclass(frozen=True)
class EndpointingConfig:
    speech_start_ms: int
    end_silence_ms: int
    quick_end: str
    quick_end_ms: int
    max_utterance_ms: int
    no_input_ms: int
    pre_roll_ms: int
    min_speech_db: float
    snr_db: float


@dataclass(frozen=True)
class NluConfig:
    model: str
    encoder: str
    reject_threshold: float
    confident_threshold: float
    margin: float


@dataclass(frozen=True)
class TtsConfig:
    engine: str
    piper_voice: str
    espeak_voice: str
    espeak_rate: int
    slow_factor: float


@dataclass(frozen=True)
class DialogueConfig:
    not_understood_limit: int
    no_input_limit: int
    siren_attempts: int


@dataclass(frozen=True)
class TranscriptsConfig:
    """Where calls are recorded turn by turn, and for how long they are kept."""

    enabled: bool
    url: str              # "" = SQLite in paths.data; "postgresql://..." for several workers
    retention_days: int


@dataclass(frozen=True)
class ConsoleUser:
    """A supervisor account; the hash comes from `callbot console hash-password`."""

    name: str
    role: str             # readonly | editor
    password_hash: str = field(repr=False)


@dataclass(frozen=True)
class ConsoleConfig:
    """The supervisor web console (`callbot console`)."""

    host: str
    port: int
    cookie_secure: str    # auto | always | never
    session_minutes: int
    max_failures: int
    lockout_minutes: int
    page_size: int
    review_below: float
    retrain_folds: int
    users: tuple[ConsoleUser, ...]


@dataclass(frozen=True)
class RecordingConfig:
    """Stereo call recordings (caller left, bot right); off unless asked for."""

    enabled: bool


@dataclass(frozen=True)
class Config:
    paths: PathsConfig
    asr: AsrConfig
    endpointing: EndpointingConfig
    nlu: NluConfig
    tts: TtsConfig
    dialogue: DialogueConfig
    transcripts: TranscriptsConfig
    console: ConsoleConfig
    recording: RecordingConfig
    source: str = "embedded default"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def models_dir(self) -> Path:
        return self.paths.models

    def to_dict(self) -> dict[str, Any]:
        """The core's sections, secrets masked (other layers print their own sections)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "extra"):
                continue
            section = getattr(self, f.name)
            out[f.name] = _masked(f.name, {k: (str(v) if isinstance(v, Path) else v)
                                           for k, v in dataclasses.asdict(section).items()})
        return out


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "asr": AsrConfig,
    "endpointing": EndpointingConfig,
    "nlu": NluConfig,
    "tts": TtsConfig,
    "dialogue": DialogueConfig,
    "transcripts": TranscriptsConfig,
    "console": ConsoleConfig,
    "recording": RecordingConfig,
}


CHOICES = {
    ("asr", "engine"): {"auto", "vosk", "whisper"},
    ("nlu", "encoder"): {"e5-small-q4", ""},
    ("endpointing", "quick_end"): {"understood", "always", "off"},
    ("tts", "engine"): {"auto", "piper", "espeak"},
    ("console", "cookie_secure"): {"auto", "always", "never"},
}

POSITIVE = {
    ("endpointing", "speech_start_ms"),
    ("endpointing", "end_silence_ms"), ("endpointing", "max_utterance_ms"),
    ("endpointing", "quick_end_ms"), ("asr", "whisper_window_s"),
    ("endpointing", "no_input_ms"), ("asr", "beam_size"), ("asr", "recordings_beam_size"),
    ("dialogue", "not_understood_limit"), ("dialogue", "no_input_limit"),
    ("dialogue", "siren_attempts"), ("tts", "espeak_rate"), ("tts", "slow_factor"),
    ("transcripts", "retention_days"), ("console", "port"), ("console", "session_minutes"),
    ("console", "max_failures"), ("console", "lockout_minutes"), ("console", "page_size"),
    ("console", "retrain_folds"),
}
CONSOLE_ROLES = ("readonly", "editor")


def _console_users(raw: Any, where: str) -> tuple[ConsoleUser, ...]:
    """[[console.users]] tables → users; a wrong entry is refused, never skipped, because
    a silently ignored account is a supervisor locked out (or a role wrongly granted)."""
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: console.users must be a list of [[console.users]] tables")
    users: list[ConsoleUser] = []
    for i, item in enumerate(raw, 1):
        if not isinstance(item, Mapping):
            raise ConfigError(f"{where}: console.users entry {i} must be a table")
        unknown = set(item) - {"name", "role", "password_hash"}
        if unknown:
            raise ConfigError(f"{where}: console.users entry {i}: unknown key "
                              f"{', '.join(sorted(unknown))} (known: name, password_hash, role)")
        name, role, hashed = item.get("name"), item.get("role", "readonly"), item.get(
            "password_hash")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}: console.users entry {i}: 'name' must be a non-empty "
                              f"string")
        if role not in CONSOLE_ROLES:
            raise ConfigError(f"{where}: console.users {name}: role {role!r} is not one of "
                              f"{', '.join(CONSOLE_ROLES)}")
        if not isinstance(hashed, str) or not hashed.startswith("scrypt$"):
            raise ConfigError(f"{where}: console.users {name}: 'password_hash' must come from "
                              f"`callbot console hash-password` (scrypt$...)")
        if any(u.name == name for u in users):
            raise ConfigError(f"{where}: console.users: user {name!r} is defined twice")
        users.append(ConsoleUser(name=name, role=role, password_hash=hashed))
    return tuple(users)


def _masked(section: str, table: dict[str, Any]) -> dict[str, Any]:
    """The printable form of a section: password hashes and database passwords hidden."""
    if section == "console":
        table["users"] = [{**u, "password_hash": "***"} for u in table["users"]]
    if section == "transcripts" and "@" in table.get("url", ""):
        scheme, _, rest = table["url"].partition("://")
        creds, _, host = rest.rpartition("@")
        if ":" in creds:
            table["url"] = f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return table


def plugin_sections() -> dict[str, EntryPoint]:
    """Sections owned by other layers, declared in the entry-point group "callbot.config".

    The entry point's name is the section; it loads to ``effective(config) -> dict`` that
    validates the section's raw table (``config.extra[name]``) and returns it with defaults
    applied and secrets masked. The core discovers them without importing those layers.
    """
    return {ep.name: ep for ep in entry_points(group="callbot.config")}


def default_table() -> dict[str, Any]:
    text = resources.files("callbot").joinpath("default.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def _merge(base: dict[str, Any], override: Mapping[str, Any], where: str,
           external: frozenset[str] = frozenset()) -> None:
    for section, table in override.items():
        if section not in base and section not in external:
            raise ConfigError(f"{where}: unknown section [{section}] "
                              f"(known: {', '.join(sorted(set(base) | external))})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [{section}] must be a table")
        if section in external:
            base.setdefault(section, {}).update(copy.deepcopy(dict(table)))
            continue
        for key, value in table.items():
            if key not in base[section]:
                raise ConfigError(f"{where}: unknown key {section}.{key} "
                                  f"(known: {', '.join(sorted(base[section]))})")
            base[section][key] = value


def _coerce(section: str, key: str, value: Any, default: Any, where: str) -> Any:
    name = f"{section}.{key}"
    if isinstance(default, bool):
        if isinstance(value, str):
            low = value.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: {name} must be true or false, not {value!r}")
    if isinstance(default, int):
        try:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a whole number, not {value!r}") from None
    if isinstance(default, float):
        try:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {name} must be a number, not {value!r}") from None
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, not {value!r}")
        return value
    return value


def _env_overrides(table: dict[str, Any], env: Mapping[str, str],
                   external: frozenset[str] = frozenset()) -> dict[str, dict[str, str]]:
    """CALLBOT_<SECTION>_<KEY> for the core's sections; other layers read their own."""
    out: dict[str, dict[str, str]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ("CALLBOT_CONFIG", "CALLBOT_HOME"):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if any(rest.startswith(x + "_") for x in external):
            continue
        for section in sorted(table, key=len, reverse=True):
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1:]
                if key not in table[section] or isinstance(table[section][key], (dict, list)):
                    raise ConfigError(f"environment: {name} names no key "
                                      f"(section [{section}] has: {', '.join(sorted(table[section]))})")
                out.setdefault(section, {})[key] = value
                break
        else:
            raise ConfigError(f"environment: {name} names no configuration section "
                              f"(known: {', '.join(sorted(table))})")
    return out


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None,
                external: frozenset[str] | set[str] = frozenset()) -> Config:
    """Defaults, then the file (``path`` or $CALLBOT_CONFIG), then CALLBOT_* variables.

    ``external`` names sections owned by another layer (the SIP side): they are kept as raw
    tables in ``Config.extra`` for that layer to validate, so the core never knows them.
    """
    env = os.environ if env is None else env
    external = frozenset(external) | frozenset(plugin_sections())
    table = default_table()
    defaults = copy.deepcopy(table)
    source = "embedded default"
    path = path or env.get("CALLBOT_CONFIG") or None
    if path:
        p = Path(path)
        try:
            user = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"configuration file {p} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file {p}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        _merge(table, user, str(p), external)
        source = str(p)
    _merge(table, _env_overrides({k: v for k, v in table.items() if k not in external}, env,
                                 external), "environment")

    root = project_root()
    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        values = {}
        for f in dataclasses.fields(cls):
            raw = table[section][f.name]
            value = _coerce(section, f.name, raw, defaults[section][f.name], source)
            if (section, f.name) in CHOICES and value not in CHOICES[(section, f.name)]:
                raise ConfigError(f"{source}: {section}.{f.name} = {value!r} is not one of "
                                  f"{', '.join(sorted(CHOICES[(section, f.name)]))}")
            if (section, f.name) in POSITIVE and value <= 0:
                raise ConfigError(f"{source}: {section}.{f.name} must be greater than 0")
            if (section, f.name) == ("asr", "threads") and value < 0:
                raise ConfigError(f"{source}: asr.threads must be 0 (auto) or more")
            if section == "paths":
                value = Path(value)
                value = value if value.is_absolute() else root / value
            if (section, f.name) == ("console", "users"):
                value = _console_users(value, source)
            if (section, f.name) == ("console", "review_below") and not 0 < value <= 1:
                raise ConfigError(f"{source}: console.review_below must be between 0 and 1")
            if (section, f.name) == ("console", "retrain_folds") and value < 2:
                raise ConfigError(f"{source}: console.retrain_folds must be at least 2")
            if (section, f.name) == ("transcripts", "url") and value and not value.startswith(
                    ("postgresql://", "postgres://", "sqlite:///")):
                raise ConfigError(f"{source}: transcripts.url must be empty (SQLite in "
                                  f"paths.data), sqlite:///FILE or postgresql://...")
            values[f.name] = value
        sections[section] = cls(**values)
    extra = {k: v for k, v in table.items() if k in external}
    return Config(**sections, source=source, extra=extra)
