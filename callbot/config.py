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
    threads: int


@dataclass(frozen=True)
class EndpointingConfig:
    frame_ms: int
    speech_start_ms: int
    end_silence_ms: int
    max_utterance_ms: int
    no_input_ms: int
    pre_roll_ms: int
    min_speech_db: float
    snr_db: float


@dataclass(frozen=True)
class NluConfig:
    model: str
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
class Config:
    paths: PathsConfig
    asr: AsrConfig
    endpointing: EndpointingConfig
    nlu: NluConfig
    tts: TtsConfig
    dialogue: DialogueConfig
    source: str = "embedded default"
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def models_dir(self) -> Path:
        return self.paths.models

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("source", "extra"):
                continue
            section = getattr(self, f.name)
            out[f.name] = {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in dataclasses.asdict(section).items()}
        out.update(copy.deepcopy(dict(self.extra)))
        return out


SECTIONS: dict[str, type] = {
    "paths": PathsConfig,
    "asr": AsrConfig,
    "endpointing": EndpointingConfig,
    "nlu": NluConfig,
    "tts": TtsConfig,
    "dialogue": DialogueConfig,
}


CHOICES = {
    ("asr", "engine"): {"auto", "vosk", "whisper"},
    ("tts", "engine"): {"auto", "piper", "espeak"},
}

POSITIVE = {
    ("endpointing", "frame_ms"), ("endpointing", "speech_start_ms"),
    ("endpointing", "end_silence_ms"), ("endpointing", "max_utterance_ms"),
    ("endpointing", "no_input_ms"), ("asr", "beam_size"), ("asr", "threads"),
    ("dialogue", "not_understood_limit"), ("dialogue", "no_input_limit"),
    ("dialogue", "siren_attempts"), ("tts", "espeak_rate"), ("tts", "slow_factor"),
}


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
            if section == "paths":
                value = Path(value)
                value = value if value.is_absolute() else root / value
            values[f.name] = value
        sections[section] = cls(**values)
    ep = sections["endpointing"]
    if 1000 % ep.frame_ms or ep.frame_ms not in (10, 20, 30, 40):
        raise ConfigError(f"{source}: endpointing.frame_ms must be 10, 20, 30 or 40")
    extra = {k: v for k, v in table.items() if k in external}
    return Config(**sections, source=source, extra=extra)
