"""The `/schedules` routes of `jobrunner.fastapi.create_router`: runtime schedules, behind
the same dependencies (the host app's auth) as every other route.

`GET /schedules` (`?job=`, `?all=true` for deleted and retired ones too), `POST /schedules`
(201; 404 for an unknown job, 409 for a key in use, 422 for bad settings or kwargs),
`GET|PATCH|DELETE /schedules/{job}/{key}`, `POST /schedules/{job}/{key}/pause` and `/resume`
(404 for a schedule that is not live).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Query, status
from pydantic import BaseModel, ConfigDict, Field

from jobrunner.http_input import (
    BODY,
    CONFLICT,
    NOT_FOUND,
    REFUSED,
    JobPath,
    KeyPath,
    TextQuery,
    answer,
    text,
)
from jobrunner.records import ScheduleRow
from jobrunner.runtime import KEY_PATTERN, MAX_SCHEDULES_LIST

Call = Callable[..., Awaitable[Any]]
CatchUp = Literal["skip", "latest", "all"]
Overlap = Literal["forbid", "allow", "replace"]
KEY = f"^{KEY_PATTERN}$"


class ScheduleOut(BaseModel):
    """A schedule made at runtime. Times are UTC; null settings are the job's own."""

    job_name: str
    key: str
    cron: str
    timezone: str | None
    kwargs: dict[str, Any]
    catch_up: CatchUp | None
    overlap: Overlap | None
    status: Literal["active", "paused", "deleted", "retired"]
    status_note: str | None
    version: int = Field(description="Grows with every change; each slot records its own.")
    next_fire_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ScheduleChange(BaseModel):
    """The settings to change (`PATCH`); a null one goes back to the job's."""

    model_config = ConfigDict(extra="forbid")

    cron: str | None = text(default=None, min_length=1)
    timezone: str | None = Field(default=None, max_length=64, pattern=r"^[^\x00]*$")
    kwargs: dict[str, Any] | None = None
    catch_up: CatchUp | None = None
    overlap: Overlap | None = None


class ScheduleCreate(ScheduleChange):
    """A new schedule of a catalogued job, keyed by (job, key)."""

    job: str = text(min_length=1)
    key: str = Field(pattern=KEY)
    cron: str = text(min_length=1)


def _out(row: ScheduleRow) -> ScheduleOut:
    return ScheduleOut.model_validate(row, from_attributes=True)


async def _answer(pending: Awaitable[ScheduleRow]) -> ScheduleOut:
    """The schedule, or the HTTP error its call raised."""
    return _out(await answer(pending))


ERRORS = {**NOT_FOUND, **REFUSED}


def schedule_routes(router: APIRouter, call: Call) -> None:
    """Add the `/schedules` routes to `router`; `call(method, ...)` runs a client method."""
    _read_routes(router, call)

    @router.post(
        "/schedules",
        response_model=ScheduleOut,
        status_code=status.HTTP_201_CREATED,
        responses={**NOT_FOUND, **CONFLICT, **BODY},
        summary="Create a schedule",
    )
    async def create_schedule(body: Annotated[ScheduleCreate, Body()]) -> ScheduleOut:
        """A schedule of a catalogued job; its slots begin after now."""
        settings = body.model_dump(exclude={"job", "key", "cron"})
        return await _answer(call("create_schedule", body.job, body.cron, key=body.key, **settings))

    @router.patch(
        "/schedules/{job}/{key}",
        response_model=ScheduleOut,
        responses={**NOT_FOUND, **BODY},
    )
    async def update_schedule(
        job: JobPath, key: KeyPath, body: Annotated[ScheduleChange, Body()]
    ) -> ScheduleOut:
        """Change a live schedule; the next slot not yet claimed follows the change."""
        changes = body.model_dump(exclude_unset=True)
        return await _answer(call("update_schedule", job, key, **changes))

    @router.post("/schedules/{job}/{key}/pause", response_model=ScheduleOut, responses=ERRORS)
    async def pause_schedule(job: JobPath, key: KeyPath) -> ScheduleOut:
        """Pause a live schedule: its slots are recorded skipped (paused)."""
        return await _answer(call("pause_schedule", job, key))

    @router.post("/schedules/{job}/{key}/resume", response_model=ScheduleOut, responses=ERRORS)
    async def resume_schedule(job: JobPath, key: KeyPath) -> ScheduleOut:
        """Resume a paused schedule."""
        return await _answer(call("resume_schedule", job, key))

    @router.delete("/schedules/{job}/{key}", response_model=ScheduleOut, responses=ERRORS)
    async def delete_schedule(job: JobPath, key: KeyPath) -> ScheduleOut:
        """End a live schedule (kept as deleted)."""
        return await _answer(call("delete_schedule", job, key))


def _read_routes(router: APIRouter, call: Call) -> None:
    """`GET /schedules` and `GET /schedules/{job}/{key}`."""

    @router.get(
        "/schedules", response_model=list[ScheduleOut], responses=REFUSED, summary="List schedules"
    )
    async def list_schedules(
        job: TextQuery = None,
        all_: Annotated[bool, Query(alias="all")] = False,
        limit: Annotated[int, Query(ge=1, le=MAX_SCHEDULES_LIST)] = 1000,
    ) -> list[ScheduleOut]:
        """Runtime schedules by job and key, at most `limit` (with `all`, also deleted and
        retired ones)."""
        found = await answer(call("list_schedules", job, ended=all_, limit=limit))
        return [_out(s) for s in found]

    @router.get("/schedules/{job}/{key}", response_model=ScheduleOut, responses=ERRORS)
    async def get_schedule(job: JobPath, key: KeyPath) -> ScheduleOut:
        """One schedule, whatever its status."""
        return await _answer(call("get_schedule", job, key))
