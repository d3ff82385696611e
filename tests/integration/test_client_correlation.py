"""Issue 8.1: without an explicit id, the clients take the request's correlation id from the
caller's context: structlog's contextvars by default, or a given ContextVar."""

from __future__ import annotations

import asyncio
from contextvars import ContextVar

import structlog

from jobrunner import AsyncClient, Client
from jobrunner.records import CatalogEntry
from tests.support import AllPorts

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)


def _catalog(url: str) -> None:
    store = AllPorts.from_url(url)
    entry = CatalogEntry(name="j", cron=None, timezone="UTC", config_hash="h", definition={})
    store.publish_catalog([entry], "test")
    store.close()


def test_sync_client_takes_the_id_from_structlog_then_a_contextvar(db_url: str) -> None:
    _catalog(db_url)
    with Client.from_url(db_url) as client:
        with structlog.contextvars.bound_contextvars(correlation_id="req-1"):
            assert client.enqueue("j").correlation_id == "req-1"
            assert client.enqueue("j", correlation_id="explicit").correlation_id == "explicit"
        assert client.enqueue("j").correlation_id is None
    with Client.from_url(db_url, correlation_from=REQUEST_ID) as client:
        token = REQUEST_ID.set("req-2")
        try:
            assert client.enqueue("j").correlation_id == "req-2"
        finally:
            REQUEST_ID.reset(token)
    with (
        Client.from_url(db_url, correlation_from=None) as client,
        structlog.contextvars.bound_contextvars(correlation_id="ignored"),
    ):
        assert client.enqueue("j").correlation_id is None


def test_async_client_takes_the_id_from_the_task_context(pg_url: str) -> None:
    _catalog(pg_url)

    async def main() -> list[str | None]:
        client = AsyncClient.from_url(pg_url)
        try:

            async def request(rid: str) -> str | None:
                structlog.contextvars.bind_contextvars(correlation_id=rid)
                return (await client.enqueue("j")).correlation_id

            return list(await asyncio.gather(request("a"), request("b")))
        finally:
            await client.close()

    assert asyncio.run(main()) == ["a", "b"]
