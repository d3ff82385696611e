"""The parameters each catalogued job takes, as its worker published them, cached by the
client that checks an enqueue's kwargs against them (`jobrunner.signature`).

`Signatures.check` is part of the enqueue operation: on a cache hit it costs no statement;
a job's entry is read again after `TTL` seconds, and at once when cached parameters refuse
the kwargs (a deploy may have added the parameter since).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from jobrunner.errors import InvalidArguments
from jobrunner.signature import check_kwargs
from jobrunner.store.sql import Op
from jobrunner.store.tables import jobrunner_jobs

TTL = 10.0  # seconds a job's published parameters are trusted before they are read again
# read at, the parameters, the job's own kwargs, its unique_for (seconds)
Entry = tuple[float, list[dict[str, Any]] | None, Mapping[str, Any], float | None]

_READ = sa.select(
    jobrunner_jobs.c.parameters,
    jobrunner_jobs.c.definition["kwargs"].label("defaults"),
    jobrunner_jobs.c.definition["unique_for"].as_float().label("unique_for"),
).where(jobrunner_jobs.c.name == sa.bindparam("name"))


class Signatures:
    """Per client: each job's parameters and its own kwargs (from the TOML), as last read."""

    def __init__(self, ttl: float = TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.clock = clock
        self._seen: dict[str, Entry] = {}

    def check(self, job: str, kwargs_list: Sequence[Mapping[str, Any]]) -> Op[float | None]:
        """Refuse kwargs that do not fit the job's parameters (InvalidArguments); nothing
        is checked for a job not in the catalog (the enqueue refuses it) or one whose worker
        published no parameters. Returns the job's `unique_for` in seconds (or None)."""
        entry = self._seen.get(job)
        fresh = entry is not None and self.clock() - entry[0] < self.ttl
        if entry is None or not fresh:
            entry = yield from self._read(job)
        try:
            _check(job, entry, kwargs_list)
        except InvalidArguments:
            if not fresh:
                raise
            entry = yield from self._read(job)
            _check(job, entry, kwargs_list)
        return entry[3]

    def may_be_unique(self, job: str) -> bool:
        """Whether an enqueue of `job` may take the `unique_for` path (its lock must then hold
        until the insert: a transaction, not autocommit): unknown yet, or known unique."""
        entry = self._seen.get(job)
        return entry is None or entry[3] is not None

    def _read(self, job: str) -> Op[Entry]:
        row = (yield _READ, {"name": job}).one_or_none()
        entry: Entry = (self.clock(), None, {}, None)
        if row is not None:
            entry = (self.clock(), row.parameters, row.defaults or {}, row.unique_for)
            self._seen[job] = entry
        return entry


def _check(job: str, entry: Entry, kwargs_list: Sequence[Mapping[str, Any]]) -> None:
    _, parameters, defaults, _ = entry
    if parameters is None:
        return
    for i, kwargs in enumerate(kwargs_list):
        try:
            check_kwargs(job, parameters, {**defaults, **kwargs})
        except InvalidArguments as exc:
            if len(kwargs_list) == 1:
                raise
            raise InvalidArguments(f"kwargs_list[{i}]: {exc}") from None
