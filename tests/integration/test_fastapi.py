"""The FastAPI router, through HTTP: an AsyncClient on PostgreSQL, a sync Client on SQLite."""

from __future__ import annotations

import functools
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import structlog
from fastapi import Depends, FastAPI, Header, HTTPException
from starlette.exceptions import StarletteDeprecationWarning

from jobrunner import AsyncClient, Client
from jobrunner.fastapi import create_router
from jobrunner.records import CatalogEntry, Outcome, Policy
from tests.support import AllPorts

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 and warns when it falls back to httpx (which works).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

ERROR = {"type": "ValueError", "message": "boom", "traceback": "Traceback ...\nValueError: boom"}


def publish(url: str) -> None:
    store = AllPorts.from_url(url)
    try:
        store.publish_catalog(
            [
                CatalogEntry(
                    name="report",
                    cron="*/5 * * * *",
                    timezone="Europe/Berlin",
                    config_hash="h-report",
                    definition={"name": "report", "retries": 1},
                ),
                CatalogEntry(
                    name="adhoc", cron=None, timezone="UTC", config_hash="h-adhoc", definition={}
                ),
                CatalogEntry(
                    name="sync",
                    cron=None,
                    timezone="UTC",
                    config_hash="h-sync",
                    definition={"concurrency_key": "tenant", "max_per_key": 1, "queue": "heavy"},
                ),
            ],
            worker_id="w1",
        )
    finally:
        store.close()


def finish_with(url: str, job: str, status: str, error: Any = None) -> int:
    """Start the oldest queued run of `job` and record an outcome, as a worker does."""
    store = AllPorts.from_url(url)
    try:
        claim = store.claim(worker_id="w1", limit=1, policies={job: Policy()}, lease_ttl=30)
        lease = claim.started[0].lease
        store.finish("w1", [Outcome(lease=lease, status=status, error=error)])  # type: ignore[arg-type]
        return lease.run_id
    finally:
        store.close()


def make_app(client: Client | AsyncClient, **router_kwargs: Any) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if isinstance(client, AsyncClient):  # its connections belong to the app's event loop
            await client.close()

    app = FastAPI(lifespan=lifespan)
    app.include_router(create_router(client, **router_kwargs), prefix="/jr")
    return app


@pytest.fixture(params=["async-postgresql", "sync-sqlite"])
def setup(request: pytest.FixtureRequest) -> Iterator[tuple[TestClient, str]]:
    """An app over each kind of client, and its database URL."""
    if request.param == "async-postgresql":
        url: str = request.getfixturevalue("pg_url")
        client: Client | AsyncClient = AsyncClient.from_url(url)
    else:
        url = request.getfixturevalue("sqlite_url")
        client = Client.from_url(url)
    publish(url)
    with TestClient(make_app(client)) as http:
        yield http, url
    if isinstance(client, Client):
        client.close()


def test_jobs_are_listed_and_shown(setup: tuple[TestClient, str]) -> None:
    http, _ = setup
    jobs = http.get("/jr/jobs").json()
    assert [j["name"] for j in jobs] == ["adhoc", "report", "sync"]
    report = http.get("/jr/jobs/report").json()
    assert report["cron"] == "*/5 * * * *" and report["timezone"] == "Europe/Berlin"
    assert report["definition_hash"] == "h-report" and report["paused"] is False
    assert report["next_fire"].endswith("Z") or report["next_fire"].endswith("+00:00")
    assert http.get("/jr/jobs/adhoc").json()["next_fire"] is None
    missing = http.get("/jr/jobs/nope")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_enqueue_is_202_with_the_run_and_idempotent(setup: tuple[TestClient, str]) -> None:
    http, _ = setup
    body = {"kwargs": {"region": "eu"}, "idempotency_key": "k1"}
    first = http.post("/jr/jobs/report/runs", json=body)
    assert first.status_code == 202, first.text
    run = first.json()
    assert (run["job_name"], run["status"], run["trigger"]) == ("report", "queued", "manual")
    assert run["kwargs"] == {"region": "eu"} and run["max_attempts"] == 2
    again = http.post("/jr/jobs/report/runs", json={**body, "kwargs": {"region": "us"}})
    assert again.status_code == 202 and again.json()["id"] == run["id"]
    bare = http.post("/jr/jobs/adhoc/runs")  # no body at all: defaults
    assert bare.status_code == 202 and bare.json()["kwargs"] == {}
    delayed = http.post("/jr/jobs/adhoc/runs", json={"run_at": "2030-01-01T10:00:00+02:00"})
    assert delayed.json()["run_at"].startswith("2030-01-01T08:00:00")
    assert http.get(f"/jr/runs/{run['id']}").json() == run
    assert run["priority"] == 0
    urgent = http.post("/jr/jobs/adhoc/runs", json={"priority": 7})
    assert urgent.status_code == 202 and urgent.json()["priority"] == 7


def test_unknown_job_is_404_and_nothing_is_written(setup: tuple[TestClient, str]) -> None:
    http, _ = setup
    response = http.post("/jr/jobs/nope/runs", json={})
    assert response.status_code == 404
    assert response.json() == {"detail": "no job named 'nope' in the catalog"}
    assert http.get("/jr/runs").json() == []


@pytest.mark.parametrize(
    "body",
    [
        {"kwargs": ["not", "an", "object"]},
        {"kwargs": "text"},
        {"run_at": "2030-01-01T10:00:00"},  # no offset
        {"run_at": "tomorrow"},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 201},
        {"priority": "high"},
        {"priority": 1.5},
        {"priority": True},
        {"priority": 1_000_001},
        {"func": "os:system"},  # unknown field: nothing a client sends is imported
    ],
)
def test_bad_body_is_422_and_nothing_is_written(
    setup: tuple[TestClient, str], body: dict[str, Any]
) -> None:
    http, _ = setup
    response = http.post("/jr/jobs/report/runs", json=body)
    assert response.status_code == 422, response.text
    assert http.get("/jr/runs").json() == []


def test_a_concurrency_key_is_taken_from_the_kwargs_or_the_body_and_required(
    setup: tuple[TestClient, str],
) -> None:
    http, _ = setup
    for body in (
        {},  # the job groups by kwargs["tenant"]: a run without it is refused
        {"kwargs": {"tenant": None}},
        {"kwargs": {"tenant": "a"}, "concurrency_key": ""},
        {"kwargs": {"tenant": "a"}, "concurrency_key": 7},
    ):
        response = http.post("/jr/jobs/sync/runs", json=body)
        assert response.status_code == 422, (body, response.text)
    refused = http.post("/jr/jobs/adhoc/runs", json={"concurrency_key": "x"})
    assert refused.status_code == 422 and "has no concurrency_key" in refused.text
    assert http.get("/jr/runs").json() == []
    run = http.post("/jr/jobs/sync/runs", json={"kwargs": {"tenant": "t-7"}}).json()
    assert run["concurrency_key"] == "t-7"
    given = http.post("/jr/jobs/sync/runs", json={"kwargs": {}, "concurrency_key": "t-8"})
    assert given.json()["concurrency_key"] == "t-8"
    heavy = http.get("/jr/runs", params={"queue": "heavy"}).json()
    assert sorted(r["id"] for r in heavy) == sorted([run["id"], given.json()["id"]])
    assert http.get("/jr/runs", params={"queue": "default"}).json() == []
    assert http.get("/jr/runs", params={"priority": "x"}).status_code == 422


def test_a_failed_run_is_retried_and_a_succeeded_one_is_409(
    setup: tuple[TestClient, str],
) -> None:
    http, url = setup
    http.post("/jr/jobs/report/runs", json={})
    failed = finish_with(url, "report", "failed", ERROR)
    again = http.post(f"/jr/runs/{failed}/retry")
    assert again.status_code == 202 and again.json()["retry_of"] == failed
    assert http.post(f"/jr/runs/{failed}/retry").status_code == 409  # its retry is queued
    http.post("/jr/jobs/adhoc/runs", json={})
    done = finish_with(url, "adhoc", "succeeded")
    assert http.post(f"/jr/runs/{done}/retry").status_code == 409
    assert http.post("/jr/runs/999999/retry").status_code == 404


def test_runs_are_filtered_and_shown(setup: tuple[TestClient, str]) -> None:
    http, url = setup
    a = http.post("/jr/jobs/report/runs", json={}).json()
    b = http.post("/jr/jobs/adhoc/runs", json={}).json()
    assert [r["id"] for r in http.get("/jr/runs").json()] == [b["id"], a["id"]]
    assert [r["id"] for r in http.get("/jr/runs", params={"job": "report"}).json()] == [a["id"]]
    assert [r["id"] for r in http.get("/jr/runs", params={"limit": 1}).json()] == [b["id"]]
    assert http.get("/jr/runs", params={"status": "failed"}).json() == []
    failed_id = finish_with(url, "report", "failed", ERROR)
    failed = http.get("/jr/runs", params={"status": "failed"}).json()
    assert [r["id"] for r in failed] == [failed_id]
    assert failed[0]["error"] == {"type": "ValueError", "message": "boom", "traceback": None}
    assert http.get("/jr/runs", params={"status": "bogus"}).status_code == 422
    assert http.get("/jr/runs", params={"limit": 0}).status_code == 422
    assert http.get("/jr/runs/999999").status_code == 404
    assert http.get("/jr/runs/not-a-number").status_code == 422


def test_cancel_queued_then_again_and_finished_is_409(setup: tuple[TestClient, str]) -> None:
    http, url = setup
    run = http.post("/jr/jobs/report/runs", json={}).json()
    cancelled = http.post(f"/jr/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200
    assert (cancelled.json()["status"], cancelled.json()["reason"]) == (
        "cancelled",
        "cancelled by request",
    )
    assert http.post(f"/jr/runs/{run['id']}/cancel").status_code == 200  # idempotent
    http.post("/jr/jobs/adhoc/runs", json={})
    http.post("/jr/jobs/adhoc/runs", json={})
    done = finish_with(url, "adhoc", "succeeded")
    conflict = http.post(f"/jr/runs/{done}/cancel")
    assert conflict.status_code == 409 and "succeeded" in conflict.json()["detail"]
    assert http.get(f"/jr/runs/{done}").json()["status"] == "succeeded"
    assert http.post("/jr/runs/999999/cancel").status_code == 404


def test_auth_dependencies_guard_every_route(sqlite_url: str) -> None:
    publish(sqlite_url)

    def require_token(authorization: str | None = Header(None)) -> None:
        if authorization != "Bearer s3cret":
            raise HTTPException(401, "unauthorized")

    with Client.from_url(sqlite_url) as client:
        app = make_app(client, dependencies=[Depends(require_token)])
        http = TestClient(app)
        given = {"{name}": "report", "{job}": "report", "{key}": "k", "{run_id}": "1"}
        paths = http.get("/openapi.json").json()["paths"]
        routes = [
            (method, functools.reduce(lambda p, kv: p.replace(*kv), given.items(), path))
            for path, ops in paths.items()
            for method in ops
        ]
        assert len(routes) >= 14  # every route of the router, the schedules' included
        for method, path in routes:
            body = {"job": "report", "key": "k", "cron": "* * * * *"}
            assert http.request(method, path, json=body).status_code == 401, (method, path)
        assert client.list_runs() == [], "a refused enqueue wrote nothing"
        assert client.list_schedules(ended=True) == [], "a refused create wrote nothing"
        ok = http.post("/jr/jobs/report/runs", json={}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 202


def test_correlation_id_comes_from_structlog_contextvars_or_the_given_callable(
    sqlite_url: str,
) -> None:
    publish(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        app = make_app(client)

        @app.middleware("http")
        async def bind(request: Any, call_next: Any) -> Any:
            with structlog.contextvars.bound_contextvars(correlation_id="req-77"):
                return await call_next(request)

        run = TestClient(app).post("/jr/jobs/report/runs", json={}).json()
        assert run["correlation_id"] == "req-77"
        assert client.list_runs(correlation_id="req-77")[0].id == run["id"]

        custom = make_app(client, correlation_id=lambda request: request.headers.get("X-Trace"))
        run = TestClient(custom).post("/jr/jobs/report/runs", headers={"X-Trace": "t-1"}).json()
        assert run["correlation_id"] == "t-1"


def test_tracebacks_are_shown_only_when_asked(sqlite_url: str) -> None:
    publish(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        client.enqueue("report")
        run_id = finish_with(sqlite_url, "report", "failed", ERROR)
        hidden = TestClient(make_app(client)).get(f"/jr/runs/{run_id}").json()
        shown = TestClient(make_app(client, include_traceback=True)).get(f"/jr/runs/{run_id}")
        assert hidden["error"]["traceback"] is None
        assert shown.json()["error"]["traceback"] == ERROR["traceback"]


def test_openapi_documents_routes_models_and_errors(sqlite_url: str) -> None:
    with Client.from_url(sqlite_url) as client:
        schema = TestClient(make_app(client)).get("/openapi.json").json()
    paths = schema["paths"]
    assert set(paths) == {
        "/jr/jobs",
        "/jr/jobs/{name}",
        "/jr/jobs/{name}/runs",
        "/jr/runs",
        "/jr/runs/{run_id}",
        "/jr/runs/{run_id}/cancel",
        "/jr/runs/{run_id}/retry",
        "/jr/schedules",
        "/jr/schedules/{job}/{key}",
        "/jr/schedules/{job}/{key}/pause",
        "/jr/schedules/{job}/{key}/resume",
    }
    assert set(paths["/jr/schedules/{job}/{key}"]) == {"get", "patch", "delete"}
    body_errors = {"400", "413", "422"}
    assert set(paths["/jr/schedules"]["post"]["responses"]) == {"201", "404", "409", *body_errors}
    assert set(paths["/jr/jobs/{name}/runs"]["post"]["responses"]) == {"202", "404", *body_errors}
    models = schema["components"]["schemas"]
    assert {"RunOut", "JobOut", "EnqueueRequest", "ErrorOut", "RunErrorOut"} <= set(models)
    assert {"ScheduleOut", "ScheduleCreate", "ScheduleChange"} <= set(models)
    assert set(models["RunOut"]["properties"]["status"]["enum"]) == {
        "queued",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "lost",
        "skipped",
    }
    enqueue = paths["/jr/jobs/{name}/runs"]["post"]
    assert set(enqueue["responses"]) == {"202", "404", "400", "413", "422"}
    assert enqueue["responses"]["202"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RunOut"
    }
    body = enqueue["requestBody"]["content"]["application/json"]["schema"]
    assert "EnqueueRequest" in str(body)
    assert "409" in paths["/jr/runs/{run_id}/cancel"]["post"]["responses"]
    list_params = {p["name"] for p in paths["/jr/runs"]["get"]["parameters"]}
    assert list_params == {"job", "status", "limit", "correlation_id", "queue", "priority"}
    assert all(op["tags"] == ["jobrunner"] for p in paths.values() for op in p.values())


def test_create_router_refuses_anything_but_a_jobrunner_client() -> None:
    with pytest.raises(TypeError, match="Client or AsyncClient"):
        create_router("postgresql://nope")  # type: ignore[arg-type]


def test_schedules_are_created_changed_and_ended_over_http(
    setup: tuple[TestClient, str],
) -> None:
    http, _ = setup
    body = {"job": "adhoc", "key": "user-1", "cron": "0 9 * * 1", "kwargs": {"user": 1}}
    made = http.post("/jr/schedules", json=body)
    assert made.status_code == 201, made.text
    assert (made.json()["version"], made.json()["status"]) == (1, "active")
    assert http.post("/jr/schedules", json=body).status_code == 409
    for bad, said in (
        ({**body, "key": "x", "cron": "0 25 * * *"}, "cron"),
        ({**body, "key": "x", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({**body, "key": "x/y"}, "key"),
        ({**body, "key": "x", "catch_up": "never"}, "catch_up"),
        ({**body, "key": "x", "extra": 1}, "extra"),
        ({"job": "adhoc", "key": "x"}, "cron"),
    ):
        refused = http.post("/jr/schedules", json=bad)
        assert refused.status_code == 422 and said in refused.text, (bad, refused.text)
    assert http.post("/jr/schedules", json={**body, "job": "nope"}).status_code == 404
    path = "/jr/schedules/adhoc/user-1"
    changed = http.patch(path, json={"cron": "30 8 * * 1", "timezone": "Asia/Tokyo"})
    assert changed.status_code == 200 and changed.json()["version"] == 2, changed.text
    assert http.patch(path, json={"crn": "x"}).status_code == 422
    assert http.post(f"{path}/pause").json()["status"] == "paused"
    assert http.post(f"{path}/resume").json()["status"] == "active"
    assert [s["key"] for s in http.get("/jr/schedules?job=adhoc").json()] == ["user-1"]
    assert http.delete(path).json()["status"] == "deleted"
    assert http.get("/jr/schedules").json() == []
    assert [s["status"] for s in http.get("/jr/schedules?all=true").json()] == ["deleted"]
    assert http.get(path).json()["version"] == 5
    assert http.post(f"{path}/pause").status_code == 404
    assert http.get("/jr/schedules/adhoc/nobody").status_code == 404
