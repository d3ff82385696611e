"""The HTTP surfaces fuzzed from their own OpenAPI schemas (schemathesis over the ASGI apps, on
a real PostgreSQL): the router (with its schedules) and the dashboard. No request, however odd,
gets a server error or a status its schema does not document, every response matches its
schema, and a request that violates the schema is refused.

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
from jobrunner.web import create_dashboard
from tests.integration.test_dashboard import seed
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
DASHBOARD = Served()
CSRF = "fuzz-csrf-token"


def router_app(client: Client) -> FastAPI:
    app = FastAPI()
    app.include_router(create_router(client), prefix="/jr")
    return app


def dashboard_app(client: Client) -> FastAPI:
    return create_dashboard(client, dependencies=[])  # every action allowed: they run


def with_examples(openapi: dict[str, Any], **examples: list[Any]) -> dict[str, Any]:
    """The schema with examples of path parameters that the fixtures' databases hold (ids
    begin at 1), so that the fuzzer reaches what a found job, run or schedule does too."""
    for operations in openapi["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "path" and parameter["name"] in examples:
                    parameter["examples"] = {
                        str(i): {"value": v} for i, v in enumerate(examples[parameter["name"]])
                    }
    return openapi


FOUND = {
    "name": ["adhoc", "report", "nightly"],
    "job": ["adhoc", "report"],
    "key": ["hourly"],
    "run_id": [1, 2, 3, 4],
}
# The schemas do not depend on the database: read them off apps over a client never used.
schema = schemathesis.openapi.from_dict(
    with_examples(router_app(Client.from_url("sqlite://")).openapi(), **FOUND)
)
schema.app = SERVED
dashboard_schema = schemathesis.openapi.from_dict(
    with_examples(dashboard_app(Client.from_url("sqlite://")).openapi(), **FOUND)
)
dashboard_schema.app = DASHBOARD
FUZZED = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    derandomize=True,
)


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


@pytest.fixture(scope="module")
def dashboard_served(pg_server_url: str, pg_template: str) -> Iterator[Client]:
    """The dashboard over a database with jobs, slots, runs, a worker and a schedule."""
    from tests.conftest import drop_pg_database, new_pg_database

    url = new_pg_database(pg_server_url, pg_template)
    seed(url)
    client = Client.from_url(url)
    client.create_schedule("adhoc", "0 * * * *", key="hourly")
    DASHBOARD.app = dashboard_app(client)
    yield client
    client.close()
    drop_pg_database(pg_server_url, url)


@pytest.mark.postgres
@schema.parametrize()
@FUZZED
def test_the_router_answers_every_request_as_its_schema_says(case: Any, served: Client) -> None:
    case.call_and_validate(checks=CHECKS)


@pytest.mark.postgres
@dashboard_schema.parametrize()
@FUZZED
def test_the_dashboard_answers_every_request_as_its_schema_says(
    case: Any, dashboard_served: Client
) -> None:
    """With the CSRF cookie its form repeats, so that every action runs past the check."""
    if case.body is None or isinstance(case.body, dict):
        case.body = {**(case.body or {}), "csrf": CSRF}
    case.call_and_validate(checks=CHECKS, cookies={"jr_csrf": CSRF})
