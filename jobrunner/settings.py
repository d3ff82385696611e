"""Settings declared once: a TOML key is a dataclass field that carries its converter.

::

    concurrency: int = setting(16, conv.integer(1, 10_000))
    name: str = field(metadata=toml_key(conv.job_name, hint="a unique name like 'nightly'"))
    kwargs: Mapping[str, Any] = field(default_factory=..., metadata=toml_key(conv.json_table))
    fn: Callable[..., Any] | None = None  # no converter: not a key

:func:`parse_table` checks and converts a TOML table by the :func:`keys` of a dataclass (their
declaration order is the order of the allowed keys in messages and of the issues reported)
and :func:`definition_of` turns the keys of an instance into JSON-able values for hashing.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from jobrunner.errors import ConfigIssue
from jobrunner.units import describe

__all__ = [
    "UNRESOLVED",
    "Converter",
    "Issues",
    "check_keys",
    "definition_of",
    "has_unresolved",
    "join_key",
    "keys",
    "parse_table",
    "setting",
    "toml_key",
]

T = TypeVar("T")

# Takes a raw TOML value and returns the typed value, or raises ValueError with a message
# saying what is wrong and what is allowed.
Converter = Callable[[Any], Any]

_CONVERT = "convert"
_HINT = "hint"


def toml_key(convert: Converter, *, hint: str = "") -> Mapping[str, Any]:
    """The metadata that makes a dataclass field a TOML key: ``field(metadata=toml_key(...))``.

    ``hint`` says what to write when a key without a default is missing.
    """
    return {_CONVERT: convert, _HINT: hint}


def setting(default: T, convert: Converter) -> T:
    """A key with a default: ``lease_ttl: timedelta = setting(timedelta(seconds=30), ...)``.

    (A key without a default is a plain ``field(metadata=toml_key(convert, hint=...))``, so
    that type checkers know the argument is required.)
    """
    return dataclasses.field(default=default, metadata=toml_key(convert))


def keys(cls: type) -> Mapping[str, dataclasses.Field[Any]]:
    """The fields of dataclass ``cls`` that are TOML keys (they have a converter), in order."""
    return {f.name: f for f in dataclasses.fields(cls) if _CONVERT in f.metadata}


def definition_of(obj: object, leave_out: Collection[str] = ()) -> dict[str, Any]:
    """The keys of a config dataclass as JSON-able values: durations in seconds (float),
    zones by their key, tables as plain JSON; the rest as they are."""
    return {
        name: _jsonable(getattr(obj, name)) for name in keys(type(obj)) if name not in leave_out
    }


def _jsonable(value: object) -> object:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, ZoneInfo):
        return value.key
    if isinstance(value, Mapping):
        return json.loads(json.dumps(dict(value)))
    return value


# --------------------------------------------------------------------------- issues


class Issues:
    """Collects the problems of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigIssue] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(ConfigIssue(file=self.file, key=key, message=message))

    def __bool__(self) -> bool:
        return bool(self.items)


def join_key(prefix: str, key: str) -> str:
    """``worker.lease_ttl``; a key that is not a bare TOML key is quoted: ``kwargs."a b"``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        key = json.dumps(key)
    return f"{prefix}.{key}" if prefix else key


class _Unresolved:
    """Stands for a string whose ``${...}`` could not be expanded (already reported): the
    setting holding it is skipped by validation instead of being reported a second time."""


UNRESOLVED = _Unresolved()


def has_unresolved(value: object) -> bool:
    if isinstance(value, dict):
        return any(has_unresolved(v) for v in value.values())
    if isinstance(value, list):
        return any(has_unresolved(v) for v in value)
    return value is UNRESOLVED


# --------------------------------------------------------------------------- parsing


def check_keys(
    raw: Mapping[str, Any], allowed: Sequence[str], prefix: str, issues: Issues, label: str = ""
) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            issues.add(
                join_key(prefix, key),
                f"{label}unknown key {key!r}: {hint}allowed keys: {', '.join(allowed)}",
            )


def _default(spec: dataclasses.Field[Any]) -> Any:
    """The default of a field, or MISSING."""
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return spec.default


def parse_table(
    raw: object, cls: type, prefix: str, issues: Issues, label: str = ""
) -> tuple[dict[str, Any], bool]:
    """Convert ``raw`` by the keys of ``cls``; return the good values (defaults filled in)
    and whether every key was good. Unknown keys, bad and missing values become issues."""
    if raw is UNRESOLVED:
        return {}, False
    if not isinstance(raw, dict):
        issues.add(prefix, f"{label}expected a table, got {describe(raw)}")
        return {}, False
    fields = keys(cls)
    check_keys(raw, list(fields), prefix, issues, label)
    values: dict[str, Any] = {}
    ok = True
    for name, spec in fields.items():
        if name in raw and has_unresolved(raw[name]):
            ok = False
        elif name in raw:
            try:
                values[name] = spec.metadata[_CONVERT](raw[name])
            except ValueError as exc:
                issues.add(join_key(prefix, name), f"{label}{exc}")
                ok = False
        elif (default := _default(spec)) is not dataclasses.MISSING:
            values[name] = default
        else:
            issues.add(join_key(prefix, name), f"{label}missing; allowed: {spec.metadata[_HINT]}")
            ok = False
    return values, ok
