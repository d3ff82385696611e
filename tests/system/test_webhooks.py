"""Notifications from the outbox to a real local HTTP receiver, with real workers: every
expected event arrives, signed, with one distinct `event_id` per cause; a receiver that fails
first gets the event again later (backoff); jobs not matching the target's globs or events it
does not want send nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from jobrunner import Client
from jobrunner.worker.notifier import CLAIM_LEASE, STOPPED
from tests.support import Workers, toml_value, wait_for, write_config

pytestmark = pytest.mark.system

SECRET = "receiver-secret-0123456789"


class Receiver:
    """A local HTTP server that records every POST; the first `fail_first` answer 500, the
    first `hang_first` only after `hang` seconds (503: not received)."""

    def __init__(self, fail_first: int = 0, hang_first: int = 0, hang: float = 0.0) -> None:
        self.received: list[dict[str, Any]] = []
        self.refused = 0
        self.fail_first = fail_first
        self.hung: list[float] = []  # when each hung request arrived (monotonic)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if len(owner.hung) < hang_first:
                    owner.hung.append(time.monotonic())
                    time.sleep(hang)
                    self.send_response(503)
                    self.end_headers()
                    return
                if owner.refused < owner.fail_first:
                    owner.refused += 1
                    self.send_response(500)
                    self.end_headers()
                    return
                owner.received.append(
                    {"body": body, "signature": self.headers.get("X-Jobrunner-Signature"),
                     "extra": self.headers.get("X-Team")}
                )  # fmt: skip
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def hook_config(
    path: Path, db_url: str, jobs: list[dict[str, Any]], target: dict[str, Any]
) -> Path:
    """A config of `jobs` with one `[[notify]]` target of the settings `target`."""
    config = write_config(path, db_url, jobs)
    lines = ["", "[[notify]]", *(f"{k} = {toml_value(v)}" for k, v in target.items())]
    config.write_text(config.read_text() + "\n".join(lines) + "\n")
    return config


def notify_config(path: Path, db_url: str, url: str) -> Path:
    jobs = [
        {"name": "flaky", "func": "sysjobs:fail", "retries": 1, "retry_backoff": "0.2s"},
        {"name": "quiet", "func": "sysjobs:fail"},
        {"name": "fine", "func": "sysjobs:noop_async"},
    ]
    target = {"url": url, "events": ["failed", "exhausted", "lost"], "jobs": ["fl*", "fine"],
              "secret": SECRET, "headers": {"X-Team": "ops"}, "name": "ops-hook"}  # fmt: skip
    return hook_config(path, db_url, jobs, target)


@pytest.mark.parametrize("db_url", ["postgresql", "sqlite"], indirect=True)
def test_failures_are_notified_signed_once_per_cause(
    tmp_path: Path, db_url: str, workers: Workers, receiver: Receiver
) -> None:
    config = notify_config(tmp_path / "jr.toml", db_url, receiver.url)
    proc = workers.start(config)
    with Client.from_url(db_url) as client:
        first = client.enqueue("flaky")
        client.enqueue("quiet")  # not a job the target wants
        client.enqueue("fine")  # succeeds: no event
        assert wait_for(lambda: len(receiver.received) >= 3, 40), receiver.events()
        assert wait_for(lambda: len(client.list_runs(job="flaky")) == 2, 10)
        retry = next(r for r in client.list_runs(job="flaky") if r.id != first.id)
    for r in receiver.received:
        expected = "sha256=" + hmac.new(SECRET.encode(), r["body"], hashlib.sha256).hexdigest()
        assert r["signature"] == expected and r["extra"] == "ops"
    got = sorted((e["run_id"], e["event"], e["attempt"]) for e in receiver.events())
    assert got == sorted([(first.id, "failed", 1), (retry.id, "failed", 2),
                          (retry.id, "exhausted", 2)]), got  # fmt: skip
    ids = [e["event_id"] for e in receiver.events()]
    assert len(set(ids)) == len(ids) == 3, "one distinct event id per cause"
    assert receiver.refused == 2, "the first two attempts failed and were retried"
    body = receiver.events()[0]
    assert {"event_id", "event", "job", "run_id", "attempt", "status", "error", "scheduled_for",
            "occurred_at"} <= set(body)  # fmt: skip
    assert body["error"]["type"] == "RuntimeError"
    retried = proc.find("notification not delivered")
    assert len(retried) >= 2 and all("secret" not in json.dumps(e) for e in retried)
    assert SECRET not in (tmp_path / "worker0.log").read_text(), "no secret in the log"
    proc.signal(signal.SIGTERM)
    assert proc.wait(30) == 0


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_an_overdue_job_raises_one_event_across_three_replicas(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    receiver = Receiver()
    try:
        jobs = [{"name": "nightly", "func": "sysjobs:fail", "expect_success_within": "2s"}]
        target = {"url": receiver.url, "events": ["overdue"], "name": "pager"}
        config = hook_config(tmp_path / "jr.toml", db_url, jobs, target)
        procs = [workers.start(config) for _ in range(3)]
        with Client.from_url(db_url) as client:
            client.enqueue("nightly")  # fails: no success since its first run
        assert wait_for(lambda: len(receiver.received) >= 1, 30)
        time.sleep(12)  # every replica's housekeeping has checked at least twice since
        events = receiver.events()
        assert [e["event"] for e in events] == ["overdue"], events
        assert events[0]["job"] == "nightly" and events[0]["expect_success_within_seconds"] == 2
        for proc in procs:
            proc.signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(30) == 0
    finally:
        receiver.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_worker_stopped_mid_delivery_gives_its_events_back(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    """SIGTERM while a POST hangs: the event is due again at once (not after the 30 s claim),
    so the next replica delivers it right away."""
    receiver = Receiver(hang_first=1, hang=6.0)
    try:
        jobs = [{"name": "boom", "func": "sysjobs:fail"}]
        target = {"url": receiver.url, "events": ["failed"], "name": "hook"}
        config = hook_config(tmp_path / "jr.toml", db_url, jobs, target)
        first = workers.start(config)
        with Client.from_url(db_url) as client:
            client.enqueue("boom")
        assert wait_for(lambda: len(receiver.hung) == 1, 30), "the delivery never began"
        first.signal(signal.SIGTERM)
        assert first.wait(30) == 0
        assert first.find("notifications given back at stop")
        with Client.from_url(db_url) as client, client.engine.connect() as conn:
            row = conn.execute(
                sa.text(
                    "SELECT status, last_error, next_attempt_at <= now() + interval '1 second'"
                    " FROM jobrunner_outbox"
                )
            ).one()
        assert tuple(row) == ("pending", STOPPED, True), row
        workers.start(config)
        assert wait_for(lambda: len(receiver.received) == 1, 20)
        claimed_at = receiver.hung[0]
        assert time.monotonic() - claimed_at < CLAIM_LEASE, "delivered within the old claim"
        assert receiver.events()[0]["job"] == "boom"
    finally:
        receiver.close()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_run_that_fails_in_the_drain_is_notified_by_its_stopping_worker(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    """SIGTERM while a run is still going: it fails during the drain, and the worker that
    stops delivers its event before it exits (no replica is left to do it)."""
    receiver = Receiver()
    try:
        jobs = [{"name": "late", "func": "sysjobs:slow_fail"}]
        target = {"url": receiver.url, "events": ["failed"], "name": "hook"}
        config = hook_config(tmp_path / "jr.toml", db_url, jobs, target)
        proc = workers.start(config)
        with Client.from_url(db_url) as client:
            run = client.enqueue("late", kwargs={"seconds": 2.0})
            assert wait_for(lambda: client.get_run(run.id).status == "running", 20)
            proc.signal(signal.SIGTERM)
            assert proc.wait(30) == 0
            assert client.get_run(run.id).status == "failed"
            with client.engine.connect() as conn:
                left = conn.execute(sa.text("SELECT status FROM jobrunner_outbox")).all()
        assert [r[0] for r in left] == ["delivered"], left
        assert [(e["run_id"], e["event"]) for e in receiver.events()] == [(run.id, "failed")]
        refused = proc.find("outcome refused: lease was taken over")
        assert not refused, "the drain's flush wrote the outcome a second time"
    finally:
        receiver.close()
