"""examples/fastapi_app.py over HTTP (TestClient) against a real worker on PostgreSQL."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.exceptions import StarletteDeprecationWarning

from examples.fastapi_app import create_app
from tests.support import WorkerProcess, Workers, wait_for, write_config

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 and warns when it falls back to httpx (which works).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.system

APP_JOBS = '''
import json, os


def report(ctx, region):
    """Records what it was called with, so the test can see the worker ran it."""
    line = {"run_id": ctx.run_id, "region": region, "correlation_id": ctx.correlation_id}
    with open(os.environ["APP_OUT"], "a") as f:
        f.write(json.dumps(line) + "\\n")
'''
TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def worker(tmp_path: Path, pg_url: str) -> Iterator[WorkerProcess]:
    (tmp_path / "appjobs.py").write_text(APP_JOBS)
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [{"name": "report", "func": "appjobs:report"}],
        worker={"import_paths": [str(tmp_path)]},
    )
    workers = Workers(tmp_path, {"APP_OUT": str(tmp_path / "out.jsonl")})
    try:
        yield workers.start(config)
    finally:
        workers.close()


def calls(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "out.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def wait_final(http: TestClient, run_id: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = http.get(f"/jobrunner/api/runs/{run_id}", headers=AUTH).json()
        if run["status"] not in ("queued", "running") or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def test_web_app_enqueues_worker_runs_and_the_app_observes(
    tmp_path: Path, pg_url: str, worker: WorkerProcess
) -> None:
    with TestClient(create_app(pg_url, api_token=TOKEN)) as http:
        # The app's own endpoint: the request id becomes the run's correlation id.
        response = http.post(
            "/reports/eu", headers={**AUTH, "X-Request-ID": "req-123", "Idempotency-Key": "r1"}
        )
        assert response.status_code == 202, response.text
        assert response.headers["X-Request-ID"] == "req-123"
        run = response.json()
        assert (run["status"], run["correlation_id"]) == ("queued", "req-123")
        repeat = http.post("/reports/eu", headers={**AUTH, "Idempotency-Key": "r1"})
        assert repeat.json()["id"] == run["id"]

        final = wait_final(http, run["id"])
        assert final["status"] == "succeeded", final
        assert final["worker_id"] and final["finished_at"]
        assert calls(tmp_path) == [
            {"run_id": run["id"], "region": "eu", "correlation_id": "req-123"}
        ], "the worker ran it once, with the arguments and the correlation id"

        # jobrunner's router, mounted with the app's auth; a request id is generated.
        routed = http.post(
            "/jobrunner/api/jobs/report/runs", json={"kwargs": {"region": "us"}}, headers=AUTH
        )
        assert routed.status_code == 202
        generated = routed.headers["X-Request-ID"]
        assert routed.json()["correlation_id"] == generated and len(generated) == 32
        assert wait_final(http, routed.json()["id"])["status"] == "succeeded"
        listed = http.get("/jobrunner/api/runs", params={"job": "report"}, headers=AUTH).json()
        assert {r["status"] for r in listed} == {"succeeded"} and len(listed) == 2
        assert wait_for(lambda: len(calls(tmp_path)) == 2, 5)

        # Auth and input errors.
        assert http.get("/jobrunner/api/jobs").status_code == 401
        assert http.post("/reports/eu").status_code == 401
        assert http.post("/jobrunner/api/jobs/nope/runs", headers=AUTH).status_code == 404
        bad = http.post("/jobrunner/api/jobs/report/runs", json={"kwargs": [1]}, headers=AUTH)
        assert bad.status_code == 422
        assert len(http.get("/jobrunner/api/runs", headers=AUTH).json()) == 2, "nothing written"

        # The dashboard at /jobrunner/, behind the same auth: a browser logs in with a cookie.
        assert http.get("/jobrunner/").status_code == 401
        page = http.get("/jobrunner/jobs", headers=AUTH)
        assert page.status_code == 200 and "report" in page.text
        assert http.get("/login", params={"token": "wrong"}).status_code == 401
        http.get("/login", params={"token": TOKEN})
        assert "Needs attention" in http.get("/jobrunner/").text
    assert worker.proc.poll() is None, "the worker keeps running"


def test_the_apps_own_endpoint_refuses_bad_input_as_its_schema_says(pg_url: str) -> None:
    """No worker: 503 for the job not yet published; bad input is 422 before that; the token's
    401 is in the schema of every guarded route, the router's too."""
    with TestClient(create_app(pg_url, api_token=TOKEN)) as http:
        empty_key = {**AUTH, "Idempotency-Key": ""}
        assert http.post("/reports/eu", headers=empty_key).status_code == 422
        assert http.post("/reports/a%00b", headers=AUTH).status_code == 422
        assert http.post(f"/reports/{'x' * 201}", headers=AUTH).status_code == 422
        unpublished = http.post("/reports/eu", headers=AUTH)
        assert unpublished.status_code == 503 and "report" in unpublished.json()["detail"]
        assert http.post("/reports/eu").status_code == 401
        paths = http.get("/openapi.json").json()["paths"]
        documented = {
            (path, method): set(op["responses"])
            for path, ops in paths.items()
            for method, op in ops.items()
        }
        assert documented[("/reports/{region}", "post")] == {"202", "401", "422", "503"}
        router = [codes for (path, _), codes in documented.items() if path.startswith("/jobrunner")]
        assert router and all("401" in codes for codes in router)
