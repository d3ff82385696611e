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

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar
from zoneinfo import ZoneInfo

from jobrunner import converters as conv
from jobrunner.errors import ConfigError, ConfigIssue
from jobrunner.interpolate import interpolate
from jobrunner.jobconfig import JobConfig, build_jobs, short_hash
from jobrunner.notify import NotifyTarget, build_targets
from jobrunner.settings import (
    Issues,
    check_keys,
    definition_of,
    parse_table,
    setting,
    toml_key,
)
from jobrunner.units import (
    format_duration,
    mask_url,
    normalize_database_url,
    parse_duration,
    parse_size,
)

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
DEFAULT_WEB_LISTEN = "127.0.0.1:9109"
DEFAULT_MAX_RESULT_SIZE = 64 * 1024  # bytes of a run's result (its JSON) that are kept
UTC = ZoneInfo("UTC")

T = TypeVar("T")


# --------------------------------------------------------------------------- models
# Every TOML key is one field declared with its default and converter (``setting``), or,
# without a default, ``field(metadata=toml_key(converter, hint=...))``. The order of the
# fields is the order of the allowed keys in messages and of the issues reported. Fields
# without a converter are not keys. A key added to WorkerConfig or JobConfig enters
# ``definition()``, and so changes the hashes that workers compare during a rolling deploy.


@dataclass(frozen=True, kw_only=True, repr=False)
class DatabaseConfig:
    """``[database]``. ``listen_url`` (the direct connection for LISTEN) defaults to ``url``;
    ``jobrunner run`` waits up to ``startup_timeout`` for the database at start (0: no wait)."""

    url: str = setting(DEFAULT_DATABASE_URL, conv.as_str)
    listen_url: str = setting("", conv.as_str)
    startup_timeout: timedelta = setting(timedelta(seconds=60), conv.duration())

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

    concurrency: int = setting(16, conv.integer(1, 10_000))
    threads: int = setting(8, conv.integer(1, 1_000))
    lease_ttl: timedelta = setting(timedelta(seconds=30), conv.duration(timedelta(seconds=1)))
    heartbeat: timedelta = setting(timedelta(seconds=10), conv.duration(exclusive=True))
    shutdown_grace: timedelta = setting(timedelta(seconds=30), conv.duration())
    timezone: ZoneInfo = setting(UTC, conv.zone)
    # relative to the file's directory in the TOML (strings), resolved by the loader
    import_paths: tuple[Path, ...] = setting((Path("."),), conv.path_list)
    poll_interval: timedelta = setting(timedelta(seconds=1), conv.duration(exclusive=True))
    max_clock_skew: timedelta = setting(timedelta(seconds=5), conv.duration())
    processes: int = setting(2, conv.integer(1, 64))
    queues: tuple[str, ...] | None = setting(None, conv.queue_list)  # None: every queue
    # bytes of a job's return value (as JSON) stored on its run; a larger one is not kept
    max_result_size: int = setting(DEFAULT_MAX_RESULT_SIZE, conv.result_size)

    def definition(self) -> dict[str, Any]:
        """JSON-able settings, without ``import_paths`` (they depend on where the file is)
        and without ``queues`` when it is not set (the hash stays what it was)."""
        unset = {"import_paths"} | ({"queues"} if self.queues is None else set())
        if self.max_result_size == DEFAULT_MAX_RESULT_SIZE:
            unset.add("max_result_size")
        return definition_of(self, leave_out=unset)

    def serves(self, queue: str) -> bool:
        """Whether this worker runs the jobs of `queue`."""
        return self.queues is None or queue in self.queues

    @property
    def renew_deadline(self) -> float:
        """Seconds after a renewal was sent that its leases are surely valid (by the database's
        clock): ``lease_ttl`` less :func:`renew_margin`. Past them a run is stopped."""
        ttl = self.lease_ttl.total_seconds()
        return ttl - renew_margin(ttl)


def renew_margin(lease_ttl: float) -> float:
    """The safety margin of the renew deadline, in seconds: 0.5 s for stopping a run
    (cancelling a task or killing a child takes milliseconds; the watchdog may wake late on
    a busy event loop) or 5% of ``lease_ttl`` for a clock that runs faster than the
    database's, whichever is larger."""
    return max(0.5, lease_ttl / 20)


@dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    """``[logging]``."""

    format: Literal["auto", "json", "console"] = setting(
        "auto", conv.choice("auto", "json", "console")
    )
    level: Literal["debug", "info", "warning", "error"] = setting(
        "info", conv.choice("debug", "info", "warning", "error")
    )


@dataclass(frozen=True, kw_only=True)
class HttpConfig:
    """``[http]``: ``listen = "HOST:PORT"``, split into ``host`` and ``port``."""

    listen: str = setting(DEFAULT_HTTP_LISTEN, conv.listen)
    host: str
    port: int


@dataclass(frozen=True, kw_only=True)
class WebConfig:
    """``[web]``: the dashboard as ``jobrunner web`` serves it alone. ``token`` (give it from
    the environment: ``token = "${JOBRUNNER_WEB_TOKEN}"``) is asked of every request, as a
    bearer header or through the login form; without one the dashboard is read-only and
    listens on loopback only."""

    listen: str = setting(DEFAULT_WEB_LISTEN, conv.listen)
    token: str | None = field(
        default=None, repr=False, metadata=toml_key(conv.web_token, hint=conv.TOKEN_ALLOWED)
    )
    host: str = "127.0.0.1"
    port: int = 9109


@dataclass(frozen=True, kw_only=True)
class HistoryConfig:
    """``[history]``: pruning of finished runs. ``retention=None`` keeps them forever."""

    retention: timedelta | None = setting(
        timedelta(days=30), conv.optional(conv.duration(exclusive=True))
    )
    keep_last: int = setting(0, conv.integer(0))
    prune_interval: timedelta = setting(timedelta(hours=1), conv.duration(exclusive=True))


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
    web: WebConfig = field(default_factory=WebConfig)
    notify: tuple[NotifyTarget, ...] = ()  # [[notify]] targets

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
        return short_hash({"worker": self.worker.definition(), "jobs": jobs})


# --------------------------------------------------------------------------- sections

_TOP = ("database", "worker", "logging", "http", "history", "jobs", "web", "notify")


def _section(raw: object, cls: type[T], prefix: str, issues: Issues) -> T | None:
    values, ok = parse_table(raw, cls, prefix, issues)
    return cls(**values) if ok else None


def _build_database(
    raw: object, environ: Mapping[str, str], issues: Issues
) -> DatabaseConfig | None:
    values, ok = parse_table(raw, DatabaseConfig, "database", issues)
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


def _build_worker(raw: object, base: Path, issues: Issues) -> tuple[WorkerConfig, bool]:
    """The worker settings and whether they are all valid. When they are not, the settings
    returned have defaults in place of the bad values, so that jobs can still be checked."""
    values, ok = parse_table(raw, WorkerConfig, "worker", issues)
    paths = ((base / Path(p).expanduser()).resolve() for p in values.get("import_paths", ["."]))
    values["import_paths"] = tuple(dict.fromkeys(paths))
    heartbeat, lease_ttl = values.get("heartbeat"), values.get("lease_ttl")
    if heartbeat is not None and lease_ttl is not None:
        ttl = lease_ttl.total_seconds()
        most = timedelta(seconds=(ttl - renew_margin(ttl)) / 2)
        if heartbeat > most:
            issues.add(
                "worker.heartbeat",
                f"worker.heartbeat ({format_duration(heartbeat)}) is too long for "
                f"worker.lease_ttl ({format_duration(lease_ttl)}): a run is stopped when its "
                f"lease was not renewed for lease_ttl less a margin of "
                f"{format_duration(timedelta(seconds=renew_margin(ttl)))}, which must hold "
                f"two heartbeats; allowed: at most {format_duration(most)}, or a longer "
                "lease_ttl",
            )
            ok = False
            del values["heartbeat"]
    return WorkerConfig(**values), ok


def _build_web(raw: object, issues: Issues) -> WebConfig | None:
    values, ok = parse_table(raw, WebConfig, "web", issues)
    if not ok:
        return None
    host, port = conv.split_listen(values.get("listen", DEFAULT_WEB_LISTEN))
    return WebConfig(**values, host=host, port=port)


def _build_http(raw: object, issues: Issues) -> HttpConfig | None:
    values, ok = parse_table(raw, HttpConfig, "http", issues)
    if not ok:
        return None
    host, port = conv.split_listen(values["listen"])
    return HttpConfig(listen=values["listen"], host=host, port=port)


# --------------------------------------------------------------------------- loading


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
    issues = Issues(str(path))
    absolute = Path(path).absolute()
    doc = _read_toml(absolute, issues.file)
    doc = interpolate(_without_overridden(doc, env), "", env, issues)
    check_keys(doc, _TOP, "", issues)
    database = _build_database(doc.get("database", {}), env, issues)
    worker, worker_ok = _build_worker(doc.get("worker", {}), absolute.parent, issues)
    logging = _section(doc.get("logging", {}), LoggingConfig, "logging", issues)
    http = _build_http(doc["http"], issues) if "http" in doc else None
    history = _section(doc.get("history", {}), HistoryConfig, "history", issues)
    web = _build_web(doc.get("web", {}), issues)
    notify = build_targets(doc.get("notify"), issues)
    paths = worker.import_paths if import_funcs else None
    jobs = build_jobs(doc.get("jobs", []), worker.timezone, paths, issues)
    if issues or not worker_ok or None in (database, logging, history, web):
        raise ConfigError(issues.items)
    assert database is not None and logging is not None and history is not None
    assert web is not None
    return Config(
        path=absolute,
        database=database,
        worker=worker,
        logging=logging,
        http=http,
        history=history,
        jobs=jobs,
        web=web,
        notify=notify,
    )


def resolve_config_path(
    option: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> Path:
    """The ``-c`` value, else ``$JOBRUNNER_CONFIG``, else ``./jobrunner.toml``."""
    env = os.environ if environ is None else environ
    if option:
        return Path(option)
    return Path(env.get(ENV_CONFIG) or DEFAULT_CONFIG_FILE)
