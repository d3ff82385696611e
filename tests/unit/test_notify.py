"""Notification events: which targets want what, stable ids per cause, bodies and signatures,
the backoff between attempts, and the `[[notify]]` config's refusals."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from jobrunner.config import load_config
from jobrunner.errors import ConfigError
from jobrunner.notify import (
    NotifyTarget,
    encode,
    event_id,
    events_for,
    overdue_events,
    request_headers,
    run_events,
)
from jobrunner.records import Run
from jobrunner.worker.notifier import BACKOFF_MAX, backoff_delay

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def run(**kw: Any) -> Run:
    values: dict[str, Any] = {
        "id": 7, "job_name": "nightly-report", "trigger": "schedule", "scheduled_for": NOW,
        "run_at": NOW, "status": "running", "reason": None, "attempt": 1, "max_attempts": 2,
        "worker_id": "w", "fence": 1, "kwargs": {}, "enqueued_at": NOW, "started_at": NOW,
        "finished_at": None, "error": None, "cancel_requested": False, "idempotency_key": None,
        "correlation_id": None, "retry_of": None,
    }  # fmt: skip
    values.update(kw)
    return Run(**values)


def target(**kw: Any) -> NotifyTarget:
    values: dict[str, Any] = {"url": "https://h/x", "events": ("failed", "exhausted"), "name": "t"}
    return NotifyTarget(**{**values, **kw})


def test_outcomes_cause_their_events() -> None:
    assert run_events(run(), "failed", retried=True) == ["failed"]
    assert run_events(run(), "timed_out", retried=False) == ["failed", "exhausted"]
    assert run_events(run(), "lost", retried=False) == ["lost", "exhausted"]
    assert run_events(run(reason="misfired"), "skipped", retried=False) == ["misfired"]
    assert run_events(run(reason="overlap"), "skipped", retried=False) == ["skipped"]
    assert run_events(run(), "succeeded", retried=False) == []
    assert run_events(run(), "cancelled", retried=False) == []


def test_targets_get_the_events_and_jobs_they_want_with_one_id_per_cause() -> None:
    targets = [target(), target(name="all", events=("failed",), jobs=("*",)),
               target(name="other", jobs=("billing-*",))]  # fmt: skip
    events = events_for(targets, run(), "failed", NOW, retried=False, error={"type": "E"})
    assert sorted((e.target, e.event) for e in events) == [
        ("all", "failed"),
        ("t", "exhausted"),
        ("t", "failed"),
    ]
    ids = {e.event: e.event_id for e in events}
    assert ids["failed"] == event_id(7, "failed") != ids["exhausted"]
    again = events_for(targets, run(), "failed", NOW, retried=False)
    assert {e.event_id for e in again} == {e.event_id for e in events}, "stable per cause"
    body = events[0].body
    assert body["job"] == "nightly-report" and body["run_id"] == 7 and body["attempt"] == 1
    assert body["scheduled_for"] == NOW.isoformat() and body["occurred_at"] == NOW.isoformat()


def test_the_signature_is_the_hmac_of_the_body() -> None:
    secret = "s" * 20
    payload = encode({"b": 1, "a": [1, 2]})
    headers = request_headers(target(secret=secret, headers={"X-Team": "ops"}), payload)
    digest = hmac.new(secret.encode(), payload, hashlib.sha256).hexdigest()
    assert headers["X-Jobrunner-Signature"] == f"sha256={digest}"
    assert headers["X-Team"] == "ops" and headers["Content-Type"] == "application/json"
    assert "X-Jobrunner-Signature" not in request_headers(target(), payload)


def test_backoff_doubles_up_to_a_cap_with_jitter() -> None:
    assert 1.5 <= backoff_delay(1, lambda: 0.0) <= 2.5
    assert backoff_delay(3, lambda: 0.5) == 8.0
    assert backoff_delay(40, lambda: 1.0) == BACKOFF_MAX * 1.25


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ('url = "ftp://x"\nevents = ["failed"]', "notify[0].url: expected an http"),
        ('url = "http://x"\nevents = ["boom"]', "unknown event 'boom': allowed failed"),
        ('url = "http://x"', "notify[0].events: missing"),
        ('url = "http://x"\nevents = ["failed"]\nsecret = "short"', "at least 16"),
        ('url = "http://x"\nevents = ["failed"]\njobs = "x"', "job name patterns"),
        ('url = "http://x"\nevents = ["failed"]\nnope = 1', "unknown key 'nope'"),
    ],
)
def test_bad_notify_tables_are_refused(tmp_path: Path, table: str, said: str) -> None:
    path = tmp_path / "jr.toml"
    path.write_text(f'[database]\nurl = "sqlite:///x.db"\n[[notify]]\n{table}\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert said in str(info.value), info.value


def test_a_secret_never_shows_in_the_targets_repr(tmp_path: Path) -> None:
    path = tmp_path / "jr.toml"
    path.write_text(
        '[database]\nurl = "sqlite:///x.db"\n[[notify]]\nurl = "https://h/x"\n'
        'events = ["failed"]\nsecret = "0123456789abcdefSECRET"\n'
    )
    (t,) = load_config(path).notify
    assert t.name == "notify-0" and "SECRET" not in repr(t)


def test_overdue_is_one_event_per_period() -> None:
    pager = target(name="pager", events=("overdue",))
    since = NOW.replace(hour=1)
    assert overdue_events([pager], "nightly-report", since, 13 * 3600, NOW) == []  # 11 h ago
    (late,) = overdue_events([pager], "nightly-report", since, 3600, NOW)
    (again,) = overdue_events([pager], "nightly-report", since, 3600, NOW.replace(hour=13))
    assert late.event_id == again.event_id, "the same period: the same event"
    (next_period,) = overdue_events([pager], "nightly-report", NOW, 60, NOW.replace(hour=13))
    assert next_period.event_id != late.event_id
    assert overdue_events([target()], "nightly-report", since, 60, NOW) == [], "not wanted"


def test_deliveries_reuse_a_kept_alive_connection_and_refusals_raise() -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from jobrunner.worker.notifier import post

    seen: list[tuple[int, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            seen.append((self.client_address[1], body))
            code = 500 if b"refuse" in body else 204
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        hook = target(url=f"http://127.0.0.1:{server.server_address[1]}/hook?x=1")
        for i in range(3):
            post(hook, {"n": i})
        assert len(seen) == 3 and len({port for port, _ in seen}) == 1, "one connection"
        with pytest.raises(RuntimeError, match="HTTP 500"):
            post(hook, {"refuse": True})
        closed = target(url="http://127.0.0.1:9/nothing-listens")
        with pytest.raises(RuntimeError, match="no answer"):
            post(closed, {"n": 0}, timeout=2)
    finally:
        from jobrunner.worker import notifier

        for conn in getattr(notifier._local, "pool", {}).values():
            conn.close()  # this thread's kept-alive connections
        server.shutdown()
        server.server_close()
