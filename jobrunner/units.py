"""Durations, sizes and database URLs: parsing, formatting and masking (pure functions).

Durations: a number of seconds (int or float, or a string of digits) or a string of
``<number><unit>`` parts without spaces, units ``d h m s ms`` from largest to smallest, each
at most once. Sizes: a number of bytes or ``<number><unit>``, units ``B kB MB GB TB`` (powers
of 1000) or ``KiB MiB GiB TiB`` (powers of 1024), case-insensitive. The refusals are
ValueErrors that say what is allowed; :mod:`jobrunner.config` reports them under the key.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from decimal import Decimal

__all__ = [
    "describe",
    "format_duration",
    "mask_url",
    "normalize_database_url",
    "parse_duration",
    "parse_size",
]


def describe(value: object) -> str:
    """``string 'x'``, ``integer 5``, ``boolean true``, ``table``, ``array``..."""
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r}"
    names = {int: "integer", float: "float", dict: "table", list: "array"}
    name = names.get(type(value), type(value).__name__)
    return name if isinstance(value, dict | list) else f"{name} {value}"


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
        raise ValueError(f"expected a duration, got {describe(value)}; {_DURATION_ALLOWED}")
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
        raise ValueError(f"expected a size, got {describe(value)}; {_SIZE_ALLOWED}")
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
