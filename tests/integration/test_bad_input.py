"""Bad input is refused as bad input, on every database and through every interface: ids out
of range are "not found", kwargs over the size limit, nested too deep or holding a NUL are
refused before anything is written, and texts the store cannot keep never reach it."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from jobrunner import Client, JobNotFound, RunNotFound
from jobrunner.converters import MAX_JSON_DEPTH, MAX_KWARGS_SIZE
from jobrunner.errors import ArgumentsTooLarge, InvalidArguments
from jobrunner.http_input import MAX_BODY_SIZE
from jobrunner.store.history import MAX_RUN_ID
from tests.integration.test_fastapi import make_app, publish

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture
def client(db_url: str) -> Iterator[Client]:
    publish(db_url)
    with Client.from_url(db_url) as client:
        yield client


@pytest.mark.parametrize("run_id", [0, -1, MAX_RUN_ID + 1, 10**20, -(10**30)])
def test_a_run_id_out_of_range_is_not_found(client: Client, run_id: int) -> None:
    for call in (client.get_run, client.cancel_run, client.retry_run, client.wait):
        with pytest.raises(RunNotFound, match=f"no run with id {run_id}"):
            call(run_id)


BAD_KWARGS = [
    pytest.param({"blob": "x" * MAX_KWARGS_SIZE}, ArgumentsTooLarge, "over the limit", id="size"),
    pytest.param({"a": nested(MAX_JSON_DEPTH)}, InvalidArguments, "levels deep", id="depth"),
    pytest.param({"a": "nul\x00"}, InvalidArguments, "NUL", id="nul-value"),
    pytest.param({"k\x00": 1}, InvalidArguments, "NUL", id="nul-key"),
    pytest.param({"a": ["ok", {"b": "\x00"}]}, InvalidArguments, "NUL", id="nul-deep"),
]


@pytest.mark.parametrize(("kwargs", "error", "said"), BAD_KWARGS)
def test_kwargs_the_store_cannot_keep_are_refused_and_nothing_is_written(
    client: Client, kwargs: dict[str, Any], error: type[Exception], said: str
) -> None:
    with pytest.raises(error, match=said):
        client.enqueue("adhoc", kwargs)
    with pytest.raises(error, match=f"kwargs_list\\[1\\].*{said}"):
        client.enqueue_many("adhoc", [{}, kwargs])
    with pytest.raises(InvalidArguments, match=said):
        client.create_schedule("report", "0 * * * *", key="k", kwargs=kwargs)
    assert client.list_runs() == [] and client.list_schedules() == []


def test_kwargs_at_the_limits_are_kept(client: Client) -> None:
    head = len('{"blob": ""}')
    big = client.enqueue("adhoc", {"blob": "x" * (MAX_KWARGS_SIZE - head)})
    deep = client.enqueue("adhoc", {"a": nested(MAX_JSON_DEPTH - 1)})
    escaped = client.enqueue("adhoc", {"a": "\\u0000 is six characters, not a NUL"})
    assert client.get_run(big.id).kwargs["blob"] == "x" * (MAX_KWARGS_SIZE - head)
    assert client.get_run(deep.id).kwargs == {"a": nested(MAX_JSON_DEPTH - 1)}
    assert client.get_run(escaped.id).kwargs["a"].startswith("\\u0000")


@pytest.mark.parametrize(
    "options",
    [
        {"idempotency_key": "k\x00"},
        {"idempotency_key": "k" * 201},
        {"correlation_id": "c\x00"},
        {"concurrency_key": ""},
    ],
)
def test_texts_the_store_cannot_keep_are_refused(client: Client, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArguments, match=next(iter(options))):
        client.enqueue("adhoc", **options)
    assert client.list_runs() == []


@pytest.mark.parametrize("name", ["a\x00b", "", "x" * 201, "has space"])
def test_a_name_no_job_can_have_is_not_found(client: Client, name: str) -> None:
    for call in (client.enqueue, client.get_job):
        with pytest.raises(JobNotFound):
            call(name)
    with pytest.raises(InvalidArguments, match="job filter"):
        client.list_runs(job="a\x00")


def test_the_router_answers_bad_input_with_documented_statuses(sqlite_url: str) -> None:
    publish(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        http = TestClient(make_app(client))
        huge = {"kwargs": {"blob": "x" * (MAX_KWARGS_SIZE + 1)}}
        assert http.post("/jr/jobs/adhoc/runs", json=huge).status_code == 413
        over = {"kwargs": {"blob": "x" * (2 * MAX_KWARGS_SIZE)}}
        body = http.post("/jr/jobs/adhoc/runs", json=over)
        assert body.status_code == 413 and "bytes" in body.json()["detail"]
        for bad in ({"run_at": 0}, {"run_at": True}, {"kwargs": {"a": "\x00"}}):
            assert http.post("/jr/jobs/adhoc/runs", json=bad).status_code == 422, bad
        missing = http.get(f"/jr/runs/{10**20}")
        assert missing.status_code == 404 and str(10**20) in missing.json()["detail"]
        assert http.post(f"/jr/runs/{10**25}/cancel").status_code == 404
        assert http.get("/jr/runs", params={"job": "a\x00"}).status_code == 422
        assert http.get("/jr/runs").json() == []


def test_a_streamed_body_over_the_limit_is_refused_before_it_is_read(sqlite_url: str) -> None:
    """Without Content-Length (chunked), the body is counted as it arrives: 413 from the
    route (not the store's kwargs check, which would need all of it read), nothing written."""
    publish(sqlite_url)

    def chunks() -> Iterator[bytes]:
        yield b'{"kwargs": {"blob": "'
        for _ in range(1000):
            yield b"x" * 16384
        yield b'"}}'

    with Client.from_url(sqlite_url) as client:
        http = TestClient(make_app(client))
        answer = http.post(
            "/jr/jobs/adhoc/runs", content=chunks(), headers={"content-type": "application/json"}
        )
        assert "transfer-encoding" in answer.request.headers
        said = answer.json()["detail"]
        assert answer.status_code == 413 and f"is over {MAX_BODY_SIZE:,} bytes" in said
        assert http.get("/jr/runs").json() == []
