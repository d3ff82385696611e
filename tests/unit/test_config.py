"""Tests of jobrunner.config: loading, interpolation, validation (guarantee 8) and hashing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from jobrunner.config import (
    Config,
    DatabaseConfig,
    HistoryConfig,
    HttpConfig,
    JobConfig,
    LoggingConfig,
    WorkerConfig,
    format_duration,
    load_config,
    mask_url,
    normalize_database_url,
    parse_duration,
    renew_margin,
    resolve_config_path,
)
from jobrunner.errors import ConfigError, ConfigIssue
from jobrunner.schedule import Schedule

HERE = Path(__file__).resolve().parent
WriteFn = Callable[..., Path]
SYNC = 'func = "fixtures_jobs.mod:sync_job"'
ALLOWED_DURATIONS = "allowed: a number of seconds or a string like '30s', '10m', '1h30m'"

# DESIGN.md, "Configuration", verbatim except `func` (a fixture instead of jobs.reports:nightly).
DESIGN_EXAMPLE = """
[database]
url = "${JOBRUNNER_DATABASE_URL:-sqlite:///jobrunner.db}"

[worker]
concurrency = 16          # jobs running at once in this process
threads = 8               # thread pool for sync jobs
lease_ttl = "30s"
heartbeat = "10s"
shutdown_grace = "30s"
timezone = "UTC"          # default for jobs
import_paths = ["."]      # relative to this file; where `func` modules are found

[logging]
format = "auto"           # auto (console on a TTY, JSON otherwise) | json | console
level = "info"

[http]                    # optional: /healthz, /readyz, /metrics
listen = "127.0.0.1:9108"

[[jobs]]
name = "nightly-report"
func = "fixtures_jobs.mod:nightly"     # async def or plain def
cron = "0 3 * * *"                # omit for a job that is only enqueued or triggered
timezone = "Europe/Berlin"
timeout = "10m"
retries = 3
retry_backoff = "30s"             # exponential, capped, with jitter
overlap = "forbid"                # forbid | allow | replace
catch_up = "latest"               # skip | latest | all
misfire_grace = "5m"
jitter = "0s"
kwargs = { region = "eu" }
"""


@pytest.fixture(autouse=True)
def _fixture_jobs_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make tests/unit importable whatever pytest's import mode; sys.path (which
    load_config extends) is restored after each test."""
    monkeypatch.syspath_prepend(str(HERE))


@pytest.fixture
def write(tmp_path: Path) -> Iterator[WriteFn]:
    def write_file(text: str, name: str = "jobrunner.toml") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return path

    yield write_file


def load(path: Path, environ: dict[str, str] | None = None, **kwargs: bool) -> Config:
    return load_config(path, environ={} if environ is None else environ, **kwargs)


def issues_of(path: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """key path -> message of every issue (asserting there is one issue per key)."""
    with pytest.raises(ConfigError) as info:
        load(path, environ)
    found = {issue.key: issue.message for issue in info.value.issues}
    assert len(found) == len(info.value.issues), info.value.issues
    assert all(issue.file == str(path) for issue in info.value.issues)
    return found


def one_issue(path: Path, environ: dict[str, str] | None = None) -> tuple[str, str]:
    found = issues_of(path, environ)
    assert len(found) == 1, found
    return next(iter(found.items()))


def job_toml(*lines: str, name: str = "j") -> str:
    return "\n".join(["[[jobs]]", f'name = "{name}"', *lines]) + "\n"


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (30, timedelta(seconds=30)),
        (0, timedelta(0)),
        (1.5, timedelta(seconds=1.5)),
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("500ms", timedelta(milliseconds=500)),
        ("2d", timedelta(days=2)),
        ("1d2h3m4s5ms", timedelta(days=1, hours=2, minutes=3, seconds=4, milliseconds=5)),
        ("1.5h", timedelta(minutes=90)),
        ("0.25s", timedelta(milliseconds=250)),
        ("0s", timedelta(0)),
        ("45", timedelta(seconds=45)),
        ("2.5", timedelta(seconds=2.5)),
    ],
)
def test_parse_duration_accepts(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        "10 m",
        "1h 30m",
        " 30s",
        "30m1h",
        "1h1h",
        "5x",
        "h",
        "1.h",
        "-5s",
        "1,5s",
        "99999999999d",
        -1,
        math.nan,
        math.inf,
        True,
        None,
        [],
        {},
    ],
)
def test_parse_duration_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=ALLOWED_DURATIONS):
        parse_duration(value)


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(0), "0s"),
        (timedelta(seconds=30), "30s"),
        (timedelta(minutes=10), "10m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(milliseconds=500), "500ms"),
        (timedelta(days=2), "2d"),
        (timedelta(days=30), "30d"),
        (timedelta(days=1, seconds=1, milliseconds=5), "1d1s5ms"),
        (timedelta(seconds=1, microseconds=250), "1.00025s"),
        (timedelta(seconds=-90), "-1m30s"),
    ],
)
def test_format_duration(td: timedelta, text: str) -> None:
    assert format_duration(td) == text
    if td >= timedelta(0):
        assert parse_duration(text) == td


# --------------------------------------------------------------------------- URLs


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql+psycopg://u:secret@h/db", "postgresql+psycopg://u:***@h/db"),
        (
            "postgresql://u:secret@h:5432/db?sslmode=require",
            "postgresql://u:***@h:5432/db?sslmode=require",
        ),
        ("postgresql://u:p@ss/w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql://h:5432/db", "postgresql://h:5432/db"),
        (
            "postgresql://h/db?user=u&password=secret&x=1",
            "postgresql://h/db?user=u&password=***&x=1",
        ),
        ("host=h password=secret dbname=db", "host=h password=*** dbname=db"),
        ("sqlite:///jobrunner.db", "sqlite:///jobrunner.db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql://u:p@h:5432/db", "postgresql+psycopg://u:p@h:5432/db"),
        ("POSTGRESQL://h/db", "postgresql+psycopg://h/db"),
        ("postgresql+psycopg://h/db", "postgresql+psycopg://h/db"),
        ("sqlite:///relative.db", "sqlite:///relative.db"),
        ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
        ("sqlite://", "sqlite://"),
    ],
)
def test_normalize_database_url(url: str, normal: str) -> None:
    assert normalize_database_url(url) == normal


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:secret@h/db",
        "postgresql+asyncpg://u:secret@h/db",
        "sqlite://host/x.db",
        "sqlite:relative.db",
        "garbage",
        "",
    ],
)
def test_unsupported_database_url(write: WriteFn, url: str) -> None:
    key, message = one_issue(write(f'[database]\nurl = "{url}"\n'))
    assert key == "database.url"
    assert "unsupported database URL" in message
    assert "allowed postgresql://" in message and "sqlite:///path" in message
    assert "secret" not in message
    if "secret" in url:
        assert ":***@" in message


def test_database_defaults(write: WriteFn) -> None:
    config = load(write(""))
    assert config.database == DatabaseConfig(url="sqlite:///jobrunner.db")
    assert config.database.listen_url == "sqlite:///jobrunner.db"


def test_database_listen_url_is_normalised(write: WriteFn) -> None:
    path = write('[database]\nurl = "postgres://pgb/db"\nlisten_url = "postgres://direct/db"\n')
    database = load(path).database
    assert database.url == "postgresql+psycopg://pgb/db"
    assert database.listen_url == "postgresql+psycopg://direct/db"


def test_database_listen_url_defaults_to_url(write: WriteFn) -> None:
    database = load(write('[database]\nurl = "postgres://h/db"\n')).database
    assert database.listen_url == database.url == "postgresql+psycopg://h/db"


def test_env_overrides_database_url(write: WriteFn) -> None:
    path = write('[database]\nurl = "${UNSET_IN_TOML}"\n')
    environ = {"JOBRUNNER_DATABASE_URL": "postgres://u:pw@h/db"}
    assert load(path, environ).database.url == "postgresql+psycopg://u:pw@h/db"
    assert load(write(""), environ).database.url == "postgresql+psycopg://u:pw@h/db"


def test_empty_env_database_url_is_ignored(write: WriteFn) -> None:
    path = write('[database]\nurl = "postgres://h/db"\n')
    assert load(path, {"JOBRUNNER_DATABASE_URL": ""}).database.url == "postgresql+psycopg://h/db"


def test_bad_env_database_url_names_the_variable(write: WriteFn) -> None:
    key, message = one_issue(write(""), {"JOBRUNNER_DATABASE_URL": "mysql://u:secret@h/db"})
    assert key == "database.url"
    assert "$JOBRUNNER_DATABASE_URL" in message
    assert "secret" not in message


def test_os_environ_is_the_default(write: WriteFn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_DATABASE_URL", "postgresql://from-env/db")
    assert load_config(write("")).database.url == "postgresql+psycopg://from-env/db"


def test_repr_masks_passwords(write: WriteFn) -> None:
    config = load(write('[database]\nurl = "postgres://u:secret@h/db"\n'))
    assert "secret" not in repr(config)
    assert "u:***@h" in repr(config.database)


# --------------------------------------------------------------------------- interpolation


def test_interpolation(write: WriteFn) -> None:
    path = write(
        '[database]\nurl = "postgres://${DB_USER}:${DB_PASS:-nopass}@${DB_HOST:-localhost}/db"\n'
        '[worker]\nlease_ttl = "${TTL:-30s}"\ntimezone = "${TZ_NAME:-UTC}"\n'
        + job_toml(
            SYNC,
            'kwargs = { region = "${REGION}", '
            'nested = { list = ["${REGION}-1", "$${REGION}", "$$x"] }, n = 3 }',
        )
    )
    environ = {"DB_USER": "me", "DB_HOST": "", "TTL": "1m", "REGION": "eu"}
    config = load(path, environ)
    assert config.database.url == "postgresql+psycopg://me:nopass@localhost/db"
    assert config.worker.lease_ttl == timedelta(minutes=1)
    assert config.worker.timezone == ZoneInfo("UTC")
    assert config.jobs[0].kwargs == {
        "region": "eu",
        "nested": {"list": ["eu-1", "${REGION}", "$$x"]},
        "n": 3,
    }


def test_interpolated_values_are_not_expanded_again(write: WriteFn) -> None:
    path = write(job_toml(SYNC, 'kwargs = { a = "${A}" }'))
    assert load(path, {"A": "${B}"}).jobs[0].kwargs == {"a": "${B}"}


def test_unset_variable_names_key_and_variable(write: WriteFn) -> None:
    path = write(
        '[worker]\nimport_paths = [".", "${LIB_DIR}"]\n'
        + job_toml(SYNC, 'kwargs = { region = "${REGION}" }')
    )
    found = issues_of(path)
    assert set(found) == {"worker.import_paths[1]", "jobs[0].kwargs.region"}
    assert "environment variable not set: LIB_DIR" in found["worker.import_paths[1]"]
    assert "environment variable not set: REGION" in found["jobs[0].kwargs.region"]
    assert "${REGION:-default}" in found["jobs[0].kwargs.region"]


def test_unset_variables_are_reported_once_per_value(write: WriteFn) -> None:
    path = write('[database]\nurl = "postgres://${USER_X}:${PASS_X}@h/db"\n')
    key, message = one_issue(path)
    assert key == "database.url"
    assert "environment variable not set: USER_X, PASS_X" in message


@pytest.mark.parametrize("text", ["${", "${1BAD}", "${A:-${B}}", "${A B}"])
def test_malformed_interpolation(write: WriteFn, text: str) -> None:
    key, message = one_issue(write(job_toml(SYNC, f'kwargs = {{ a = "{text}" }}')))
    assert key == "jobs[0].kwargs.a"
    assert "malformed" in message and "$${" in message


# --------------------------------------------------------------------------- file errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load(path)
    (issue,) = info.value.issues
    assert issue.file == str(path) and issue.key == ""
    assert "cannot read the configuration file" in issue.message
    assert "No such file" in issue.message
    assert str(path) in str(info.value)


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load(tmp_path)


def test_invalid_toml_keeps_line_and_column(write: WriteFn) -> None:
    key, message = one_issue(write("[worker]\nconcurrency = 4\nthreads = = 2\n"))
    assert key == ""
    assert message.startswith("invalid TOML")
    assert "line 3, column" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('[logging]\nlevel = "d\xe9bug"\n'.encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load(path)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "bom.toml"
    path.write_bytes(b'\xef\xbb\xbf[logging]\nlevel = "debug"\n')
    assert load(path).logging.level == "debug"


def test_config_error_is_a_value_error(write: WriteFn) -> None:
    with pytest.raises(ValueError, match=r"jobrunner\.toml: worker\.threads: expected an integer"):
        load(write('[worker]\nthreads = "8"\n'))


# --------------------------------------------------------------------------- all errors at once


def test_all_errors_are_collected(write: WriteFn) -> None:
    path = write(
        '[worker]\nconcurency = 4\nlease_ttl = "thirty seconds"\n'
        + job_toml(SYNC, 'cron = "61 * * * *"', 'timezone = "Mars/Olympus"', name="a")
        + job_toml('func = "fixtures_jobs.mod:sync_jbo"', name="b")
    )
    found = issues_of(path)
    assert set(found) == {
        "worker.concurency",
        "worker.lease_ttl",
        "jobs[0].cron",
        "jobs[0].timezone",
        "jobs[1].func",
    }
    assert "did you mean 'concurrency'?" in found["worker.concurency"]
    assert ALLOWED_DURATIONS in found["worker.lease_ttl"]
    assert found["jobs[0].cron"].startswith("job 'a': ")
    assert "unknown time zone 'Mars/Olympus'" in found["jobs[0].timezone"]
    assert "did you mean 'sync_job'?" in found["jobs[1].func"]


def test_a_bad_worker_section_does_not_hide_job_errors(write: WriteFn) -> None:
    path = write('[worker]\ntimezone = "Nowhere"\n' + job_toml('func = "no_such_module_x:f"'))
    assert set(issues_of(path)) == {"worker.timezone", "jobs[0].func"}


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ("[[job]]\nname = 'x'\n", "job", "jobs"),
        ("[database]\nulr = 'sqlite://'\n", "database.ulr", "url"),
        ("[worker]\nconcurency = 4\n", "worker.concurency", "concurrency"),
        ("[logging]\nfromat = 'json'\n", "logging.fromat", "format"),
        ("[http]\nlisten = '127.0.0.1:1'\nlistn = 'x'\n", "http.listn", "listen"),
        ("[history]\nretension = '1d'\n", "history.retension", "retention"),
        (job_toml(SYNC, "crn = '* * * * *'"), "jobs[0].crn", "cron"),
        (job_toml(SYNC, "retry_backof = '1s'"), "jobs[0].retry_backof", "retry_backoff"),
    ],
)
def test_unknown_keys(write: WriteFn, text: str, key: str, suggestion: str) -> None:
    found_key, message = one_issue(write(text))
    assert found_key == key
    assert f"did you mean '{suggestion}'?" in message
    assert "allowed keys:" in message and suggestion in message.split("allowed keys:")[1]


def test_unknown_key_without_close_match_lists_allowed(write: WriteFn) -> None:
    key, message = one_issue(write("[worker]\nzzz = 1\n"))
    assert key == "worker.zzz"
    assert "did you mean" not in message
    assert "allowed keys: concurrency, threads, lease_ttl" in message


def test_unknown_key_in_job_names_the_job(write: WriteFn) -> None:
    key, message = one_issue(write(job_toml(SYNC, "crn = '* * * * *'", name="nightly")))
    assert key == "jobs[0].crn"
    assert message.startswith("job 'nightly': unknown key 'crn'")


# --------------------------------------------------------------------------- types and ranges


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        (
            "[worker]\nconcurrency = 'x'\n",
            "worker.concurrency",
            "expected an integer, got string 'x'",
        ),
        (
            "[worker]\nconcurrency = true\n",
            "worker.concurrency",
            "expected an integer, got boolean true",
        ),
        ("[worker]\nthreads = 1.5\n", "worker.threads", "expected an integer, got float 1.5"),
        ("[worker]\ntimezone = 5\n", "worker.timezone", "expected a string, got integer 5"),
        (
            "[worker]\nimport_paths = '.'\n",
            "worker.import_paths",
            "expected an array of directory paths",
        ),
        ("[worker]\nlease_ttl = [1]\n", "worker.lease_ttl", "expected a duration, got array"),
        ("worker = 5\n", "worker", "expected a table, got integer 5"),
        ("[jobs]\nname = 'x'\n", "jobs", "expected an array of tables ([[jobs]]), got table"),
        ("jobs = [1]\n", "jobs[0]", "expected a table, got integer 1"),
        ("[database]\nurl = 5\n", "database.url", "expected a string, got integer 5"),
        (job_toml(SYNC, "kwargs = 'x'"), "jobs[0].kwargs", "expected a table"),
        (job_toml(SYNC, "cron = 5"), "jobs[0].cron", "expected a string, got integer 5"),
        ("[[jobs]]\nname = 5\n" + SYNC, "jobs[0].name", "expected a string, got integer 5"),
    ],
)
def test_wrong_types(write: WriteFn, text: str, key: str, expected: str) -> None:
    found_key, message = one_issue(write(text))
    assert found_key == key
    assert expected in message


@pytest.mark.parametrize(
    ("section", "setting", "expected"),
    [
        ("worker", "concurrency = 0", "must be between 1 and 10000, got 0"),
        ("worker", "concurrency = 10001", "must be between 1 and 10000, got 10001"),
        ("worker", "threads = 0", "must be between 1 and 1000"),
        ("worker", "threads = 1001", "must be between 1 and 1000"),
        ("worker", "lease_ttl = '500ms'", "must be at least 1s, got 500ms"),
        ("worker", "heartbeat = 0", "must be greater than 0s, got 0s"),
        ("worker", "poll_interval = '0s'", "must be greater than 0s"),
        ("worker", "shutdown_grace = -1", ALLOWED_DURATIONS),
        ("history", "keep_last = -1", "must be at least 0, got -1"),
        ("history", "retention = '0s'", "must be greater than 0s"),
        ("history", "prune_interval = 0", "must be greater than 0s"),
        ("jobs", "retries = -1", "must be between 0 and 1000"),
        ("jobs", "retries = 1001", "must be between 0 and 1000"),
        ("jobs", "max_catch_up = 0", "must be between 1 and 100000"),
        ("jobs", "max_catch_up = 100001", "must be between 1 and 100000"),
        ("jobs", "timeout = '0s'", "must be greater than 0s"),
        ("jobs", "jitter = '-1s'", ALLOWED_DURATIONS),
        ("jobs", "overlap = 'allow'\nmax_concurrency = 0", "must be at least 1, got 0"),
    ],
)
def test_out_of_range(write: WriteFn, section: str, setting: str, expected: str) -> None:
    text = job_toml(SYNC, setting) if section == "jobs" else f"[{section}]\n{setting}\n"
    key, message = one_issue(write(text))
    assert key.endswith(setting.split("\n")[-1].split(" =")[0])
    assert expected in message


@pytest.mark.parametrize("setting", ["concurrency = 1", "concurrency = 10000", "threads = 1000"])
def test_range_bounds_are_inclusive(write: WriteFn, setting: str) -> None:
    load(write(f"[worker]\n{setting}\n"))


@pytest.mark.parametrize(
    ("text", "key", "allowed"),
    [
        ("[logging]\nformat = 'xml'\n", "logging.format", "'auto', 'json', 'console'"),
        ("[logging]\nlevel = 'INFO'\n", "logging.level", "'debug', 'info', 'warning', 'error'"),
        (job_toml(SYNC, "overlap = 'queue'"), "jobs[0].overlap", "'forbid', 'allow', 'replace'"),
        (job_toml(SYNC, "catch_up = 'none'"), "jobs[0].catch_up", "'skip', 'latest', 'all'"),
    ],
)
def test_bad_enum_values(write: WriteFn, text: str, key: str, allowed: str) -> None:
    found_key, message = one_issue(write(text))
    assert found_key == key
    assert f"expected one of {allowed}" in message


# --------------------------------------------------------------------------- worker


def test_worker_defaults(write: WriteFn, tmp_path: Path) -> None:
    worker = load(write("")).worker
    assert worker == WorkerConfig(import_paths=(tmp_path.resolve(),))
    assert worker.concurrency == 16 and worker.threads == 8
    assert worker.lease_ttl == timedelta(seconds=30)
    assert worker.heartbeat == timedelta(seconds=10)
    assert worker.shutdown_grace == timedelta(seconds=30)
    assert worker.timezone == ZoneInfo("UTC")
    assert worker.poll_interval == timedelta(seconds=1)
    assert worker.max_clock_skew == timedelta(seconds=5)


def test_two_heartbeats_must_fit_in_the_renew_deadline(write: WriteFn) -> None:
    # lease_ttl 30s: margin 1.5s (5%), renew deadline 28.5s, so at most 14.25s per heartbeat
    key, message = one_issue(write('[worker]\nlease_ttl = "30s"\nheartbeat = "14.5s"\n'))
    assert key == "worker.heartbeat"
    assert "worker.heartbeat (14s500ms)" in message and "worker.lease_ttl (30s)" in message
    assert "margin of 1s500ms" in message and "at most 14s250ms" in message
    load(write('[worker]\nlease_ttl = "30s"\nheartbeat = "14.25s"\n'))
    # short leases: the margin is at least 0.5s (4s - 0.5s = 3.5s: 1.75s per heartbeat)
    key, message = one_issue(write('[worker]\nlease_ttl = "4s"\nheartbeat = "1.8s"\n'))
    assert "at most 1s750ms" in message
    assert (
        load(write('[worker]\nlease_ttl = "4s"\nheartbeat = "1s"\n')).worker.renew_deadline == 3.5
    )


def test_the_renew_deadline_is_the_lease_less_its_margin() -> None:
    assert renew_margin(4.0) == 0.5 and renew_margin(30.0) == 1.5 and renew_margin(600.0) == 30
    assert WorkerConfig().renew_deadline == 28.5


def test_default_heartbeat_is_checked_against_a_short_lease(write: WriteFn) -> None:
    key, _ = one_issue(write('[worker]\nlease_ttl = "5s"\n'))
    assert key == "worker.heartbeat"


def test_unknown_time_zone_suggests(write: WriteFn) -> None:
    key, message = one_issue(write('[worker]\ntimezone = "Europe/Berln"\n'))
    assert key == "worker.timezone"
    assert "unknown time zone 'Europe/Berln'" in message
    assert "did you mean 'Europe/Berlin'?" in message


@pytest.mark.parametrize("zone", ["", "Europe", "/etc/localtime", "../UTC"])
def test_malformed_time_zones(write: WriteFn, zone: str) -> None:
    key, message = one_issue(write(f'[worker]\ntimezone = "{zone}"\n'))
    assert key == "worker.timezone"
    assert "unknown time zone" in message


# --------------------------------------------------------------------------- import paths


@pytest.fixture
def module_name() -> Iterator[str]:
    name = f"cfgtest_{uuid.uuid4().hex}"
    yield name
    sys.modules.pop(name, None)


def test_import_paths_are_relative_to_the_config_file(
    tmp_path: Path, module_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "lib").mkdir(parents=True)
    (conf / "lib" / f"{module_name}.py").write_text("def run(ctx):\n    return 1\n")
    (tmp_path / "elsewhere").mkdir()
    (conf / "jobrunner.toml").write_text(
        '[worker]\nimport_paths = ["lib", "."]\n' + job_toml(f'func = "{module_name}:run"')
    )
    monkeypatch.chdir(tmp_path / "elsewhere")
    config = load(Path("../conf/jobrunner.toml"))
    lib = (conf / "lib").resolve()
    assert config.path == (tmp_path / "elsewhere" / "../conf/jobrunner.toml").absolute()
    assert config.worker.import_paths == (lib, conf.resolve())
    assert sys.path[:2] == [str(lib), str(conf.resolve())]
    assert config.jobs[0].fn is sys.modules[module_name].run
    assert config.jobs[0].accepts_ctx


def test_import_paths_are_added_once(write: WriteFn, tmp_path: Path) -> None:
    path = write(job_toml(SYNC))
    load(path)
    load(path)
    assert sys.path.count(str(tmp_path.resolve())) == 1


def test_import_paths_untouched_without_import(write: WriteFn, tmp_path: Path) -> None:
    load(write(job_toml(SYNC)), import_funcs=False)
    assert str(tmp_path.resolve()) not in sys.path


def test_module_missing_lists_the_import_paths(write: WriteFn, tmp_path: Path) -> None:
    key, message = one_issue(write(job_toml('func = "no_such_module_x:run"')))
    assert key == "jobs[0].func"
    assert "ModuleNotFoundError: No module named 'no_such_module_x'" in message
    assert str(tmp_path.resolve()) in message


def test_syntax_error_in_module(write: WriteFn, tmp_path: Path, module_name: str) -> None:
    (tmp_path / f"{module_name}.py").write_text("def broken(:\n")
    key, message = one_issue(write(job_toml(f'func = "{module_name}:broken"')))
    assert key == "jobs[0].func"
    assert "SyntaxError" in message and "\n" not in message


# --------------------------------------------------------------------------- jobs


def test_job_defaults(write: WriteFn) -> None:
    job = load(write(job_toml(SYNC))).jobs[0]
    assert (job.name, job.func, job.cron, job.schedule) == (
        "j",
        "fixtures_jobs.mod:sync_job",
        None,
        None,
    )
    assert job.timezone == ZoneInfo("UTC")
    assert job.timeout is None
    assert (job.retries, job.overlap, job.max_concurrency) == (0, "allow", None)  # a queue
    assert job.retry_backoff == timedelta(seconds=30)
    assert job.retry_backoff_max == timedelta(hours=1)
    assert (job.catch_up, job.max_catch_up) == ("latest", 100)
    assert job.misfire_grace == timedelta(minutes=1)
    assert job.jitter == timedelta(0)
    assert job.kwargs == {}


def test_job_time_zone_defaults_to_worker_zone(write: WriteFn) -> None:
    path = write(
        '[worker]\ntimezone = "America/New_York"\n'
        + job_toml(SYNC, name="a")
        + job_toml(SYNC, 'timezone = "Asia/Tokyo"', name="b")
    )
    config = load(path)
    assert config.job("a").timezone == ZoneInfo("America/New_York")
    assert config.job("b").timezone == ZoneInfo("Asia/Tokyo")


def test_schedule_property(write: WriteFn) -> None:
    job = load(write(job_toml(SYNC, 'cron = "*/10 * * * * *"', 'timezone = "Europe/Berlin"'))).jobs[
        0
    ]
    assert job.schedule == Schedule("*/10 * * * * *", ZoneInfo("Europe/Berlin"))


@pytest.mark.parametrize("cron", ["0 3 * *", "61 * * * *", "@reboot", "", "* * * * * * 2030"])
def test_bad_cron(write: WriteFn, cron: str) -> None:
    key, message = one_issue(write(job_toml(SYNC, f'cron = "{cron}"', name="nightly-report")))
    assert key == "jobs[0].cron"
    assert message.startswith("job 'nightly-report': ")
    assert "expected 5 fields" in message


@pytest.mark.parametrize("name", ["ok", "a.b:c-d_e", "9lives", "x" * 200])
def test_good_job_names(write: WriteFn, name: str) -> None:
    assert load(write(job_toml(SYNC, name=name))).jobs[0].name == name


@pytest.mark.parametrize("name", ["", "-x", "_x", "a b", "a/b", "é", "x" * 201])
def test_bad_job_names(write: WriteFn, name: str) -> None:
    key, message = one_issue(write(job_toml(SYNC, name=name)))
    assert key == "jobs[0].name"
    assert "allowed letters, digits and '_.:-'" in message


def test_missing_name_and_func(write: WriteFn) -> None:
    found = issues_of(write("[[jobs]]\ncron = '* * * * *'\n"))
    assert set(found) == {"jobs[0].name", "jobs[0].func"}
    assert found["jobs[0].func"].startswith("missing; allowed: 'package.module:function'")


def test_duplicate_names_name_both_indices(write: WriteFn) -> None:
    path = write(job_toml(SYNC, name="a") + job_toml(SYNC, name="b") + job_toml(SYNC, name="a"))
    key, message = one_issue(path)
    assert key == "jobs[2].name"
    assert "duplicate job name 'a'" in message
    assert "jobs[0]" in message and "jobs[2]" in message


@pytest.mark.parametrize(
    "func",
    ["fixtures_jobs.mod.sync_job", "fixtures_jobs.mod:", ":sync_job", "a:b:c", "1mod:f", "m:f()"],
)
def test_func_must_be_module_colon_attr(write: WriteFn, func: str) -> None:
    key, message = one_issue(write(job_toml(f'func = "{func}"')))
    assert key == "jobs[0].func"
    assert "allowed 'package.module:function'" in message


def test_module_raising_on_import(write: WriteFn) -> None:
    key, message = one_issue(write(job_toml('func = "fixtures_jobs.broken:run"')))
    assert key == "jobs[0].func"
    assert "cannot import module 'fixtures_jobs.broken'" in message
    assert "RuntimeError: boom while importing" in message
    assert "Traceback" not in message


def test_missing_attribute_suggests(write: WriteFn) -> None:
    key, message = one_issue(write(job_toml('func = "fixtures_jobs.mod:sync_jbo"')))
    assert key == "jobs[0].func"
    assert "'fixtures_jobs.mod' has no attribute 'sync_jbo'; did you mean 'sync_job'?" in message


def test_missing_nested_attribute(write: WriteFn) -> None:
    _, message = one_issue(write(job_toml('func = "fixtures_jobs.mod:Tasks.nope"')))
    assert "'fixtures_jobs.mod.Tasks' has no attribute 'nope'" in message


def test_not_callable(write: WriteFn) -> None:
    key, message = one_issue(write(job_toml('func = "fixtures_jobs.mod:NOT_CALLABLE"')))
    assert key == "jobs[0].func"
    assert "is int, not callable" in message


@pytest.mark.parametrize(
    ("attr", "is_async", "accepts_ctx"),
    [
        ("sync_job", False, False),
        ("async_job", True, False),
        ("ctx_job", False, True),
        ("async_ctx_job", True, True),
        ("partial_async", True, False),
        ("async_instance", True, False),
        ("AsyncCallable", False, False),
        ("Tasks.nested", False, False),
        ("Tasks.nested_async", True, False),
    ],
)
def test_callable_introspection(
    write: WriteFn, attr: str, is_async: bool, accepts_ctx: bool
) -> None:
    from fixtures_jobs import mod

    job = load(write(job_toml(f'func = "fixtures_jobs.mod:{attr}"'))).jobs[0]
    expected: object = mod
    for part in attr.split("."):
        expected = getattr(expected, part)
    assert job.fn is expected
    assert (job.is_async, job.accepts_ctx) == (is_async, accepts_ctx)


def test_fn_is_not_part_of_equality_or_repr(write: WriteFn) -> None:
    path = write(job_toml(SYNC))
    imported, plain = load(path).jobs[0], load(path, import_funcs=False).jobs[0]
    assert imported.fn is not None and plain.fn is None
    assert "fn=" not in repr(imported)
    assert (
        dataclasses.replace(imported, is_async=plain.is_async, accepts_ctx=plain.accepts_ctx)
        == plain
    )


def test_import_funcs_false_does_not_import(write: WriteFn) -> None:
    config = load(write(job_toml('func = "fixtures_jobs.broken:run"')), import_funcs=False)
    assert config.jobs[0].fn is None
    assert "fixtures_jobs.broken" not in sys.modules


def test_max_concurrency_needs_overlap_allow(write: WriteFn) -> None:
    cron = 'cron = "* * * * *"'
    key, message = one_issue(write(job_toml(SYNC, cron, "max_concurrency = 2", name="n")))
    assert key == "jobs[0].max_concurrency"
    assert "overlap = 'allow'" in message and "'forbid'" in message
    job = load(write(job_toml(SYNC, cron, "overlap = 'allow'", "max_concurrency = 2"))).jobs[0]
    assert (job.overlap, job.max_concurrency) == ("allow", 2)
    job = load(write(job_toml(SYNC, "max_concurrency = 2"))).jobs[0]  # no cron: allow
    assert (job.overlap, job.max_concurrency) == ("allow", 2)


def test_priority_is_an_integer_and_left_out_of_the_definition_at_0(write: WriteFn) -> None:
    plain = load(write(job_toml(SYNC))).jobs[0]
    assert plain.priority == 0 and "priority" not in plain.definition()  # hashes unchanged
    urgent = load(write(job_toml(SYNC, "priority = 7"))).jobs[0]
    assert urgent.definition()["priority"] == 7
    assert urgent.definition_hash != plain.definition_hash
    for bad, why in (("'high'", "expected an integer"), ("2000000", "between -1000000")):
        key, message = one_issue(write(job_toml(SYNC, f"priority = {bad}")))
        assert key == "jobs[0].priority" and why in message


@pytest.mark.parametrize(
    ("lines", "overlap"),
    [
        ((), "allow"),  # no cron: queue-style, its runs run at once
        (('cron = "* * * * *"',), "forbid"),  # a cron job: a slot never overlaps its previous
        (("overlap = 'forbid'",), "forbid"),
        (('cron = "* * * * *"', "overlap = 'allow'"), "allow"),
        (('cron = "* * * * *"', "overlap = 'replace'"), "replace"),
    ],
)
def test_the_default_overlap_depends_on_cron(
    write: WriteFn, lines: tuple[str, ...], overlap: str
) -> None:
    assert load(write(job_toml(SYNC, *lines))).jobs[0].overlap == overlap


def test_retry_backoff_max_not_below_backoff(write: WriteFn) -> None:
    key, message = one_issue(
        write(job_toml(SYNC, "retry_backoff = '1m'", "retry_backoff_max = '30s'"))
    )
    assert key == "jobs[0].retry_backoff_max"
    assert "must be at least retry_backoff (1m), got 30s" in message


def test_false_switches_optional_durations_off(write: WriteFn) -> None:
    config = load(write("[history]\nretention = false\n" + job_toml(SYNC, "timeout = false")))
    assert config.history.retention is None
    assert config.jobs[0].timeout is None


def test_kwargs_are_read_only(write: WriteFn) -> None:
    job = load(write(job_toml(SYNC, 'kwargs = { region = "eu", tags = ["a"] }'))).jobs[0]
    assert job.kwargs == {"region": "eu", "tags": ["a"]}
    with pytest.raises(TypeError):
        job.kwargs["region"] = "us"  # type: ignore[index]


@pytest.mark.parametrize(
    "kwargs",
    ["{ when = 1979-05-27T07:32:00Z }", "{ day = 1979-05-27 }", "{ x = nan }", "{ x = [inf] }"],
)
def test_kwargs_must_be_json(write: WriteFn, kwargs: str) -> None:
    key, message = one_issue(write(job_toml(SYNC, f"kwargs = {kwargs}")))
    assert key == "jobs[0].kwargs"
    assert "must be JSON-serialisable" in message


def test_frozen_keyword_only_models(write: WriteFn) -> None:
    config = load(write(job_toml(SYNC)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.jobs[0].retries = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        JobConfig("j", "m:f")  # type: ignore[call-arg]


# --------------------------------------------------------------------------- http, logging, history


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:9108", "127.0.0.1", 9108),
        ("0.0.0.0:0", "0.0.0.0", 0),
        ("localhost:65535", "localhost", 65535),
        ("[::1]:9108", "::1", 9108),
    ],
)
def test_http_listen(write: WriteFn, listen: str, host: str, port: int) -> None:
    http = load(write(f'[http]\nlisten = "{listen}"\n')).http
    assert http is not None
    assert (http.listen, http.host, http.port) == (listen, host, port)


@pytest.mark.parametrize("listen", ["localhost", ":9108", "h:99999", "h:port", "::1:9108", "h: 80"])
def test_http_listen_must_be_host_port(write: WriteFn, listen: str) -> None:
    key, message = one_issue(write(f'[http]\nlisten = "{listen}"\n'))
    assert key == "http.listen"
    assert "expected 'HOST:PORT'" in message


def test_http_absent_or_default(write: WriteFn) -> None:
    assert load(write("")).http is None
    http = load(write("[http]\n")).http
    assert http is not None and (http.host, http.port) == ("127.0.0.1", 9108)


def test_logging_and_history_defaults(write: WriteFn) -> None:
    config = load(write(""))
    assert (config.logging.format, config.logging.level) == ("auto", "info")
    assert config.history.retention == timedelta(days=30)
    assert config.history.keep_last == 0
    assert config.history.prune_interval == timedelta(hours=1)
    assert config.jobs == ()


# --------------------------------------------------------------------------- definitions and hashes

FULL_JOB = job_toml(
    SYNC,
    'cron = "0 3 * * *"',
    'timezone = "Europe/Berlin"',
    'timeout = "10m"',
    "retries = 3",
    "overlap = 'allow'",
    "max_concurrency = 2",
    'kwargs = { region = "eu", n = [1, 2] }',
    name="full",
)


def test_definition(write: WriteFn) -> None:
    definition = load(write(FULL_JOB)).jobs[0].definition()
    assert definition == {
        "name": "full",
        "func": "fixtures_jobs.mod:sync_job",
        "cron": "0 3 * * *",
        "timezone": "Europe/Berlin",
        "timeout": 600.0,
        "retries": 3,
        "retry_backoff": 30.0,
        "retry_backoff_max": 3600.0,
        "overlap": "allow",
        "max_concurrency": 2,
        "catch_up": "latest",
        "misfire_grace": 60.0,
        "max_catch_up": 100,
        "jitter": 0.0,
        "kwargs": {"region": "eu", "n": [1, 2]},
    }
    json.dumps(definition)


def test_definition_hash_is_stable(write: WriteFn, tmp_path: Path) -> None:
    job = load(write(FULL_JOB)).jobs[0]
    canonical = json.dumps(job.definition(), sort_keys=True, separators=(",", ":"))
    assert job.definition_hash == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    reformatted = FULL_JOB.replace('"eu", n', '"eu",   n') + "# a comment\n"
    again = load(write(reformatted, "other.toml"), import_funcs=False).jobs[0]
    assert again.definition_hash == job.definition_hash


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('cron = "0 3 * * *"', 'cron = "0 4 * * *"'),
        ('timezone = "Europe/Berlin"', 'timezone = "Europe/Paris"'),
        ('timeout = "10m"', 'timeout = "11m"'),
        ("retries = 3", "retries = 4"),
        ("max_concurrency = 2", "max_concurrency = 3"),
        ('region = "eu"', 'region = "us"'),
        ('func = "fixtures_jobs.mod:sync_job"', 'func = "fixtures_jobs.mod:async_job"'),
        ('name = "full"', 'name = "full2"'),
    ],
)
def test_definition_hash_changes_with_a_setting(write: WriteFn, old: str, new: str) -> None:
    before = load(write(FULL_JOB)).jobs[0].definition_hash
    after = load(write(FULL_JOB.replace(old, new), "changed.toml")).jobs[0].definition_hash
    assert len(after) == 16 and after != before


def test_config_hash(write: WriteFn) -> None:
    two = job_toml(SYNC, name="a") + job_toml(SYNC, "retries = 1", name="b")
    base = load(write(two)).config_hash
    assert len(base) == 16
    assert load(write(two, "same.toml")).config_hash == base
    swapped = job_toml(SYNC, "retries = 1", name="b") + job_toml(SYNC, name="a")
    assert load(write(swapped, "swapped.toml")).config_hash == base
    assert load(write("[worker]\nconcurrency = 4\n" + two, "w.toml")).config_hash != base
    assert load(write(two.replace("retries = 1", "retries = 2"), "j.toml")).config_hash != base


CUSTOM_WORKER = """[worker]
concurrency = 4
processes = 3
lease_ttl = "1m"
heartbeat = "15s"
timezone = "Europe/Berlin"
poll_interval = "500ms"
max_clock_skew = "2s"
shutdown_grace = "1m30s"
"""


def test_hashes_are_pinned(write: WriteFn) -> None:
    """Workers of different versions compare these hashes during a rolling deploy: a change
    of a definition (a key added to it, a value written differently) must be deliberate."""
    full = load(write(FULL_JOB))
    assert full.jobs[0].definition_hash == "26d95b8e71e9def9"
    assert full.config_hash == "c858e2cb3abfe92f"
    isolated = FULL_JOB + "isolation = 'process'\nmax_memory = '1GiB'\n"
    assert load(write(isolated, "iso.toml")).jobs[0].definition_hash == "911088de94285a49"
    assert Config(path=Path("/x")).config_hash == "3f797002b1e8c117"  # default [worker]
    custom = load(write(CUSTOM_WORKER, "worker.toml"))
    assert custom.worker.definition() == {
        "concurrency": 4,
        "threads": 8,
        "processes": 3,
        "lease_ttl": 60.0,
        "heartbeat": 15.0,
        "shutdown_grace": 90.0,
        "timezone": "Europe/Berlin",
        "poll_interval": 0.5,
        "max_clock_skew": 2.0,
    }
    assert custom.config_hash == "b79d2f2c19e5c3ce"


# ------------------------------------------------------------------------ one declaration per key


@pytest.mark.parametrize(
    ("table", "prefix", "cls"),
    [
        ("[database]\n", "database", DatabaseConfig),
        ("[worker]\n", "worker", WorkerConfig),
        ("[logging]\n", "logging", LoggingConfig),
        ("[http]\n", "http", HttpConfig),
        ("[history]\n", "history", HistoryConfig),
        (job_toml(SYNC), "jobs[0]", JobConfig),
    ],
)
def test_a_key_is_declared_once_on_its_field(
    write: WriteFn, table: str, prefix: str, cls: type
) -> None:
    """The keys a table accepts, in the order the message lists them, are exactly the fields
    of its dataclass that carry a converter; each has a default or says what to write."""
    key, message = one_issue(write(table + "zzzz = 1\n"))
    assert key == f"{prefix}.zzzz"
    allowed = message.rpartition("allowed keys: ")[2].split(", ")
    declared = [f for f in dataclasses.fields(cls) if "convert" in f.metadata]
    assert allowed == [f.name for f in declared]
    for f in declared:
        default = f.default is not dataclasses.MISSING
        assert default or f.default_factory is not dataclasses.MISSING or f.metadata["hint"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (job_toml(SYNC, "fn = 'x'"), "jobs[0].fn"),
        (job_toml(SYNC, "is_async = true"), "jobs[0].is_async"),
        (job_toml(SYNC, "accepts_ctx = true"), "jobs[0].accepts_ctx"),
        ("[http]\nhost = 'localhost'\n", "http.host"),
        ("[http]\nport = 9108\n", "http.port"),
    ],
)
def test_fields_without_a_converter_are_not_keys(write: WriteFn, text: str, key: str) -> None:
    found, message = one_issue(write(text))
    assert found == key
    assert message.removeprefix("job 'j': ").startswith("unknown key")


# --------------------------------------------------------------------------- lookups and paths


def test_job_lookup(write: WriteFn) -> None:
    config = load(write(job_toml(SYNC, name="a")))
    assert config.job("a") is config.jobs[0]
    with pytest.raises(KeyError):
        config.job("b")


@pytest.mark.parametrize(
    ("option", "environ", "expected"),
    [
        ("custom.toml", {"JOBRUNNER_CONFIG": "/etc/jr.toml"}, Path("custom.toml")),
        (Path("/abs/c.toml"), {}, Path("/abs/c.toml")),
        (None, {"JOBRUNNER_CONFIG": "/etc/jr.toml"}, Path("/etc/jr.toml")),
        (None, {"JOBRUNNER_CONFIG": ""}, Path("jobrunner.toml")),
        (None, {}, Path("jobrunner.toml")),
        ("", {}, Path("jobrunner.toml")),
    ],
)
def test_resolve_config_path(
    option: str | Path | None, environ: dict[str, str], expected: Path
) -> None:
    assert resolve_config_path(option, environ) == expected


def test_resolve_config_path_reads_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBRUNNER_CONFIG", "/from/env.toml")
    assert resolve_config_path(None) == Path("/from/env.toml")


# --------------------------------------------------------------------------- DESIGN.md example


def test_design_example_loads(write: WriteFn, tmp_path: Path) -> None:
    config = load(write(DESIGN_EXAMPLE))
    assert config.database.url == "sqlite:///jobrunner.db"
    assert config.worker.import_paths == (tmp_path.resolve(),)
    assert config.http is not None and (config.http.host, config.http.port) == ("127.0.0.1", 9108)
    job = config.job("nightly-report")
    assert job.timezone == ZoneInfo("Europe/Berlin")
    assert job.timeout == timedelta(minutes=10)
    assert job.misfire_grace == timedelta(minutes=5)
    assert (job.retries, job.overlap, job.catch_up) == (3, "forbid", "latest")
    assert job.kwargs == {"region": "eu"}
    assert job.schedule == Schedule("0 3 * * *", ZoneInfo("Europe/Berlin"))
    assert job.fn is not None and not job.is_async and not job.accepts_ctx


def test_design_example_with_database_from_environment(write: WriteFn) -> None:
    environ = {"JOBRUNNER_DATABASE_URL": "postgres://u:pw@db/jobs"}
    config = load(write(DESIGN_EXAMPLE), environ)
    assert config.database.url == config.database.listen_url == "postgresql+psycopg://u:pw@db/jobs"


def test_issue_str_names_file_and_key(write: WriteFn) -> None:
    path = write('[worker]\nthreads = "8"\n')
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.issues == (
        ConfigIssue(
            file=str(path), key="worker.threads", message="expected an integer, got string '8'"
        ),
    )


# --------------------------------------------------------------------------- isolation

PROCESS = "isolation = 'process'"


def test_isolation_defaults(write: WriteFn) -> None:
    config = load(write(job_toml(SYNC)))
    assert (config.jobs[0].isolation, config.jobs[0].max_memory) == ("thread", None)
    assert config.worker.processes == 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (str(256 * 1024**2), 256 * 1024**2),
        ("'536870912'", 536_870_912),
        ("'512MB'", 512_000_000),
        ("'512 mb'", 512_000_000),
        ("'1GiB'", 1024**3),
        ("'1.5GB'", 1_500_000_000),
        ("'100MiB'", 100 * 1024**2),
        ("'2TB'", 2 * 1000**4),
    ],
)
def test_max_memory_sizes(write: WriteFn, value: str, expected: int) -> None:
    job = load(write(job_toml(SYNC, PROCESS, f"max_memory = {value}"))).jobs[0]
    assert (job.isolation, job.max_memory) == ("process", expected)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("'512XB'", "invalid size '512XB'; allowed: a number of bytes or a string like '512MB'"),
        ("'MB'", "invalid size 'MB'"),
        ("-5", "invalid size -5 (negative)"),
        ("1.5", "expected a size, got float 1.5"),
        ("true", "expected a size, got boolean true"),
        ("'1MB'", "must be at least 64MiB (67108864 bytes), got 1000000 bytes"),
    ],
)
def test_bad_max_memory(write: WriteFn, value: str, expected: str) -> None:
    key, message = one_issue(write(job_toml(SYNC, PROCESS, f"max_memory = {value}")))
    assert key == "jobs[0].max_memory"
    assert expected in message


def test_bad_isolation_value(write: WriteFn) -> None:
    key, message = one_issue(write(job_toml(SYNC, "isolation = 'fork'")))
    assert key == "jobs[0].isolation"
    assert "expected one of 'thread', 'process', got string 'fork'" in message


def test_max_memory_needs_process_isolation(write: WriteFn) -> None:
    key, message = one_issue(write(job_toml(SYNC, "max_memory = '1GiB'", name="n")))
    assert key == "jobs[0].max_memory"
    assert message.startswith("job 'n': max_memory only applies with isolation = 'process'")


def test_async_job_cannot_run_in_a_process(write: WriteFn) -> None:
    text = job_toml('func = "fixtures_jobs.mod:async_job"', PROCESS, name="a")
    key, message = one_issue(write(text))
    assert key == "jobs[0].isolation"
    assert message.startswith("job 'a': isolation = 'process' runs plain def functions only")
    assert "'fixtures_jobs.mod:async_job' is async" in message
    load(write(text, "unimported.toml"), import_funcs=False)  # unknown without importing


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("processes = 0", "must be between 1 and 64"), ("processes = 65", "must be between 1 and 64")],
)
def test_processes_range(write: WriteFn, setting: str, expected: str) -> None:
    key, message = one_issue(write(f"[worker]\n{setting}\n"))
    assert key == "worker.processes" and expected in message


def test_isolation_in_the_definition_only_when_used(write: WriteFn) -> None:
    plain = load(write(FULL_JOB)).jobs[0]
    assert "isolation" not in plain.definition()  # hashes of existing jobs do not change
    text = FULL_JOB + f"{PROCESS}\nmax_memory = '1GiB'\n"
    isolated = load(write(text, "iso.toml")).jobs[0]
    assert isolated.definition() == {
        **plain.definition(),
        "isolation": "process",
        "max_memory": 1024**3,
    }
    assert isolated.definition_hash != plain.definition_hash
    again = load(write(text.replace("1GiB", "2GiB"), "iso2.toml")).jobs[0]
    assert again.definition_hash != isolated.definition_hash
    workers = load(write("[worker]\nprocesses = 4\n", "w.toml")).worker
    assert workers.definition()["processes"] == 4


# --------------------------------------------------------------------------- queue keys


def test_queue_keys_load_and_enter_the_definition_only_when_set(write: WriteFn) -> None:
    plain = load(write(job_toml(SYNC))).jobs[0]
    assert (plain.queue, plain.concurrency_key, plain.max_per_key, plain.rate) == (
        "default",
        None,
        None,
        None,
    )
    assert not {"queue", "concurrency_key", "max_per_key", "rate_limit"} & set(plain.definition())
    lines = ("queue = 'heavy'", "concurrency_key = 'tenant'", "max_per_key = 3")
    job = load(write(job_toml(SYNC, *lines, "rate_limit = '100/1m'"))).jobs[0]
    assert (job.queue, job.concurrency_key, job.max_per_key) == ("heavy", "tenant", 3)
    assert job.rate == (100, 60.0) and job.definition()["rate_limit"] == "100/1m"
    assert job.key_of({"tenant": "t-7"}) == "t-7" and job.key_of({"tenant": 7}) == "7"
    assert job.key_of({}) is None


@pytest.mark.parametrize(
    ("lines", "key", "why"),
    [
        (("max_per_key = 2",), "jobs[0].max_per_key", "needs concurrency_key"),
        (("concurrency_key = 'tenant'",), "jobs[0].concurrency_key", "needs max_per_key or"),
        (
            ("concurrency_key = 'tenant'", "max_per_key = 2", "max_concurrency = 4"),
            "jobs[0].max_concurrency",
            "use max_per_key",
        ),
        (
            ('cron = "* * * * *"', "overlap = 'allow'", "concurrency_key = 't'", "max_per_key = 1"),
            "jobs[0].concurrency_key",
            "kwargs must hold its concurrency_key 't'",
        ),
        (
            ("concurrency_key = 't'", "max_per_key = 1", "overlap = 'forbid'"),
            "jobs[0].max_per_key",
            "only applies with overlap = 'allow'",
        ),
        (("concurrency_key = '1x'", "max_per_key = 1"), "jobs[0].concurrency_key", "identifier"),
        (("max_per_key = 0", "concurrency_key = 't'"), "jobs[0].max_per_key", "between 1"),
        (("rate_limit = '0/1m'",), "jobs[0].rate_limit", "N from 1 to 10,000"),
        (("rate_limit = 'fast'",), "jobs[0].rate_limit", "'N/DURATION'"),
        (("rate_limit = '5/1parsec'",), "jobs[0].rate_limit", "invalid duration"),
        (("queue = ''",), "jobs[0].queue", "letters, digits"),
    ],
)
def test_bad_queue_keys_are_named_with_what_is_allowed(
    write: WriteFn, lines: tuple[str, ...], key: str, why: str
) -> None:
    found_key, message = one_issue(write(job_toml(SYNC, *lines)))
    assert found_key == key and why in message, message


def test_worker_queues_default_to_every_queue(write: WriteFn) -> None:
    every = load(write(job_toml(SYNC))).worker
    assert every.queues is None and every.serves("anything")
    assert "queues" not in every.definition()
    some = load(write("[worker]\nqueues = ['heavy', 'default']\n")).worker
    assert some.queues == ("heavy", "default") and not some.serves("light")
    for bad, why in (
        ("[]", "non-empty array"),
        ("['a', 'a']", "each queue once"),
        ("'a'", "array"),
    ):
        key, message = one_issue(write(f"[worker]\nqueues = {bad}\n"))
        assert key == "worker.queues" and why in message, message


def test_unique_for_is_a_duration_left_out_of_the_definition_when_unset(write: WriteFn) -> None:
    plain = load(write(job_toml(SYNC))).jobs[0]
    assert plain.unique_for is None and "unique_for" not in plain.definition()
    job = load(write(job_toml(SYNC, "unique_for = '10m'"))).jobs[0]
    assert job.definition()["unique_for"] == 600.0
    key, message = one_issue(write(job_toml(SYNC, "unique_for = '0s'")))
    assert key == "jobs[0].unique_for" and "greater than" in message
