"""How every configuration section is read and checked, whichever layer owns it.

A section is a frozen dataclass; its defaults live in a TOML file (``callbot/default.toml``
for the core, ``telephony/default.toml`` for the SIP side), which is also its documentation.
A field's checks are its metadata (:func:`rule`): bounds, choices, a parser for values that
are more than a number or a string (a path, a network, a URI). The same code merges a user
file over the defaults, applies ``CALLBOT_<SECTION>_<KEY>`` environment variables, coerces
each value to the type of its default and runs the rules, so every section refuses a typo
or a bad value the same way: with the key, the value and what would be right.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Mapping

from .errors import ConfigError

ENV_PREFIX = "CALLBOT_"
ENV_ITSELF = ("CALLBOT_CONFIG", "CALLBOT_HOME")   # not keys: where the file and the checkout are


def rule(*, gt: float | None = None, ge: float | None = None, le: float | None = None,
         choices: tuple[str, ...] | None = None,
         parse: Callable[[Any, str, str], Any] | None = None, env: bool = True,
         why: str = "") -> dict[str, Any]:
    """A field's checks, as ``dataclasses.field(metadata=rule(...))``.

    ``gt``/``ge``/``le``: bounds of a number; ``choices``: the allowed strings; ``parse``:
    ``parse(value, "section.key", where)`` returns the typed value or raises ConfigError;
    ``env=False``: not settable from the environment (tables, such as users or accounts);
    ``why``: appended to a bounds error (what the bound protects).
    """
    return {"gt": gt, "ge": ge, "le": le, "choices": choices, "parse": parse, "env": env,
            "why": why}


def merge(base: dict[str, Any], override: Mapping[str, Any], where: str,
          external: frozenset[str] = frozenset(), tables: frozenset[str] = frozenset()) -> None:
    """Lay ``override`` (a user file, the environment) over ``base`` (the defaults).

    An unknown section or key is refused. ``external``: sections owned by another layer,
    kept as raw tables for it; ``tables``: ``section.key`` names allowed without a default
    (lists of tables such as ``sip.accounts``).
    """
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
            if key not in base[section] and f"{section}.{key}" not in tables:
                raise ConfigError(f"{where}: unknown key {section}.{key} "
                                  f"(known: {', '.join(sorted(base[section]))})")
            base[section][key] = value


def env_overrides(table: Mapping[str, Mapping[str, Any]], env: Mapping[str, str],
                  classes: Mapping[str, type], skip: frozenset[str] = frozenset(),
                  strict: bool = True) -> dict[str, dict[str, Any]]:
    """``CALLBOT_<SECTION>_<KEY>`` variables for the sections of ``classes``.

    Lists are comma-separated (``CALLBOT_SIP_CODECS=PCMA,G722``). ``skip``: sections of
    another layer (their variables are left to it); ``strict``: a CALLBOT_ variable that
    names no section is refused (the core's check: a typo in a variable name).
    """
    out: dict[str, dict[str, Any]] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or name in ENV_ITSELF:
            continue
        rest = name[len(ENV_PREFIX):].lower()
        if any(rest.startswith(x + "_") for x in skip):
            continue
        for section in sorted(classes, key=len, reverse=True):
            if not rest.startswith(section + "_"):
                continue
            key = rest[len(section) + 1:]
            settable = {f.name for f in dataclasses.fields(classes[section])
                        if f.metadata.get("env", True)}
            if key not in table[section] or key not in settable:
                raise ConfigError(f"environment: {name} names no key "
                                  f"(section [{section}] has: {', '.join(sorted(settable))})")
            default = table[section][key]
            out.setdefault(section, {})[key] = (
                [v.strip() for v in value.split(",") if v.strip()]
                if isinstance(default, list) else value)
            break
        else:
            if strict:
                raise ConfigError(f"environment: {name} names no configuration section "
                                  f"(known: {', '.join(sorted(set(classes) | skip))})")
    return out


def coerce(name: str, value: Any, default: Any, where: str) -> Any:
    """``value`` as the type of its ``default`` (bool, int, float, str, list of str); strings
    lose their surrounding blanks (a pasted value with a trailing space is the same value);
    a whole number given for a string becomes its digits (the field's parser reads it)."""
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
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)      # a number where "auto" or a number is allowed
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name} must be a string, not {value!r}")
        return value.strip()
    if isinstance(default, list) and (not default or isinstance(default[0], str)):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {name} must be a list, not {value!r}")
        return value
    return value


def check(name: str, value: Any, meta: Mapping[str, Any], where: str) -> None:
    """Run a field's bounds and choices (its parser runs after)."""
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}: {name} = {value!r} is not one of {', '.join(choices)}")
    gt, ge, le, why = meta.get("gt"), meta.get("ge"), meta.get("le"), meta.get("why", "")
    if gt is not None and not value > gt:
        raise ConfigError(f"{where}: {name} = {value} must be greater than {_num(gt)}{why}")
    if ge is not None and le is not None and not ge <= value <= le:
        raise ConfigError(f"{where}: {name} = {value} must be between {_num(ge)} and "
                          f"{_num(le)}{why}")
    if ge is not None and value < ge:
        raise ConfigError(f"{where}: {name} = {value} must be at least {_num(ge)}{why}")
    if le is not None and value > le:
        raise ConfigError(f"{where}: {name} = {value} must be at most {_num(le)}{why}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def build(cls: type, section: str, raw: Mapping[str, Any], defaults: Mapping[str, Any],
          where: str, **given: Any) -> Any:
    """The section's dataclass from its merged table: coerced, checked, parsed.
    ``given``: fields that are not in the file (e.g. a parent object)."""
    values: dict[str, Any] = dict(given)
    for f in dataclasses.fields(cls):
        if f.name in given:
            continue
        name = f"{section}.{f.name}"
        value = raw.get(f.name, defaults.get(f.name))
        if f.name in defaults:
            value = coerce(name, value, defaults[f.name], where)
        check(name, value, f.metadata, where)
        parse = f.metadata.get("parse")
        values[f.name] = parse(value, name, where) if parse is not None else value
    return cls(**values)
