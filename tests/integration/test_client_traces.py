"""Issue 21, OpenTelemetry in the clients: a run stores the W3C traceparent of the span
current where it was enqueued (or the one given); a bad one is refused, nothing written;
retries keep it and carry the attempt's span as their link."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.sdk.trace import TracerProvider

from jobrunner import AsyncClient, Client, InvalidArguments
from jobrunner.records import CatalogEntry
from jobrunner.store import queue
from jobrunner.store.access import write
from tests.support import AllPorts

TRACER = TracerProvider().get_tracer("test")  # a real SDK tracer, not the global one


def _catalog(url: str) -> None:
    store = AllPorts.from_url(url)
    entry = CatalogEntry(
        name="j", cron=None, timezone="UTC", config_hash="h", definition={"retries": 1}
    )
    store.publish_catalog([entry], "test")
    store.close()


def _traceparent(span: object) -> str:
    ctx = span.get_span_context()  # type: ignore[attr-defined]
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def test_the_current_span_is_stored_as_the_runs_traceparent(db_url: str) -> None:
    _catalog(db_url)
    given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with Client.from_url(db_url) as client:
        assert client.enqueue("j").traceparent is None  # no span: none
        with TRACER.start_as_current_span("request") as span:
            run = client.enqueue("j")
            assert run.traceparent == _traceparent(span)
            assert client.get_run(run.id).traceparent == _traceparent(span)
            ids = client.enqueue_many("j", [{}, {"a": 1}])
            assert {client.get_run(i).traceparent for i in ids} == {_traceparent(span)}
            assert client.enqueue("j", traceparent=given).traceparent == given
        keyed = client.enqueue_many("j", [{}], idempotency_keys=["k"], traceparent=given)
        assert client.get_run(keyed[0]).traceparent == given


@pytest.mark.parametrize(
    "bad",
    [
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "",
        42,
    ],
)
def test_a_bad_traceparent_is_refused_and_nothing_is_written(db_url: str, bad: object) -> None:
    _catalog(db_url)
    with Client.from_url(db_url) as client:
        with pytest.raises(InvalidArguments, match="traceparent must be a W3C traceparent"):
            client.enqueue("j", traceparent=bad)  # type: ignore[arg-type]
        with pytest.raises(InvalidArguments, match="traceparent must be a W3C traceparent"):
            client.enqueue_many("j", [{}], traceparent=bad)  # type: ignore[arg-type]
        assert client.list_runs() == []


def test_a_retry_keeps_the_traceparent_and_links_the_attempt(db_url: str) -> None:
    _catalog(db_url)
    store = AllPorts.from_url(db_url)
    with Client.from_url(db_url) as client:
        with TRACER.start_as_current_span("request") as span:
            first = client.enqueue("j").id
        untraced = client.enqueue("j").id
    link = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    write(
        store.engine,
        queue.queue_retries(store.dialect, {first: 0, untraced: 0}, {first: link, untraced: link}),
    )
    retries = {r.retry_of: r for r in store.list_runs() if r.retry_of is not None}
    assert retries[first].traceparent == _traceparent(span)  # a sibling under the request
    assert retries[first].trace_link == link
    assert retries[untraced].traceparent == link  # no enqueuing span: a child of the attempt
    assert retries[untraced].trace_link == link
    store.close()


def test_the_async_client_takes_each_tasks_span(pg_url: str) -> None:
    _catalog(pg_url)

    async def main() -> list[tuple[str | None, str]]:
        client = AsyncClient.from_url(pg_url)
        try:

            async def request(name: str) -> tuple[str | None, str]:
                with TRACER.start_as_current_span(name) as span:
                    await asyncio.sleep(0)
                    return (await client.enqueue("j")).traceparent, _traceparent(span)

            return list(await asyncio.gather(request("a"), request("b")))
        finally:
            await client.close()

    got = asyncio.run(main())
    assert len({want for _, want in got}) == 2
    assert all(stored == want for stored, want in got)
