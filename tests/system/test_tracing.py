"""Issue 8.1: a request's correlation id reaches every log line of the run it enqueues,
including lines a sync job writes with stdlib logging from the worker's thread pool."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from examples.fastapi_app import create_app
from tests.support import AllPorts, Workers, wait_for, write_config

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.system


def test_request_id_reaches_the_sync_jobs_log_lines(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    config = write_config(
        tmp_path / "jr.toml", pg_url, [{"name": "hello", "func": "sysjobs:noop_sync"}]
    )
    proc = workers.start(config)
    with TestClient(create_app(pg_url, api_token="t")) as http:
        response = http.post(
            "/jobrunner/api/jobs/hello/runs",
            json={"kwargs": {}},
            headers={"Authorization": "Bearer t", "X-Request-ID": "req-trace-42"},
        )
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    assert wait_for(lambda: bool(proc.find("sync job says hello")), 15)
    line = next(e for e in proc.find("sync job says hello") if e["run_id"] == run_id)
    assert line["correlation_id"] == "req-trace-42"  # from the request, via the database
    assert line["logger"] == "sysjobs"  # a stdlib logging call in the thread pool
    finished = [e for e in proc.find("run finished") if e["run_id"] == run_id]
    assert finished and finished[0]["correlation_id"] == "req-trace-42"
    store = AllPorts.from_url(pg_url)
    assert store.get_run(run_id).correlation_id == "req-trace-42"
    assert [r.id for r in store.list_runs(correlation_id="req-trace-42")] == [run_id]
    store.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
