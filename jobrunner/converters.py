"""Converters of raw TOML values, for :func:`jobrunner.settings.setting`.

Each takes a raw value and returns the typed value, or raises ValueError with a message
saying what is wrong and what is allowed (reported under the key by the loader).
"""

from __future__ import annotations

import difflib
import json
import re
import zoneinfo
from collections.abc import Mapping
from datetime import timedelta
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from jobrunner.errors import ArgumentsTooLarge, InvalidArguments, JobNotFound
from jobrunner.schedule import validate_cron
from jobrunner.settings import Converter
from jobrunner.units import describe, format_duration, parse_duration, parse_size


def integer(low: int, high: int | None = None) -> Converter:
    def convert(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        if value < low or (high is not None and value > high):
            allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"must be {allowed}, got {value}")
        return value

    return convert


PRIORITY_RANGE = (-1_000_000, 1_000_000)  # a run's priority (higher first): job key and enqueue


def check_priority(priority: object) -> None:
    """Refuse a priority that is not an integer in `PRIORITY_RANGE` (InvalidArguments)."""
    low, high = PRIORITY_RANGE
    if priority is None:
        return
    if isinstance(priority, bool) or not isinstance(priority, int) or not low <= priority <= high:
        raise InvalidArguments(
            f"priority must be an integer from {low:,} to {high:,} (higher runs first), "
            f"got {priority!r}"
        )


_TRACEPARENT = re.compile(r"00-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")


def check_traceparent(value: object) -> None:
    """Refuse what is not a W3C `traceparent` of version 00 or None (InvalidArguments)."""
    if value is not None and not (isinstance(value, str) and _TRACEPARENT.fullmatch(value)):
        raise InvalidArguments(
            f"traceparent must be a W3C traceparent (00-<32 hex trace id>-<16 hex span id>-"
            f"<2 hex flags>, lowercase, ids not all zero) or None, got {value!r:.80}"
        )


TEXT_MAX = 200  # characters of a name, key or id the store keeps (its VARCHAR(200) columns)


def check_text(what: str, value: object, least: int = 1, most: int = TEXT_MAX) -> None:
    """Refuse what is neither None nor a string of `least` to `most` characters without a
    NUL character (PostgreSQL stores none): InvalidArguments naming `what`."""
    if value is not None and (
        not isinstance(value, str) or not least <= len(value) <= most or "\x00" in value
    ):
        raise InvalidArguments(
            f"{what} must be a string of {least} to {most} characters without NUL, "
            f"got {value!r:.80}"
        )


MAX_KWARGS_SIZE = 64 * 1024  # bytes of a run's or a schedule's kwargs as JSON
MAX_JSON_DEPTH = 64  # levels of arrays and objects in kwargs and results (JSON's serialisers stop)


def json_object(kwargs: Mapping[str, Any] | None, what: str = "kwargs") -> dict[str, Any]:
    """`kwargs` as a plain JSON object the store can keep, or InvalidArguments: not a
    mapping with string keys, not JSON-serialisable, a NUL character in a key or string
    (PostgreSQL's jsonb refuses it), or more than MAX_KWARGS_SIZE bytes as JSON
    (ArgumentsTooLarge)."""
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise InvalidArguments(f"{what} must be a JSON object (a mapping with string keys)")
    try:
        text = json.dumps(dict(kwargs), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidArguments(f"{what} are not JSON-serialisable: {exc}") from None
    if len(text) > MAX_KWARGS_SIZE:  # ASCII: json.dumps escapes every other character
        raise ArgumentsTooLarge(
            f"{what} are {len(text):,} bytes as JSON, over the limit of {MAX_KWARGS_SIZE:,} "
            f"(64 KiB): pass a reference to the data (an id, a URL) instead"
        )
    if nested_deeper(text, kwargs):
        raise InvalidArguments(f"{what} are nested more than {MAX_JSON_DEPTH} levels deep")
    if "\\u0000" in text and _holds_nul(kwargs):
        raise InvalidArguments(
            f"{what} hold a NUL character (\\u0000) in a key or string, which PostgreSQL "
            "cannot store: remove it"
        )
    decoded: dict[str, Any] = json.loads(text)
    return decoded


def nested_deeper(text: str, value: object, most: int = MAX_JSON_DEPTH) -> bool:
    """Whether `value` (whose JSON is `text`) nests arrays and objects deeper than `most`."""
    if text.count("[") + text.count("{") <= most:  # too few brackets: cheap, and the usual
        return False

    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:  # no recursion: the value may be nested deeper than Python recurses
        item, level = stack.pop()
        if isinstance(item, dict | list | tuple):
            if level == most:
                return True
            items = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in items)
    return False


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


def duration(minimum: timedelta = timedelta(0), *, exclusive: bool = False) -> Converter:
    def convert(value: object) -> timedelta:
        td = parse_duration(value)
        if td < minimum or (exclusive and td == minimum):
            allowed = "greater than" if exclusive else "at least"
            got = format_duration(td)
            raise ValueError(f"must be {allowed} {format_duration(minimum)}, got {got}")
        return td

    return convert


MIN_MEMORY = 64 * 1024**2


def memory(value: object) -> int:
    size = parse_size(value)
    if size < MIN_MEMORY:
        raise ValueError(
            f"must be at least 64MiB ({MIN_MEMORY} bytes), got {size} bytes: the limit "
            "covers the whole child process, the Python interpreter included"
        )
    return size


def optional(convert: Converter) -> Converter:
    """``false`` switches the setting off (None)."""

    def optional(value: object) -> Any:
        if value is False:
            return None
        try:
            return convert(value)
        except ValueError as exc:
            raise ValueError(f"{exc} (or false to switch it off)") from None

    return optional


def as_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {describe(value)}")
    return value


def string(pattern: str | None = None, allowed: str = "") -> Converter:
    def convert(value: object) -> str:
        value = as_str(value)
        if pattern is not None and not re.fullmatch(pattern, value):
            raise ValueError(f"invalid value {value!r}: allowed {allowed}")
        return value

    return convert


TOKEN_ALLOWED = (
    "a secret of at least 16 characters, best from the environment: "
    'token = "${JOBRUNNER_WEB_TOKEN}"'
)


def web_token(value: object) -> str | None:
    if value is None or value == "":
        return None
    text = as_str(value)
    if len(text) < 16 or text != text.strip():
        raise ValueError(f"too short or padded with spaces; allowed: {TOKEN_ALLOWED}")
    return text


def choice(*choices: str) -> Converter:
    def convert(value: object) -> str:
        if value not in choices:
            allowed = ", ".join(repr(c) for c in choices)
            raise ValueError(f"expected one of {allowed}, got {describe(value)}")
        return str(value)

    return convert


def zone(value: object) -> ZoneInfo:
    key = as_str(value)
    try:
        return ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a directory
        pass
    close = difflib.get_close_matches(key, zoneinfo.available_timezones(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ValueError(
        f"unknown time zone {key!r}: {hint}allowed: an IANA name like 'UTC', 'Europe/Berlin'"
    )


def cron(value: object) -> str:
    expr = as_str(value)
    validate_cron(expr)
    return expr


def json_table(value: object) -> Mapping[str, Any]:
    """A table of kwargs (the config's, a runtime schedule's), checked as `json_object`."""
    if not isinstance(value, dict):
        raise ValueError(f'expected a table like {{ region = "eu" }}, got {describe(value)}')
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"must be JSON-serialisable ({exc}); "
            "allowed: strings, finite numbers, booleans, arrays and tables"
        ) from None
    return MappingProxyType(json_object(value))


def path_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(p, str) and p for p in value):
        raise ValueError(
            f'expected an array of directory paths like [".", "src"], got {describe(value)}'
        )
    return tuple(value)


def split_listen(value: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(\d{1,5})", value)
    if match is None or int(match[2]) > 65535:
        raise ValueError(
            f"expected 'HOST:PORT' (port 0-65535) like '127.0.0.1:9108', '0.0.0.0:9108' "
            f"or '[::1]:9108', got {value!r}"
        )
    return match[1].strip("[]"), int(match[2])


def listen(value: object) -> str:
    text = as_str(value)
    split_listen(text)
    return text


NAME = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}"
NAME_ALLOWED = "letters, digits and '_.:-', starting with a letter or digit, up to 200 characters"
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
FUNC_ALLOWED = "'package.module:function' (the function may be dotted: 'pkg.mod:Class.method')"

job_name = string(NAME, NAME_ALLOWED)


def check_job_name(name: object) -> None:
    """JobNotFound for a name no job can have (not a job name of the config), before it
    reaches the database (a NUL character, say, which PostgreSQL refuses)."""
    if not isinstance(name, str) or not re.fullmatch(NAME, name):
        raise JobNotFound(f"no job named {name!r:.80} in the catalog")


func_spec = string(f"{_DOTTED}:{_DOTTED}", FUNC_ALLOWED)

queue_name = string(NAME, NAME_ALLOWED)
KWARG_ALLOWED = "the name of one of the job's keyword arguments (a Python identifier)"
kwarg_name = string(r"[A-Za-z_]\w{0,99}", KWARG_ALLOWED)
RATE_MAX = 10_000  # starts per window: the window's log of start times is one row


def rate_limit(value: object) -> str:
    """``"N/DURATION"``: at most N starts (1 to RATE_MAX) in any window of DURATION."""
    text = as_str(value)
    parse_rate(text)
    return text


def parse_rate(text: str) -> tuple[int, float]:
    """``"100/1m"`` as (100, 60.0); ValueError saying what is allowed."""
    allowed = f"'N/DURATION' with N from 1 to {RATE_MAX:,} and a duration like '1s', '1m', '1h'"
    count, _, window = text.partition("/")
    if not count.isdigit() or not window:
        raise ValueError(f"invalid rate limit {text!r}: allowed {allowed}")
    try:
        seconds = parse_duration(window).total_seconds()
    except ValueError as exc:
        raise ValueError(f"invalid rate limit {text!r}: {exc}") from None
    if not 1 <= int(count) <= RATE_MAX or seconds <= 0:
        raise ValueError(f"invalid rate limit {text!r}: allowed {allowed}")
    return int(count), seconds


def queue_list(value: object) -> tuple[str, ...]:
    """``[worker] queues``: a non-empty array of queue names, each once."""
    if not isinstance(value, list) or not value:
        raise ValueError(
            'expected a non-empty array of queue names like ["default", "heavy"], '
            f"got {describe(value)}"
        )
    names = tuple(queue_name(item) for item in value)
    if len(set(names)) != len(names):
        raise ValueError(f"each queue once, got {list(names)}")
    return names


MAX_RESULT_SIZE = 16 * 1024**2


def result_size(value: object) -> int:
    """``[worker] max_result_size``: a size from 0 (keep no results) to 16MiB."""
    size = parse_size(value)
    if size > MAX_RESULT_SIZE:
        raise ValueError(f"must be at most 16MiB ({MAX_RESULT_SIZE} bytes), got {size} bytes")
    return size
