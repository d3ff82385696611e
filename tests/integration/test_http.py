"""The worker's HTTP endpoint with real checks: a real event loop and real databases."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobrunner.health import check_http, database_ready, probe_loop
from jobrunner.worker.http import Check, HttpServer, start_http
from jobrunner.worker.metrics import Metrics
from tests.support import AllPorts


def get(port: int, path: str, timeout: float = 5) -> tuple[int, str, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type") or "", resp.read().decode()
    finally:
        conn.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Flag:
    """A check whose answer the test sets."""

    def __init__(self) -> None:
        self.ok, self.reason = True, "alive"

    def __call__(self) -> tuple[bool, str]:
        return self.ok, self.reason


@pytest.fixture
def running_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running in its own thread, as the worker's does."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


@pytest.fixture
def metrics() -> Metrics:
    m = Metrics("test-worker", "0.1.0", "abc123")
    m.run_finished("report", "succeeded", 0.3)
    m.run_started("report", 0.002)
    m.set_queue_depth({("default", "0"): 5})
    return m


def serve(metrics: Metrics, healthy: Check, ready: Check) -> HttpServer:
    return start_http("127.0.0.1", 0, metrics=metrics, healthy=healthy, ready=ready)


def test_healthz_follows_the_check_and_answers_one_line(metrics: Metrics) -> None:
    flag = Flag()
    server = serve(metrics, flag, Flag())
    try:
        assert server.port > 0
        status, ctype, body = get(server.port, "/healthz")
        assert (status, body) == (200, "ok: alive\n")
        assert ctype.startswith("text/plain")
        flag.ok, flag.reason = False, "heartbeat 45s old\n(limit 30s)"
        status, _, body = get(server.port, "/healthz")
        assert (status, body) == (503, "heartbeat 45s old (limit 30s)\n")
    finally:
        server.stop()


def test_healthz_with_a_real_event_loop(
    metrics: Metrics, running_loop: asyncio.AbstractEventLoop
) -> None:
    limit = [5.0]  # generous while the loop is free; short while it is blocked
    server = serve(metrics, lambda: probe_loop(running_loop, timeout=limit[0]), Flag())
    try:
        status, _, body = get(server.port, "/healthz")
        assert status == 200 and "event loop responded" in body
        release = threading.Event()
        running_loop.call_soon_threadsafe(release.wait, 30)  # a job blocking the loop
        limit[0] = 0.5
        try:
            status, _, body = get(server.port, "/healthz")
            assert status == 503 and "did not respond within 0.5s" in body
        finally:
            release.set()
            limit[0] = 5.0
        assert get(server.port, "/healthz")[0] == 200
        running_loop.call_soon_threadsafe(running_loop.stop)
        assert _eventually(lambda: not running_loop.is_running())
        assert get(server.port, "/healthz")[:2] == (503, "text/plain; charset=utf-8")
    finally:
        server.stop()


def test_readyz_is_200_on_a_current_schema(metrics: Metrics, db_url: str) -> None:
    store = AllPorts.from_url(db_url)
    server = serve(metrics, Flag(), lambda: database_ready(store))
    try:
        status, _, body = get(server.port, "/readyz")
        assert status == 200 and body.startswith("ok: database ok, schema at ")
    finally:
        server.stop()
        store.close()


def test_readyz_is_503_on_an_empty_database(metrics: Metrics, tmp_path: Path) -> None:
    store = AllPorts.from_url(f"sqlite:///{tmp_path / 'empty.db'}")
    server = serve(metrics, Flag(), lambda: database_ready(store))
    try:
        status, _, body = get(server.port, "/readyz")
        assert status == 503 and "run `jobrunner db upgrade`" in body
    finally:
        server.stop()
        store.close()


def test_readyz_is_503_when_the_database_does_not_answer(metrics: Metrics) -> None:
    url = f"postgresql://jr:s3cret@127.0.0.1:{free_port()}/nothing"
    store = AllPorts.from_url(url, connect_args={"connect_timeout": 2})
    server = serve(metrics, Flag(), lambda: database_ready(store))
    try:
        status, _, body = get(server.port, "/readyz")
        assert status == 503 and body.startswith("database unavailable:")
        assert "s3cret" not in body and body.count("\n") == 1
    finally:
        server.stop()
        store.close()


def test_a_check_that_raises_is_a_503_with_its_reason(metrics: Metrics) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("store closed\nsecond line")

    server = serve(metrics, broken, Flag())
    try:
        assert get(server.port, "/healthz")[::2] == (
            503,
            "check failed: RuntimeError: store closed\n",
        )
    finally:
        server.stop()


def test_metrics_parse_and_unknown_paths_are_404(metrics: Metrics) -> None:
    server = serve(metrics, Flag(), Flag())
    try:
        status, ctype, body = get(server.port, "/metrics")
        assert status == 200 and ctype == metrics.render()[1]
        families = {f.name: f for f in text_string_to_metric_families(body)}
        info = families["jobrunner_worker_info"].samples[0]
        assert info.labels == {
            "worker_id": "test-worker",
            "version": "0.1.0",
            "config_hash": "abc123",
        }
        assert families["jobrunner_runs"].samples[0].labels == {
            "job": "report",
            "status": "succeeded",
        }
        assert families["jobrunner_queue_depth"].samples[0].value == 5
        assert get(server.port, "/metrics?debug=1")[0] == 200
        assert get(server.port, "/")[0] == 404
        assert get(server.port, "/healthz/extra")[0] == 404
    finally:
        server.stop()


def test_a_slow_check_blocks_neither_other_requests_nor_the_caller(metrics: Metrics) -> None:
    release = threading.Event()

    def slow_ready() -> tuple[bool, str]:
        release.wait(30)
        return True, "finally"

    server = serve(metrics, Flag(), slow_ready)
    try:
        slow: list[tuple[int, str, str]] = []
        thread = threading.Thread(target=lambda: slow.append(get(server.port, "/readyz", 35)))
        thread.start()
        time.sleep(0.1)
        begin = time.monotonic()
        assert get(server.port, "/healthz")[0] == 200
        assert get(server.port, "/metrics")[0] == 200
        assert time.monotonic() - begin < 5
        assert not slow, "the slow check answered before it was released"
        release.set()
        thread.join(5)
        assert slow and slow[0][0] == 200
    finally:
        release.set()
        server.stop()


def test_stop_closes_the_port(metrics: Metrics) -> None:
    server = serve(metrics, Flag(), Flag())
    port = server.port
    assert get(port, "/healthz")[0] == 200
    begin = time.monotonic()
    server.stop()
    assert time.monotonic() - begin < 5
    with pytest.raises(ConnectionRefusedError):
        get(port, "/healthz")
    assert not [t for t in threading.enumerate() if t.name == "jobrunner-http"]


def test_a_port_in_use_is_refused(metrics: Metrics) -> None:
    server = serve(metrics, Flag(), Flag())
    try:
        with pytest.raises(OSError):
            start_http("127.0.0.1", server.port, metrics=metrics, healthy=Flag(), ready=Flag())
    finally:
        server.stop()


def test_health_command_check_over_http(metrics: Metrics) -> None:
    flag = Flag()
    server = serve(metrics, flag, Flag())
    port = server.port
    try:
        assert check_http("127.0.0.1", port) == (
            True,
            f"http://127.0.0.1:{port}/healthz: ok: alive",
        )
        assert check_http("0.0.0.0", port)[0], "0.0.0.0 means this host's loopback"
        flag.ok, flag.reason = False, "heartbeat stale"
        assert check_http("127.0.0.1", port) == (
            False,
            f"http://127.0.0.1:{port}/healthz answered 503: heartbeat stale",
        )
    finally:
        server.stop()
    assert check_http("127.0.0.1", port) == (
        False,
        f"no worker listening on http://127.0.0.1:{port}/healthz",
    )


def test_health_check_gives_up_after_its_timeout() -> None:
    """A listener that never answers: the check fails within its timeout."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        begin = time.monotonic()
        ok, reason = check_http("127.0.0.1", port, timeout=0.3)
        assert not ok and reason.endswith("did not answer within 0.3s")
        assert time.monotonic() - begin < 3


def _eventually(predicate: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
