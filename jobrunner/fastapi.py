"""An `APIRouter` for web apps to enqueue and observe runs (`pip install jobrunner[fastapi]`).

The web app never runs jobs: it only enqueues runs by job name and reads them. Mount it with
the host app's own auth::

    from fastapi import Depends, FastAPI
    from jobrunner import AsyncClient
    from jobrunner.fastapi import create_router

    client = AsyncClient.from_url(DATABASE_URL)
    app = FastAPI()
    app.include_router(
        create_router(client, dependencies=[Depends(require_admin)]), prefix="/jobrunner"
    )

Routes: `GET /jobs`, `GET /jobs/{name}`, `POST /jobs/{name}/runs` (202), `GET /runs`,
`GET /runs/{run_id}`, `POST /runs/{run_id}/cancel`, `POST /runs/{run_id}/retry`, and the
runtime schedules' `/schedules` routes (`jobrunner.schedule_router`). Unknown jobs, runs and
schedules are 404, a bad body or query is 422, cancelling a run that already finished,
retrying one that succeeded or creating a schedule whose key is in use is 409.

The correlation id of an enqueued run is, by default, the `correlation_id` bound in
structlog's contextvars (a request-id middleware binds it, see `examples/fastapi_app.py`);
pass `correlation_id=` to take it from the request another way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args
from zoneinfo import ZoneInfo

import structlog
from fastapi import APIRouter, Body, HTTPException, Query, Request, status
from fastapi.params import Depends as DependsParam
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from jobrunner.client import AsyncClient, Client
from jobrunner.converters import PRIORITY_RANGE
from jobrunner.http_input import (
    BODY,
    CONFLICT,
    MAX_BODY_SIZE,
    NOT_FOUND,
    REFUSED,
    ErrorOut,
    JobPath,
    RefusedOut,
    TextQuery,
    Timestamp,
    answer,
    sized_route,
    text,
)
from jobrunner.records import CatalogEntry, Run
from jobrunner.schedule import Schedule
from jobrunner.schedule_router import ScheduleChange, ScheduleCreate, ScheduleOut, schedule_routes
from jobrunner.store.tables import FINAL_STATUSES, RUN_STATUSES, TRIGGERS

__all__ = [
    "EnqueueRequest",
    "ErrorOut",
    "JobOut",
    "RefusedOut",
    "RunOut",
    "ScheduleChange",
    "ScheduleCreate",
    "ScheduleOut",
    "create_router",
]

RunStatus = Literal[
    "queued", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "skipped"
]
Trigger = Literal["schedule", "manual", "retry"]
assert get_args(RunStatus) == RUN_STATUSES and get_args(Trigger) == TRIGGERS


class RunErrorOut(BaseModel):
    """Why a run failed. `traceback` is only included when the router is built with
    `include_traceback=True` (it may reveal internals to web clients)."""

    type: str
    message: str
    traceback: str | None = None


class RunOut(BaseModel):
    """One attempt to run a job (a row of `job_runs`). Times are UTC."""

    id: int
    job_name: str
    trigger: Trigger
    scheduled_for: datetime | None = Field(description="The cron slot; null for manual runs.")
    run_at: datetime = Field(description="When the run is (or was) due.")
    status: RunStatus
    reason: str | None = Field(description="Why it was skipped or cancelled, if it was.")
    attempt: int
    max_attempts: int
    worker_id: str | None
    kwargs: dict[str, Any]
    enqueued_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: RunErrorOut | None
    cancel_requested: bool
    idempotency_key: str | None
    correlation_id: str | None
    retry_of: int | None = Field(description="The run this one retries.")
    priority: int = Field(description="Higher runs first (default 0, or the job's).")
    concurrency_key: str | None = Field(
        default=None, description="The key value its job's per-key and rate limits count by."
    )
    result: Any = Field(
        default=None, description="The job's return value (JSON) when it succeeded with one."
    )
    result_note: str | None = Field(
        default=None, description="Why a return value was not kept (not JSON, or too large)."
    )
    schedule_key: str = Field(
        default="", description="A runtime schedule's slot: the schedule's key ('' otherwise)."
    )
    schedule_version: int | None = Field(
        default=None, description="The version of the runtime schedule that decided the slot."
    )
    traceparent: str | None = Field(
        default=None,
        description="W3C traceparent of the span that enqueued it (the run's span's parent).",
    )


class JobOut(BaseModel):
    """A job the workers published in the catalog."""

    name: str
    cron: str | None = Field(description="Null for a job that is only enqueued.")
    timezone: str
    paused: bool
    next_fire: datetime | None = Field(description="The next cron slot (UTC), if scheduled.")
    definition_hash: str
    definition: dict[str, Any]
    updated_at: datetime | None


class EnqueueRequest(BaseModel):
    """Arguments of a new run. Job code is never sent: jobs are referenced by name."""

    model_config = ConfigDict(extra="forbid")

    kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments (JSON), merged over the job's own."
    )
    run_at: Timestamp | None = Field(
        default=None, description="Run at or after this time (with a UTC offset); default now."
    )
    idempotency_key: str | None = text(
        default=None,
        min_length=1,
        description="A repeated key (per job) returns the run the first request created.",
    )
    priority: int | None = Field(
        default=None,
        ge=PRIORITY_RANGE[0],
        le=PRIORITY_RANGE[1],
        strict=True,
        description="Higher runs first; default the job's `priority` (else 0).",
    )
    concurrency_key: str | None = text(
        default=None,
        min_length=1,
        description="The run's concurrency key value; default the kwarg named by the job's "
        "`concurrency_key`. A job with a key refuses a run without one (422).",
    )


def _run_out(run: Run, include_traceback: bool) -> RunOut:
    out = RunOut.model_validate(run, from_attributes=True)
    if out.error is not None and not include_traceback:
        out.error.traceback = None
    return out


def _job_out(entry: CatalogEntry) -> JobOut:
    next_fire = None
    if entry.cron is not None:
        next_fire = Schedule(entry.cron, ZoneInfo(entry.timezone)).next_after(datetime.now(UTC))
    return JobOut(
        name=entry.name,
        cron=entry.cron,
        timezone=entry.timezone,
        paused=entry.paused,
        next_fire=next_fire,
        definition_hash=entry.config_hash,
        definition=dict(entry.definition),
        updated_at=entry.updated_at,
    )


def _default_correlation_id(_request: Request) -> str | None:
    value = structlog.contextvars.get_contextvars().get("correlation_id")
    return None if value is None else str(value)


class _Calls:
    """The same awaitable calls over an AsyncClient, or a Client run in the thread pool."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client

    async def __call__(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(self.client, method)
        if isinstance(self.client, AsyncClient):
            return await fn(*args, **kwargs)
        return await run_in_threadpool(fn, *args, **kwargs)


def create_router(
    client: Client | AsyncClient,
    dependencies: Sequence[DependsParam] | None = None,
    prefix: str = "",
    *,
    tags: Sequence[str] = ("jobrunner",),
    include_traceback: bool = False,
    correlation_id: Callable[[Request], str | None] | None = None,
) -> APIRouter:
    """An APIRouter to enqueue and observe runs through `client`.

    `dependencies` run before every route (the host app's auth: a dependency that raises
    `HTTPException(401)` refuses the request). An AsyncClient is preferred; a sync Client runs
    in the thread pool. `correlation_id(request)` gives the id stored on enqueued runs.
    """
    if not isinstance(client, Client | AsyncClient):
        raise TypeError(f"client must be a jobrunner Client or AsyncClient, got {client!r}")
    call = _Calls(client)
    router = APIRouter(
        prefix=prefix,
        dependencies=list(dependencies or ()),
        tags=list(tags),
        route_class=sized_route(MAX_BODY_SIZE),
    )
    _job_routes(router, call, include_traceback, correlation_id or _default_correlation_id)
    _run_routes(router, call, include_traceback)
    _retry_route(router, call, include_traceback)
    schedule_routes(router, call)
    return router


def _job_routes(
    router: APIRouter,
    call: _Calls,
    include_traceback: bool,
    get_correlation_id: Callable[[Request], str | None],
) -> None:
    """`GET /jobs`, `GET /jobs/{name}`, `POST /jobs/{name}/runs`."""

    @router.get("/jobs", response_model=list[JobOut], summary="List jobs")
    async def list_jobs() -> list[JobOut]:
        """Every job in the catalog, by name."""
        return [_job_out(e) for e in await call("list_jobs")]

    @router.get(
        "/jobs/{name}",
        response_model=JobOut,
        responses={**NOT_FOUND, **REFUSED},
        summary="Show a job",
    )
    async def get_job(name: JobPath) -> JobOut:
        """One job of the catalog."""
        return _job_out(await answer(call("get_job", name)))

    @router.post(
        "/jobs/{name}/runs",
        response_model=RunOut,
        status_code=status.HTTP_202_ACCEPTED,
        responses={**NOT_FOUND, **BODY},
        summary="Enqueue a run",
    )
    async def enqueue(
        request: Request, name: JobPath, body: Annotated[EnqueueRequest | None, Body()] = None
    ) -> RunOut:
        """Queue a run of the job; a worker starts it. Returns the queued run (202)."""
        body = body or EnqueueRequest()
        pending = call(
            "enqueue",
            name,
            body.kwargs,
            run_at=body.run_at,
            idempotency_key=body.idempotency_key,
            correlation_id=get_correlation_id(request),
            priority=body.priority,
            concurrency_key=body.concurrency_key,
        )
        return _run_out(await answer(pending), include_traceback)


def _run_routes(router: APIRouter, call: _Calls, include_traceback: bool) -> None:
    """`GET /runs`, `GET /runs/{run_id}`, `POST /runs/{run_id}/cancel` and `/retry`."""

    @router.get("/runs", response_model=list[RunOut], responses=REFUSED, summary="List runs")
    async def list_runs(
        job: TextQuery = None,
        status_: Annotated[RunStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        correlation_id: TextQuery = None,
        queue: TextQuery = None,
        priority: Annotated[int | None, Query(ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])] = None,
    ) -> list[RunOut]:
        """Runs newest first, filtered (queue: runs of the jobs of that queue)."""
        runs = await answer(
            call(
                "list_runs",
                job=job,
                status=status_,
                limit=limit,
                correlation_id=correlation_id,
                queue=queue,
                priority=priority,
            )
        )
        return [_run_out(r, include_traceback) for r in runs]

    @router.get(
        "/runs/{run_id}",
        response_model=RunOut,
        responses={**NOT_FOUND, **REFUSED},
        summary="Show a run",
    )
    async def get_run(run_id: int) -> RunOut:
        """One run (404 for an id no run has, whatever its size)."""
        return _run_out(await answer(call("get_run", run_id)), include_traceback)

    @router.post(
        "/runs/{run_id}/cancel",
        response_model=RunOut,
        responses={**NOT_FOUND, **CONFLICT, **REFUSED},
        summary="Cancel a run",
    )
    async def cancel_run(run_id: int) -> RunOut:
        """Cancel a queued run at once; a running run is cancelled by its worker at its next
        heartbeat (`cancel_requested` is true until then). 409 if the run already finished."""
        run: Run = await answer(call("cancel_run", run_id))
        if run.status in FINAL_STATUSES and run.status != "cancelled":
            raise HTTPException(
                status.HTTP_409_CONFLICT, f"run {run_id} already finished: {run.status}"
            )
        return _run_out(run, include_traceback)


def _retry_route(router: APIRouter, call: _Calls, include_traceback: bool) -> None:
    """`POST /runs/{run_id}/retry`."""

    @router.post(
        "/runs/{run_id}/retry",
        response_model=RunOut,
        status_code=status.HTTP_202_ACCEPTED,
        responses={**NOT_FOUND, **CONFLICT, **REFUSED},
        summary="Retry a run",
    )
    async def retry_run(run_id: int) -> RunOut:
        """Queue a run that ended without success again, as a new attempt linked to it
        (`retry_of`); 409 if it succeeded or an attempt of it is still queued or running."""
        return _run_out(await answer(call("retry_run", run_id)), include_traceback)
