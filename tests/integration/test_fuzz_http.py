"""The HTTP router fuzzed from its own OpenAPI schema (schemathesis over the ASGI app, on a real
PostgreSQL): no request, however odd, gets a server error or a status its schema does not
document, every response matches its schema, and a request that violates the schema is refused.

Valid requests may still be refused with 4xx (a job's own checks of its kwargs are not in the
schema), so acceptance of valid data is not asserted here: the router's own tests do that.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from jobrunner import Client
from jobrunner.fastapi import create_router
from tests.integration.test_fastapi import publish

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    negative_data_rejection,
]
EXAMPLES = 60  # per operation: about 1,100 requests over the router's 18 operations


class Served:
    """The ASGI app the fuzzer calls: the one over the current test's database."""

    app: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


SERVED = Served()


def router_app(client: Client) -> FastAPI:
    app = FastAPI()
    app.include_router(create_router(client), prefix="/jr")
    return app


# The schema does not depend on the database: read it off an app over a client never used.
schema = schemathesis.openapi.from_dict(router_app(Client.from_url("sqlite://")).openapi())
schema.app = SERVED


@pytest.fixture(scope="module")
def served(pg_server_url: str, pg_template: str) -> Iterator[Client]:
    """The router over a database with jobs, runs and a schedule to find."""
    from tests.conftest import drop_pg_database, new_pg_database

    url = new_pg_database(pg_server_url, pg_template)
    publish(url)
    client = Client.from_url(url)
    for region in ("eu", "us"):
        client.enqueue("adhoc", {"region": region})
    client.create_schedule("report", "0 * * * *", key="hourly")
    SERVED.app = router_app(client)
    yield client
    client.close()
    drop_pg_database(pg_server_url, url)


@pytest.mark.postgres
@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)
def test_the_router_answers_every_request_as_its_schema_says(case: Any, served: Client) -> None:
    case.call_and_validate(checks=CHECKS)
