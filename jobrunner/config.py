"""Load ``jobrunner.toml`` into frozen dataclasses, validating everything at load time.

Rules (see DESIGN.md, "Configuration" and guarantee 8):

* Every problem in a file is collected and raised together as one
  :class:`~jobrunner.errors.ConfigError`; each :class:`~jobrunner.errors.ConfigIssue` names the
  file, the key path and what is allowed.
* Key paths are dotted, with 0-based indices for arrays: ``worker.lease_ttl``,
  ``jobs[2].cron``, ``jobs[0].kwargs.region``, ``worker.import_paths[1]``. The issue of a job
  whose ``name`` is known starts its message with ``job 'NAME': ``. Whole-file problems
  (unreadable file, invalid TOML) have an empty key.
* ``${VAR}`` and ``${VAR:-default}`` are expanded in every string value (after TOML parsing,
  in arrays and ``kwargs`` too); as in the shell, the default is used when ``VAR`` is unset or
  empty. ``$${`` stands for a literal ``${``. Nesting (``${A:-${B}}``) is not supported and
  a default cannot contain ``}``. Only strings are expanded: numbers and booleans cannot come
  from the environment (durations can, as they may be strings).
* A non-empty ``$JOBRUNNER_DATABASE_URL`` replaces ``[database] url`` (the TOML value is then
  not even expanded). Without either the URL is ``sqlite:///jobrunner.db``.
* Database URLs: ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``;
  ``sqlite:///relative.db`` is relative to the *current directory* of the process (as in
  SQLAlchemy), ``sqlite:////abs/path.db`` is absolute. Other schemes are refused.
* Durations: a number of seconds (int or float, or a string of digits) or a string of
  ``<number><unit>`` parts without spaces, units ``d h m s ms`` from largest to smallest, each
  at most once: ``"30s"``, ``"10m"``, ``"1h30m"``, ``"500ms"``, ``"2d"``, ``"1.5h"``.
  Optional durations (``jobs[].timeout``, ``history.retention``) are switched off with
  ``false`` (the same as leaving ``timeout`` out).
* Sizes (``jobs[].max_memory``): a number of bytes (an integer, or a string of digits) or a
  string ``<number><unit>``, units ``B kB MB GB TB`` (powers of 1000) or ``KiB MiB GiB TiB``
  (powers of 1024), case-insensitive: ``"512MB"``, ``"1GiB"``, ``"1.5GB"``.
* ``isolation = "process"`` (plain ``def`` jobs only) runs the job in a child process that is
  killed at its timeout or on cancel; ``max_memory`` needs it.
* ``worker.import_paths`` are relative to the directory of the configuration file; with
  ``import_funcs=True`` they are put at the front of ``sys.path`` (once each) and every
  ``func`` is imported. Nothing is ever evaluated.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import inspect
import json
import math
import os
import re
import sys
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from jobrunner.errors import ConfigError, ConfigIssue
from jobrunner.schedule import Schedule, validate_cron

__all__ = [
    "DEFAULT_CONFIG_FILE",
    "DEFAULT_DATABASE_URL",
    "ENV_CONFIG",
    "ENV_DATABASE_URL",
    "Config",
    "DatabaseConfig",
    "HistoryConfig",
    "HttpConfig",
    "JobConfig",
    "LoggingConfig",
    "WorkerConfig",
    "format_duration",
    "load_config",
    "mask_url",
    "normalize_database_url",
    "parse_duration",
    "parse_size",
    "resolve_config_path",
]

ENV_CONFIG = "JOBRUNNER_CONFIG"
ENV_DATABASE_URL = "JOBRUNNER_DATABASE_URL"
DEFAULT_CONFIG_FILE = "jobrunner.toml"
DEFAULT_DATABASE_URL = "sqlite:///jobrunner.db"
DEFAULT_HTTP_LISTEN = "127.0.0.1:9108"
UTC = ZoneInfo("UTC")

T = TypeVar("T")


# --------------------------------------------------------------------------- durations

_DURATION_ALLOWED = (
    "allowed: a number of seconds or a string like '30s', '10m', '1h30m', '500ms', '2d'"
)
_UNIT_MICROS = {
    "d": 86_400_000_000,
    "h": 3_600_000_000,
    "m": 60_000_000,
    "s": 1_000_000,
    "ms": 1_000,
}
_UNIT_ORDER = ("d", "h", "m", "s", "ms")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|d|h|m|s)")
_DURATION_STRING = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|d|h|m|s))+")
_NUMBER_STRING = re.compile(r"\d+(?:\.\d+)?")


def parse_duration(value: object) -> timedelta:
    """Parse ``30`` / ``1.5`` (seconds) or ``"30s"``, ``"1h30m"``, ``"500ms"``, ``"2d"``.

    Raises ValueError saying what is allowed. Negative durations are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a duration, got {_describe(value)}; {_DURATION_ALLOWED}")
    if isinstance(value, str):
        micros = _duration_string_micros(value)
    elif math.isfinite(value) and value >= 0:
        micros = Decimal(value) * _UNIT_MICROS["s"]
    else:
        raise ValueError(f"invalid duration {value} (negative or not finite); {_DURATION_ALLOWED}")
    try:
        return timedelta(microseconds=int(micros.to_integral_value()))
    except OverflowError:
        raise ValueError(f"duration {value!r} is too long; {_DURATION_ALLOWED}") from None


def _duration_string_micros(text: str) -> Decimal:
    if _NUMBER_STRING.fullmatch(text):
        return Decimal(text) * _UNIT_MICROS["s"]
    if not _DURATION_STRING.fullmatch(text):
        raise ValueError(f"invalid duration {text!r}; {_DURATION_ALLOWED}")
    parts = _DURATION_PART.findall(text)
    positions = [_UNIT_ORDER.index(unit) for _, unit in parts]
    if positions != sorted(set(positions)):
        raise ValueError(
            f"invalid duration {text!r}: units must go from largest to smallest (d h m s ms), "
            f"each at most once; {_DURATION_ALLOWED}"
        )
    return sum((Decimal(number) * _UNIT_MICROS[unit] for number, unit in parts), Decimal(0))


def format_duration(td: timedelta) -> str:
    """The inverse of :func:`parse_duration`: ``"1h30m"``, ``"30s"``, ``"500ms"``, ``"0s"``."""
    if td < timedelta(0):
        return f"-{format_duration(-td)}"
    rest = td // timedelta(microseconds=1)
    parts = []
    for unit in ("d", "h", "m"):
        count, rest = divmod(rest, _UNIT_MICROS[unit])
        if count:
            parts.append(f"{count}{unit}")
    seconds, micros = divmod(rest, _UNIT_MICROS["s"])
    if micros % 1000:
        parts.append(f"{seconds}.{micros:06d}".rstrip("0") + "s")
    else:
        parts.extend(f"{n}{unit}" for n, unit in ((seconds, "s"), (micros // 1000, "ms")) if n)
    return "".join(parts) or "0s"


# --------------------------------------------------------------------------- sizes

_SIZE_ALLOWED = "allowed: a number of bytes or a string like '512MB', '1GiB', '1.5GB'"
_SIZE_UNITS = {
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE_STRING = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)", re.IGNORECASE)


def parse_size(value: object) -> int:
    """Parse ``1048576`` or ``"512MB"``, ``"1GiB"``, ``"1.5GB"`` into a number of bytes.

    ``kB MB GB TB`` are powers of 1000, ``KiB MiB GiB TiB`` powers of 1024. Raises ValueError
    saying what is allowed.
    """
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected a size, got {_describe(value)}; {_SIZE_ALLOWED}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"invalid size {value} (negative); {_SIZE_ALLOWED}")
        return value
    match = _SIZE_STRING.fullmatch(value.strip())
    if match is None or (match[2] and match[2].lower() not in _SIZE_UNITS):
        raise ValueError(f"invalid size {value!r}; {_SIZE_ALLOWED}")
    return int(Decimal(match[1]) * _SIZE_UNITS[match[2].lower() or "b"])


# --------------------------------------------------------------------------- URLs

_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@]*):(.*)@")
_PARAM_PASSWORD = re.compile(r"(?i)(password=)[^&\s]*")
_POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+psycopg"})


def mask_url(url: str) -> str:
    """Hide the password of a URL (``u:***@h``) and any ``password=...`` parameter.

    When in doubt (an ``@`` further on, e.g. in the query), more is masked, never less.
    """
    return _PARAM_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1:***@", url))


def normalize_database_url(url: str) -> str:
    """Return the SQLAlchemy URL for ``url``, or raise ValueError (with the URL masked)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _POSTGRES_SCHEMES:
        return f"postgresql+psycopg://{rest}"
    if sep and scheme.lower() == "sqlite" and (not rest or rest.startswith("/")):
        return f"sqlite://{rest}"
    raise ValueError(
        f"unsupported database URL {mask_url(url)!r}: "
        "allowed postgresql://USER:PASSWORD@HOST:PORT/DBNAME or sqlite:///path"
    )


# --------------------------------------------------------------------------- models


def _seconds(td: timedelta | None) -> float | None:
    return None if td is None else td.total_seconds()


def _short_hash(payload: object) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, kw_only=True, repr=False)
class DatabaseConfig:
    """``[database]``. ``listen_url`` (the direct connection for LISTEN) defaults to ``url``."""

    url: str = DEFAULT_DATABASE_URL
    listen_url: str = ""

    def __post_init__(self) -> None:
        if not self.listen_url:
            object.__setattr__(self, "listen_url", self.url)

    def __repr__(self) -> str:  # never show a password
        return (
            f"DatabaseConfig(url={mask_url(self.url)!r}, listen_url={mask_url(self.listen_url)!r})"
        )


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """``[worker]``: settings of this worker process."""

    concurrency: int = 16
    threads: int = 8
    processes: int = 2
    lease_ttl: timedelta = timedelta(seconds=30)
    heartbeat: timedelta = timedelta(seconds=10)
    shutdown_grace: timedelta = timedelta(seconds=30)
    timezone: ZoneInfo = UTC
    import_paths: tuple[Path, ...] = (Path("."),)
    poll_interval: timedelta = timedelta(seconds=1)
    max_clock_skew: timedelta = timedelta(seconds=5)

    def definition(self) -> dict[str, Any]:
        """JSON-able settings, without ``import_paths`` (they depend on where the file is)."""
        return {
            "concurrency": self.concurrency,
            "threads": self.threads,
            "processes": self.processes,
            "lease_ttl": _seconds(self.lease_ttl),
            "heartbeat": _seconds(self.heartbeat),
            "shutdown_grace": _seconds(self.shutdown_grace),
            "timezone": self.timezone.key,
            "poll_interval": _seconds(self.poll_interval),
            "max_clock_skew": _seconds(self.max_clock_skew),
        }


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """``[logging]``."""

    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """``[http]``: ``listen = "HOST:PORT"``, split into ``host`` and ``port``."""

    listen: str | None = None
    host: str
    port: int


@dataclass(frozen=True, kw_only=True)
class HistoryConfig:
    """``[history]``: pruning of finished runs. ``retention=None`` keeps them forever."""

    retention: timedelta | None = timedelta(days=30)
    keep_last: int = 0
    prune_interval: timedelta = timedelta(hours=1)


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    """One ``[[jobs]]`` entry; ``fn`` is None when loaded with ``import_funcs=False``."""

    name: str
    func: str
    cron: str | None = None
    timezone: ZoneInfo = UTC
    timeout: timedelta | None = None
    retries: int = 0
    retry_backoff: timedelta = timedelta(seconds=30)
    retry_backoff_max: timedelta = timedelta(hours=1)
    overlap: Literal["forbid", "allow", "replace"] = "forbid"
    max_concurrency: int | None = None
    catch_up: Literal["skip", "latest", "all"] = "latest"
    misfire_grace: timedelta = timedelta(minutes=1)
    max_catch_up: int = 100
    jitter: timedelta = timedelta(0)
    kwargs: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    isolation: Literal["thread", "process"] = "thread"
    max_memory: int | None = None  # bytes (RLIMIT_AS of the child); only with "process"
    fn: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    is_async: bool = False
    accepts_ctx: bool = False

    @cached_property  # parsed once: the scheduler asks for it on every tick
    def schedule(self) -> Schedule | None:
        """The cron schedule in the job's zone, or None for a job that is only enqueued."""
        return None if self.cron is None else Schedule.of(self.cron, self.timezone)

    def definition(self) -> dict[str, Any]:
        """Every setting as JSON-able values (durations in seconds, the zone by its key).

        ``isolation`` and ``max_memory`` appear only for ``isolation = "process"``, so that
        the definitions (and hashes) of jobs that do not use it stay what they were.
        """
        isolated = (
            {"isolation": self.isolation, "max_memory": self.max_memory}
            if self.isolation != "thread"
            else {}
        )
        return {
            "name": self.name,
            "func": self.func,
            "cron": self.cron,
            "timezone": self.timezone.key,
            "timeout": _seconds(self.timeout),
            "retries": self.retries,
            "retry_backoff": _seconds(self.retry_backoff),
            "retry_backoff_max": _seconds(self.retry_backoff_max),
            "overlap": self.overlap,
            "max_concurrency": self.max_concurrency,
            "catch_up": self.catch_up,
            "misfire_grace": _seconds(self.misfire_grace),
            "max_catch_up": self.max_catch_up,
            "jitter": _seconds(self.jitter),
            "kwargs": json.loads(json.dumps(dict(self.kwargs))),
            **isolated,
        }

    @cached_property
    def definition_hash(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`definition` (canonical JSON)."""
        return _short_hash(self.definition())


@dataclass(frozen=True, kw_only=True)
class Config:
    """A loaded configuration file. ``path`` is absolute."""

    path: Path
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    http: HttpConfig | None = None
    history: HistoryConfig = field(default_factory=HistoryConfig)
    jobs: tuple[JobConfig, ...] = ()

    def job(self, name: str) -> JobConfig:
        """The job called ``name``; KeyError if there is none."""
        for job in self.jobs:
            if job.name == name:
                return job
        raise KeyError(name)

    @property
    def config_hash(self) -> str:
        """16 hex digits over the worker settings and every job's definition (by name)."""
        jobs = sorted((job.definition() for job in self.jobs), key=lambda d: str(d["name"]))
        return _short_hash({"worker": self.worker.definition(), "jobs": jobs})


# --------------------------------------------------------------------------- issues


class _Issues:
    """Collects the problems of one file."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[ConfigIssue] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(ConfigIssue(file=self.file, key=key, message=message))

    def __bool__(self) -> bool:
        return bool(self.items)


def _describe(value: object) -> str:
    """``string 'x'``, ``integer 5``, ``boolean true``, ``table``, ``array``..."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    names = {int: "integer", float: "float", dict: "table", list: "array"}
    name = names.get(type(value), type(value).__name__)
    return name if isinstance(value, dict | list) else f"{name} {value}"


def _join(prefix: str, key: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]+", key):
        key = json.dumps(key)
    return f"{prefix}.{key}" if prefix else key


# --------------------------------------------------------------------------- converters
# Each converter takes a raw TOML value and returns the typed value, or raises ValueError
# with a message saying what is wrong and what is allowed.

Converter = Callable[[Any], Any]


def _integer(low: int, high: int | None = None) -> Converter:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_describe(value)}")
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {allowed}, got {value}")
        return value

    return convert


def _duration(minimum: timedelta = timedelta(0), *, exclusive: bool = False) -> Converter:
    def convert(value: object) -> timedelta:
        td = parse_duration(value)
        if td < minimum or (exclusive and td == minimum):
            allowed = "greater than" if exclusive else "at least"
            got = format_duration(td)
            raise ValueError(f"must be {allowed} {format_duration(minimum)}, got {got}")
        return td

    return convert


_MIN_MEMORY = 64 * 1024**2


def _memory(value: object) -> int:
    size = parse_size(value)
    if size < _MIN_MEMORY:
        raise ValueError(
            f"must be at least 64MiB ({_MIN_MEMORY} bytes), got {size} bytes: the limit "
            "covers the whole child process, the Python interpreter included"
        )
    return size


def _optional(convert: Converter) -> Converter:
    """``false`` switches the setting off (None)."""

    def optional(value: object) -> Any:
        if value is False:
            return None
        try:
            return convert(value)
        except ValueError as exc:
            raise ValueError(f"{exc} (or false to switch it off)") from None

    return optional


def _as_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_describe(value)}")
    return value


def _string(pattern: str | None = None, allowed: str = "") -> Converter:
    def convert(value: object) -> str:
        value = _as_str(value)
        if pattern is not None and not re.fullmatch(pattern, value):
            raise ValueError(f"invalid value {value!r}: allowed {allowed}")
        return value

    return convert


def _choice(*choices: str) -> Converter:
    def convert(value: object) -> str:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"expected one of {allowed}, got {_describe(value)}")
        return str(value)

    return convert


def _zone(value: object) -> ZoneInfo:
    key = _as_str(value)
    try:
        return ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory
        pass
    close = difflib.get_close_matches(key, zoneinfo.available_timezones(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(
        f"unknown time zone {key!r}: {hint}allowed: an IANA name like 'UTC', 'Europe/Berlin'"
    )


def _cron(value: object) -> str:
    expr = _as_str(value)
    validate_cron(expr)
    return expr


def _kwargs(value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f'expected a table like {{ region = "eu" }}, got {_describe(value)}')
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"must be JSON-serialisable ({exc}); "
            "allowed: strings, finite numbers, booleans, arrays and tables"
        ) from None
    return MappingProxyType(json.loads(text))


def _paths(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(
            f'expected an array of directory paths like [".", "src"], got {_describe(value)}'
        )
    return tuple(value)


def _split_listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(\d{1,5})", value)
    if match is None or int(match[2]) > 65535:
        raise ValueError(
            f"expected 'HOST:PORT' (port 0-65535) like '127.0.0.1:9108', '0.0.0.0:9108' "
            f"or '[::1]:9108', got {value!r}"
        )
    return match[1].strip("[]"), int(match[2])


def _listen(value: object) -> str:
    text = _as_str(value)
    _split_listen(text)
    return text


# --------------------------------------------------------------------------- field tables

_REQUIRED: Any = object()


@dataclass(frozen=True)
class _Field:
    convert: Converter
    default: Any = _REQUIRED
    hint: str = ""  # what to write when a required key is missing


_NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}"
_NAME_ALLOWED = "letters, digits and '_.:-', starting with a letter or digit, up to 200 characters"
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_FUNC_ALLOWED = "'package.module:function' (the function may be dotted: 'pkg.mod:Class.method')"

_TOP = ("database", "worker", "logging", "http", "history", "jobs")

_DATABASE = {
    "url": _Field(_as_str, DEFAULT_DATABASE_URL),
    "listen_url": _Field(_as_str, ""),
}

_WORKER = {
    "concurrency": _Field(_integer(1, 10_000), 16),
    "threads": _Field(_integer(1, 1_000), 8),
    "lease_ttl": _Field(_duration(timedelta(seconds=1)), timedelta(seconds=30)),
    "heartbeat": _Field(_duration(exclusive=True), timedelta(seconds=10)),
    "shutdown_grace": _Field(_duration(), timedelta(seconds=30)),
    "timezone": _Field(_zone, UTC),
    "import_paths": _Field(_paths, (".",)),
    "poll_interval": _Field(_duration(exclusive=True), timedelta(seconds=1)),
    "max_clock_skew": _Field(_duration(), timedelta(seconds=5)),
    "processes": _Field(_integer(1, 64), 2),
}

_LOGGING = {
    "format": _Field(_choice("auto", "json", "console"), "auto"),
    "level": _Field(_choice("debug", "info", "warning", "error"), "info"),
}

_HTTP = {"listen": _Field(_listen, DEFAULT_HTTP_LISTEN)}

_HISTORY = {
    "retention": _Field(_optional(_duration(exclusive=True)), timedelta(days=30)),
    "keep_last": _Field(_integer(0), 0),
    "prune_interval": _Field(_duration(exclusive=True), timedelta(hours=1)),
}

_JOB = {
    "name": _Field(_string(_NAME, _NAME_ALLOWED), hint="a unique name like 'nightly-report'"),
    "func": _Field(_string(f"{_DOTTED}:{_DOTTED}", _FUNC_ALLOWED), hint=_FUNC_ALLOWED),
    "cron": _Field(_cron, None),
    "timezone": _Field(_zone, None),  # None: [worker] timezone
    "timeout": _Field(_optional(_duration(exclusive=True)), None),
    "retries": _Field(_integer(0, 1_000), 0),
    "retry_backoff": _Field(_duration(), timedelta(seconds=30)),
    "retry_backoff_max": _Field(_duration(), timedelta(hours=1)),
    "overlap": _Field(_choice("forbid", "allow", "replace"), "forbid"),
    "max_concurrency": _Field(_integer(1), None),
    "catch_up": _Field(_choice("skip", "latest", "all"), "latest"),
    "misfire_grace": _Field(_duration(), timedelta(minutes=1)),
    "max_catch_up": _Field(_integer(1, 100_000), 100),
    "jitter": _Field(_duration(), timedelta(0)),
    "kwargs": _Field(_kwargs, MappingProxyType({})),
    "isolation": _Field(_choice("thread", "process"), "thread"),
    "max_memory": _Field(_memory, None),
}


def _check_keys(
    raw: Mapping[str, Any], allowed: Sequence[str], prefix: str, issues: _Issues, label: str = ""
) -> None:
    for key in raw:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            issues.add(
                _join(prefix, key),
                f"{label}unknown key {key!r}: {hint}allowed keys: {', '.join(allowed)}",
            )


def _parse_table(
    raw: object, fields: Mapping[str, _Field], prefix: str, issues: _Issues, label: str = ""
) -> tuple[dict[str, Any], bool]:
    """Convert ``raw`` by ``fields``; return the good values (defaults filled in) and
    whether every field was good. Unknown keys, bad and missing values become issues."""
    if raw is _UNRESOLVED:
        return {}, False
    if not isinstance(raw, dict):
        issues.add(prefix, f"{label}expected a table, got {_describe(raw)}")
        return {}, False
    _check_keys(raw, list(fields), prefix, issues, label)
    values: dict[str, Any] = {}
    ok = True
    for name, spec in fields.items():
        if name not in raw and spec.default is _REQUIRED:
            issues.add(_join(prefix, name), f"{label}missing; allowed: {spec.hint}")
            ok = False
        elif name not in raw:
            values[name] = spec.default
        elif _has_unresolved(raw[name]):
            ok = False
        else:
            try:
                values[name] = spec.convert(raw[name])
            except ValueError as exc:
                issues.add(_join(prefix, name), f"{label}{exc}")
                ok = False
    return values, ok


def _section(
    raw: object, fields: Mapping[str, _Field], prefix: str, issues: _Issues, cls: type[T]
) -> T | None:
    values, ok = _parse_table(raw, fields, prefix, issues)
    return cls(**values) if ok else None


# --------------------------------------------------------------------------- sections


def _build_database(
    raw: object, environ: Mapping[str, str], issues: _Issues
) -> DatabaseConfig | None:
    values, ok = _parse_table(raw, _DATABASE, "database", issues)
    override = environ.get(ENV_DATABASE_URL)
    if override:
        values["url"] = override
    for key in ("url", "listen_url"):
        if key in values and (key == "url" or values[key]):  # listen_url "" means url
            try:
                values[key] = normalize_database_url(values[key])
            except ValueError as exc:
                source = f" (from ${ENV_DATABASE_URL})" if key == "url" and override else ""
                issues.add(f"database.{key}", f"{exc}{source}")
                ok = False
    return DatabaseConfig(**values) if ok else None


def _build_worker(raw: object, base: Path, issues: _Issues) -> tuple[WorkerConfig, bool]:
    """The worker settings and whether they are all valid. When they are not, the settings
    returned have defaults in place of the bad values, so that jobs can still be checked."""
    values, ok = _parse_table(raw, _WORKER, "worker", issues)
    paths = ((base / Path(p).expanduser()).resolve() for p in values.get("import_paths", ["."]))
    values["import_paths"] = tuple(dict.fromkeys(paths))
    heartbeat, lease_ttl = values.get("heartbeat"), values.get("lease_ttl")
    if heartbeat is not None and lease_ttl is not None and heartbeat * 2 >= lease_ttl:
        issues.add(
            "worker.heartbeat",
            f"worker.heartbeat ({format_duration(heartbeat)}) must be less than half of "
            f"worker.lease_ttl ({format_duration(lease_ttl)}), so that a lease is renewed at "
            f"least twice before it expires; allowed: below {format_duration(lease_ttl / 2)}",
        )
        ok = False
        del values["heartbeat"]
    return WorkerConfig(**values), ok


def _build_http(raw: object, issues: _Issues) -> HttpConfig | None:
    values, ok = _parse_table(raw, _HTTP, "http", issues)
    if not ok:
        return None
    host, port = _split_listen(values["listen"])
    return HttpConfig(listen=values["listen"], host=host, port=port)


# --------------------------------------------------------------------------- jobs


def _extend_sys_path(paths: Sequence[Path]) -> None:
    """Put ``paths`` at the front of ``sys.path``, in order, skipping those already there."""
    for path in reversed(paths):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    importlib.invalidate_caches()


def _import_func(spec: str, import_paths: Sequence[Path]) -> Callable[..., Any]:
    """Import ``module:attr.path``; raise ValueError with a one-line reason."""
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        where = ", ".join(str(p) for p in import_paths) or "-"
        raise ValueError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc} "
            f"(searched worker.import_paths: {where}, then the installed packages)"
        ) from None
    owner = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [n for n in dir(obj) if n[:1] != "_"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{owner!r} has no attribute {part!r}{hint}")
        obj, owner = getattr(obj, part), f"{owner}.{part}"
    if not callable(obj):
        raise ValueError(
            f"{spec!r} is {type(obj).__name__}, not callable; allowed: a function or async function"
        )
    return obj


def _is_async(fn: Callable[..., Any]) -> bool:
    """True for async functions, partials of them and instances with an async ``__call__``."""
    target: object = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isclass(target):
        return False
    if not inspect.isroutine(target):
        target = type(target).__call__
    return inspect.iscoroutinefunction(target)


def _accepts_ctx(fn: Callable[..., Any]) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def _job_label(raw: object) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"job {name!r}: " if isinstance(name, str) and re.fullmatch(_NAME, name) else ""


def _check_job_rules(values: dict[str, Any], key: str, label: str, issues: _Issues) -> bool:
    ok = True
    if values.get("max_concurrency") is not None and values.get("overlap", "allow") != "allow":
        issues.add(
            f"{key}.max_concurrency",
            f"{label}max_concurrency only applies with overlap = 'allow', "
            f"but overlap is {values['overlap']!r}; remove it or set overlap = 'allow'",
        )
        ok = False
    if values.get("max_memory") is not None and values.get("isolation", "process") != "process":
        issues.add(
            f"{key}.max_memory",
            f"{label}max_memory only applies with isolation = 'process' (a thread cannot be "
            "limited), but isolation is 'thread'; remove it or set isolation = 'process'",
        )
        ok = False
    backoff, backoff_max = values.get("retry_backoff"), values.get("retry_backoff_max")
    if backoff is not None and backoff_max is not None and backoff_max < backoff:
        issues.add(
            f"{key}.retry_backoff_max",
            f"{label}must be at least retry_backoff ({format_duration(backoff)}), "
            f"got {format_duration(backoff_max)}",
        )
        ok = False
    return ok


def _build_job(
    raw: object, key: str, worker: WorkerConfig, issues: _Issues, import_funcs: bool
) -> JobConfig | None:
    label = _job_label(raw)
    values, ok = _parse_table(raw, _JOB, key, issues, label)
    ok = _check_job_rules(values, key, label, issues) and ok
    if values.get("timezone") is None:
        values["timezone"] = worker.timezone
    if import_funcs and "func" in values:
        try:
            fn = _import_func(values["func"], worker.import_paths)
        except ValueError as exc:
            issues.add(f"{key}.func", f"{label}{exc}")
            return None
        values.update(fn=fn, is_async=_is_async(fn), accepts_ctx=_accepts_ctx(fn))
        if values["is_async"] and values.get("isolation") == "process":
            issues.add(
                f"{key}.isolation",
                f"{label}isolation = 'process' runs plain def functions only, but "
                f"{values['func']!r} is async; remove isolation (async jobs run on the event "
                "loop and can be cancelled) or make the function a plain def",
            )
            ok = False
    return JobConfig(**values) if ok else None


def _build_jobs(
    raw: object, worker: WorkerConfig, issues: _Issues, import_funcs: bool
) -> tuple[JobConfig, ...]:
    if raw is _UNRESOLVED:
        return ()
    if not isinstance(raw, list):
        issues.add("jobs", f"expected an array of tables ([[jobs]]), got {_describe(raw)}")
        return ()
    if import_funcs:
        _extend_sys_path(worker.import_paths)
    jobs: list[JobConfig] = []
    first_index: dict[str, int] = {}
    for index, item in enumerate(raw):
        name = item.get("name") if isinstance(item, dict) else None
        if isinstance(name, str) and name in first_index:
            issues.add(
                f"jobs[{index}].name",
                f"duplicate job name {name!r}: jobs[{first_index[name]}] and jobs[{index}] "
                "both use it; allowed: each name once",
            )
        elif isinstance(name, str):
            first_index[name] = index
        job = _build_job(item, f"jobs[{index}]", worker, issues, import_funcs)
        if job is not None:
            jobs.append(job)
    return tuple(jobs)


# --------------------------------------------------------------------------- loading

_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-((?:[^}$]|\$(?!\{))*))?\}|\$\{")


class _Unresolved:
    """Stands for a string whose ``${...}`` could not be expanded (already reported): the
    setting holding it is skipped by validation instead of being reported a second time."""


_UNRESOLVED = _Unresolved()


def _expand(text: str, key: str, environ: Mapping[str, str], issues: _Issues) -> object:
    unset: list[str] = []
    malformed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        whole, name, has_default, default = match[0], match[1], match[2], match[3]
        if whole == "$${":
            return "${"
        if name is None:
            malformed.append(whole)
            return whole
        value = environ.get(name)
        if has_default is not None and not value:
            return str(default)
        if value is None:
            unset.append(name)
            return ""
        return value

    result = _VARIABLE.sub(replace, text)
    if malformed:
        issues.add(key, "malformed '${': allowed ${VAR}, ${VAR:-default}, or $${ for '${'")
    elif unset:
        names = ", ".join(dict.fromkeys(unset))
        issues.add(
            key,
            f"environment variable not set: {names}; set it or give a default: "
            f"${{{unset[0]}:-default}}",
        )
    return _UNRESOLVED if malformed or unset else result


def _has_unresolved(value: object) -> bool:
    if isinstance(value, dict):
        return any(_has_unresolved(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_unresolved(v) for v in value)
    return value is _UNRESOLVED


def _interpolate(value: object, key: str, environ: Mapping[str, str], issues: _Issues) -> Any:
    """Expand ``${VAR}`` in every string inside ``value`` (recursively)."""
    if isinstance(value, str):
        return _expand(value, key, environ, issues)
    if isinstance(value, dict):
        return {k: _interpolate(v, _join(key, k), environ, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, f"{key}[{i}]", environ, issues) for i, v in enumerate(value)]
    return value


def _read_toml(path: Path, file: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_bytes().decode("utf-8-sig"))
    except OSError as exc:
        message = (
            f"cannot read the configuration file: {exc.strerror or exc}; "
            f"give its path with -c/--config or ${ENV_CONFIG}"
        )
    except UnicodeDecodeError as exc:
        message = f"the file is not UTF-8 text: {exc}"
    except tomllib.TOMLDecodeError as exc:
        message = f"invalid TOML: {exc}"
    raise ConfigError([ConfigIssue(file=file, key="", message=message)])


def _without_overridden(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """Drop ``[database] url`` when the environment overrides it (so it is not expanded)."""
    database = doc.get("database")
    if environ.get(ENV_DATABASE_URL) and isinstance(database, dict):
        return {**doc, "database": {k: v for k, v in database.items() if k != "url"}}
    return doc


def load_config(
    path: str | Path, *, environ: Mapping[str, str] | None = None, import_funcs: bool = True
) -> Config:
    """Read, expand and validate a configuration file; raise ConfigError with every issue."""
    env = os.environ if environ is None else environ
    issues = _Issues(str(path))
    absolute = Path(path).absolute()
    doc = _read_toml(absolute, issues.file)
    doc = _interpolate(_without_overridden(doc, env), "", env, issues)
    _check_keys(doc, _TOP, "", issues)
    database = _build_database(doc.get("database", {}), env, issues)
    worker, worker_ok = _build_worker(doc.get("worker", {}), absolute.parent, issues)
    logging = _section(doc.get("logging", {}), _LOGGING, "logging", issues, LoggingConfig)
    http = _build_http(doc["http"], issues) if "http" in doc else None
    history = _section(doc.get("history", {}), _HISTORY, "history", issues, HistoryConfig)
    jobs = _build_jobs(doc.get("jobs", []), worker, issues, import_funcs)
    if issues or not worker_ok or database is None or logging is None or history is None:
        raise ConfigError(issues.items)
    return Config(
        path=absolute,
        database=database,
        worker=worker,
        logging=logging,
        http=http,
        history=history,
        jobs=jobs,
    )


def resolve_config_path(
    option: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The ``-c`` value, else ``$JOBRUNNER_CONFIG``, else ``./jobrunner.toml``."""
    env = os.environ if environ is None else environ
    if option:
        return Path(option)
    return Path(env.get(ENV_CONFIG) or DEFAULT_CONFIG_FILE)
