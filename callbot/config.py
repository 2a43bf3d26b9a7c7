"""One TOML configuration: embedded defaults, an optional file, then environment variables.

The embedded ``default.toml`` is the documentation of every key. A user file only
changes what it names; an unknown section or key, or a value of the wrong type, is
refused with the key and the reason, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, Mapping

from .configrules import build, env_overrides, merge, rule
from .embedding import ENCODERS
from .errors import ConfigError



def project_root() -> Path:
    """The folder holding kb/ and models/: the checkout this package runs from."""
    env = os.environ.get("CALLBOT_HOME")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parent.parent


POSITIVE = rule(gt=0)


def _path(value: str, name: str, where: str) -> Path:
    """Relative paths are taken from the project folder (the one holding kb/ and models/)."""
    p = Path(value)
    return p if p.is_absolute() else project_root() / p


def _db_url(value: str, name: str, where: str) -> str:
    if value and not value.startswith(("postgresql://", "postgres://", "sqlite:///")):
        raise ConfigError(f"{where}: {name} must be empty (SQLite in paths.data), "
                          f"sqlite:///FILE or postgresql://...")
    return value


@dataclass(frozen=True)
class PathsConfig:
    kb: Path = field(metadata=rule(parse=_path))
    models: Path = field(metadata=rule(parse=_path))
    data: Path = field(metadata=rule(parse=_path))


@dataclass(frozen=True)
class AsrConfig:
    engine: str = field(metadata=rule(choices=("auto", "vosk", "whisper")))
    language: str
    whisper_model: str
    vosk_model: str
    beam_size: int = field(metadata=POSITIVE)
    recordings_beam_size: int = field(metadata=POSITIVE)
    prompt: str
    threads: int = field(metadata=rule(ge=0, why=" (0: automatic)"))
    whisper_window_s: float = field(metadata=POSITIVE)
    whisper_batch: int = field(metadata=rule(ge=1, le=32))
    early_decode_s: float = field(metadata=rule(ge=0, why=" (0: off)"))
    decoders: int = field(metadata=rule(ge=0, le=64, why=" (0: automatic)"))


@dataclass(frozen=True)
class EndpointingConfig:
    speech_start_ms: int = field(metadata=POSITIVE)
    end_silence_ms: int = field(metadata=POSITIVE)
    quick_end: str = field(metadata=rule(choices=("understood", "always", "off")))
    quick_end_ms: int = field(metadata=POSITIVE)
    hold_after_ms: int = field(metadata=rule(ge=0, why=" (0: never)"))
    turn_model: str = field(metadata=rule(choices=("smart-turn-v3.2", "")))
    turn_model_threshold: float = field(metadata=rule(gt=0, le=1))
    mid_sentence_silence_ms: int = field(metadata=POSITIVE)
    max_utterance_ms: int = field(metadata=POSITIVE)
    no_input_ms: int = field(metadata=POSITIVE)
    pre_roll_ms: int
    min_speech_db: float
    snr_db: float


@dataclass(frozen=True)
class NluConfig:
    model: str
    encoder: str = field(metadata=rule(choices=(*ENCODERS, "")))
    reject_threshold: float
    confident_threshold: float
    margin: float


@dataclass(frozen=True)
class TtsConfig:
    engine: str = field(metadata=rule(choices=("auto", "piper", "espeak")))
    piper_voice: str
    espeak_voice: str
    espeak_rate: int = field(metadata=POSITIVE)
    slow_factor: float = field(metadata=POSITIVE)


def _intent_ids(value: list[str], name: str, where: str) -> tuple[str, ...]:
    """Intent ids (checked against the knowledge base when the engines load)."""
    bad = [v for v in value if not re.fullmatch(r"[a-z0-9_]+", v)]
    if bad:
        raise ConfigError(f"{where}: {name}: {bad[0]!r} is not an intent id (ids are "
                          f"lowercase words joined by _, as in kb/taxonomy.json)")
    return tuple(value)


@dataclass(frozen=True)
class DialogueConfig:
    not_understood_limit: int = field(metadata=POSITIVE)
    no_input_limit: int = field(metadata=POSITIVE)
    siren_attempts: int = field(metadata=POSITIVE)
    number_attempts: int = field(metadata=POSITIVE)
    lookup_intents: tuple[str, ...] = field(metadata=rule(parse=_intent_ids))


@dataclass(frozen=True)
class TranscriptsConfig:
    """Where calls are recorded turn by turn, and for how long they are kept."""

    enabled: bool
    url: str = field(metadata=rule(parse=_db_url))   # "" = SQLite in paths.data
    retention_days: int = field(metadata=POSITIVE)
    journal_max_mb: int = field(metadata=POSITIVE)   # per worker journal (database outages)
    debug_personal_data: bool = False   # logs carry personal data: troubleshooting only


@dataclass(frozen=True)
class ConsoleUser:
    """A supervisor account; the hash comes from `callbot console hash-password`."""

    name: str
    role: str             # readonly | editor
    password_hash: str = field(repr=False)


CONSOLE_ROLES = ("readonly", "editor")


def _console_users(raw: Any, where_name: str, where: str) -> tuple[ConsoleUser, ...]:
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


@dataclass(frozen=True)
class ConsoleConfig:
    """The supervisor web console (`callbot console`)."""

    host: str
    port: int = field(metadata=POSITIVE)
    cookie_secure: str = field(metadata=rule(choices=("auto", "always", "never")))
    session_minutes: int = field(metadata=POSITIVE)
    idle_minutes: int = field(metadata=POSITIVE)
    max_failures: int = field(metadata=POSITIVE)
    lockout_minutes: int = field(metadata=POSITIVE)
    page_size: int = field(metadata=POSITIVE)
    review_below: float = field(metadata=rule(gt=0, le=1))
    retrain_folds: int = field(metadata=rule(ge=2))
    users: tuple[ConsoleUser, ...] = field(metadata=rule(parse=_console_users, env=False))


@dataclass(frozen=True)
class RecordingConfig:
    """Stereo call recordings (caller left, bot right); off unless asked for."""

    enabled: bool


@dataclass(frozen=True)
class RecognitionConfig:
    """Where speech recognition and sentence embeddings run (see default.toml)."""

    socket: str
    timeout_s: float = field(metadata=POSITIVE)
    connect_wait_s: float = field(metadata=rule(ge=0))
    queue: int = field(metadata=POSITIVE)


def _optional_path(value: str, name: str, where: str) -> Path | None:
    """"" stays None (the component picks its default place); anything else is a path."""
    return _path(value, name, where) if value else None


@dataclass(frozen=True)
class SireneConfig:
    """The copy of the public Sirene register the bot answers from (`callbot sirene`)."""

    path: Path | None = field(metadata=rule(parse=_optional_path))   # None: paths.data


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (see default.toml)."""

    listen: str
    path: str


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
    recognition: RecognitionConfig
    metrics: MetricsConfig
    sirene: SireneConfig
    source: str = "embedded default"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The core's sections, secrets masked (other layers print their own sections)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "extra"):
                continue
            section = getattr(self, f.name)
            out[f.name] = _masked(f.name, {k: (str(v) if isinstance(v, Path) else "" if v is None else v)
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
    "recognition": RecognitionConfig,
    "metrics": MetricsConfig,
    "sirene": SireneConfig,
}



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
        merge(table, user, str(p), external)
        source = str(p)
    merge(table, env_overrides(table, env, SECTIONS, skip=external), "environment")
    sections = {name: build(cls, name, table[name], defaults[name], source)
                for name, cls in SECTIONS.items()}
    extra = {k: v for k, v in table.items() if k in external}
    return Config(**sections, source=source, extra=extra)
