"""Notifications (`[[notify]]`): the targets, which events each wants, the events an outcome
causes, their stable ids, bodies and signatures. Pure: the store writes events to the outbox
in the transaction of their cause, the worker's notifier delivers them.

An event's `event_id` is a UUID derived from its cause (the run and the event, or the job and
the overdue period), so that however often a cause is handled (a retried transaction, two
replicas), a receiver sees one id per cause and can deduplicate.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobrunner import converters as conv
from jobrunner.records import Run
from jobrunner.settings import Issues, parse_table, setting, toml_key
from jobrunner.units import describe

EVENTS = ("failed", "exhausted", "lost", "misfired", "skipped", "overdue")
SIGNATURE_HEADER = "X-Jobrunner-Signature"
_NAMESPACE = uuid.UUID("5b0c5ad0-7a0e-4f3c-9f3e-6a6f62726e72")


def _events(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError(f"expected a non-empty array of event names, got {describe(value)}")
    unknown = [v for v in value if v not in EVENTS]
    if unknown:
        raise ValueError(f"unknown event {unknown[0]!r}: allowed {', '.join(EVENTS)}")
    return tuple(dict.fromkeys(value))


def _globs(value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f'expected an array of job name patterns like ["nightly-*"], got {value!r}'
        )
    return tuple(value)


def _headers(value: object) -> Mapping[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ValueError(
            "expected a table of header names and string values like { Authorization = "
            '"Bearer ${HOOK_TOKEN}" }'
        )
    return dict(value)


def _secret(value: object) -> str:
    text = conv.as_str(value)
    if len(text) < 16:
        raise ValueError(
            "too short: a secret of at least 16 characters, best from the environment: "
            'secret = "${HOOK_SECRET}"'
        )
    return text


def _url(value: object) -> str:
    text = conv.as_str(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text


@dataclass(frozen=True, kw_only=True)
class NotifyTarget:
    """One `[[notify]]` table: where events go and which ones."""

    url: str = field(metadata=toml_key(_url, hint="the receiver's URL, like 'https://hooks/x'"))
    events: tuple[str, ...] = field(
        metadata=toml_key(_events, hint=f"an array of events: {', '.join(EVENTS)}")
    )
    jobs: tuple[str, ...] = setting(("*",), _globs)
    name: str = setting("", conv.string(conv.NAME, conv.NAME_ALLOWED))
    secret: str | None = field(default=None, repr=False, metadata=toml_key(_secret))
    headers: Mapping[str, str] = field(
        default_factory=dict, repr=False, metadata=toml_key(_headers)
    )

    def wants(self, event: str, job: str) -> bool:
        return event in self.events and any(fnmatch.fnmatchcase(job, g) for g in self.jobs)


def build_targets(raw: object, issues: Issues) -> tuple[NotifyTarget, ...]:
    """The `notify` array: each table checked as a section; names default to `notify-N` and
    must be unique."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        issues.add("notify", f"expected an array of tables ([[notify]]), got {describe(raw)}")
        return ()
    targets: list[NotifyTarget] = []
    for i, item in enumerate(raw):
        values, ok = parse_table(item, NotifyTarget, f"notify[{i}]", issues)
        if not ok:
            continue
        values["name"] = values.get("name") or f"notify-{i}"
        if any(t.name == values["name"] for t in targets):
            issues.add(f"notify[{i}].name", f"duplicate target name {values['name']!r}")
            continue
        targets.append(NotifyTarget(**values))
    return tuple(targets)


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event for one target, as the outbox keeps it."""

    event_id: str
    target: str
    event: str
    job: str
    run_id: int | None
    body: dict[str, Any]


def event_id(*cause: object) -> str:
    """The stable id of an event: the same cause gives the same id, on any replica."""
    return str(uuid.uuid5(_NAMESPACE, "\x1f".join(str(c) for c in cause)))


def run_events(run: Run, status: str, *, retried: bool, error: Any = None) -> list[str]:
    """The events a run's outcome causes: `failed` (failed, timed out), `lost`, `exhausted`
    (a failure or loss with no attempt left), `skipped` and `misfired` (a skipped slot)."""
    if status in ("failed", "timed_out"):
        return ["failed"] if retried else ["failed", "exhausted"]
    if status == "lost":
        return ["lost"] if retried else ["lost", "exhausted"]
    if status == "skipped":
        return ["misfired"] if run.reason == "misfired" else ["skipped"]
    return []


def events_for(
    targets: Sequence[NotifyTarget],
    run: Run,
    status: str,
    now: datetime,
    *,
    retried: bool = False,
    error: Any = None,
    reason: str | None = None,
) -> list[Event]:
    """The outbox rows an outcome of `run` causes: one per (event, target that wants it)."""
    out = []
    for name in run_events(run, status, retried=retried, error=error):
        wanting = [t for t in targets if t.wants(name, run.job_name)]
        if not wanting:
            continue
        body = {
            "event_id": event_id(run.id, name),
            "event": name,
            "job": run.job_name,
            "run_id": run.id,
            "attempt": run.attempt,
            "status": status,
            "error": error,
            "reason": reason if reason is not None else run.reason,
            "scheduled_for": run.scheduled_for.isoformat() if run.scheduled_for else None,
            "occurred_at": now.isoformat(),
        }
        out += [
            Event(event_id=body["event_id"], target=t.name, event=name, job=run.job_name,
                  run_id=run.id, body=body)
            for t in wanting
        ]  # fmt: skip
    return out


def encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str).encode()


def signature(secret: str, payload: bytes) -> str:
    """`sha256=HEX`: the HMAC-SHA256 of the body with the target's secret."""
    return "sha256=" + hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()


def request_headers(target: NotifyTarget, payload: bytes) -> dict[str, str]:
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "jobrunner-notify",
        **target.headers,
    }
    if target.secret:
        headers[SIGNATURE_HEADER] = signature(target.secret, payload)
    return headers


def overdue_events(
    targets: Sequence[NotifyTarget], job: str, since: datetime, within: float, now: datetime
) -> list[Event]:
    """`overdue`: no run of `job` succeeded since `since` (its last success, or its first
    run), longer ago than `within` seconds. One id per overdue period: the next success
    starts another."""
    wanting = [t for t in targets if t.wants("overdue", job)]
    if not wanting or (now - since).total_seconds() <= within:
        return []
    ident = event_id(job, "overdue", since.isoformat())
    body: dict[str, Any] = {
        "event_id": ident,
        "event": "overdue",
        "job": job,
        "run_id": None,
        "attempt": None,
        "status": None,
        "error": None,
        "scheduled_for": None,
        "last_success_or_first_run_at": since.isoformat(),
        "expect_success_within_seconds": within,
        "occurred_at": now.isoformat(),
    }
    return [
        Event(event_id=ident, target=t.name, event="overdue", job=job, run_id=None, body=body)
        for t in wanting
    ]  # fmt: skip
