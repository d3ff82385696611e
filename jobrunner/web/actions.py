"""The dashboard's actions (POST forms, behind the session, the read-only switch and the
CSRF check of `jobrunner.web.app`): trigger a job with kwargs, pause and resume a job or a
runtime schedule, delete a runtime schedule, cancel and retry a run.

Each writes what the CLI's command would, through the same store call, and answers with a
redirect to the page of what changed (`?done=` says what was done: 303, so a reload does not
repeat it). Bad input is an error page with its 4xx status (the store's refusals through the
dashboard's handler of them), and nothing is written.
"""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from jobrunner.converters import MAX_KWARGS_SIZE
from jobrunner.errors import ArgumentsTooLarge, BadInput
from jobrunner.store.tables import FINAL_STATUSES
from jobrunner.web.app import ACTION_ANSWERS, Routes, dashboard, error_page

MAX_KWARGS = 2 * MAX_KWARGS_SIZE  # characters of the trigger form's JSON (the store checks)


def action_routes() -> APIRouter:
    router = APIRouter(route_class=Routes)
    for path, handler in (
        ("/jobs/{name}/trigger", trigger),
        ("/jobs/{name}/pause", pause_job),
        ("/jobs/{name}/resume", resume_job),
        ("/runs/{run_id}/cancel", cancel_run),
        ("/runs/{run_id}/retry", retry_run),
        ("/schedules/{job}/{key}/pause", pause_schedule),
        ("/schedules/{job}/{key}/resume", resume_schedule),
        ("/schedules/{job}/{key}/delete", delete_schedule),
    ):
        router.add_api_route(
            path, handler, methods=["POST"], response_class=RedirectResponse, status_code=303,
            responses=ACTION_ANSWERS,
        )  # fmt: skip
    return router


def _done(request: Request, page: str, message: str, **params: Any) -> Response:
    url = request.url_for(page, **params).path + "?" + urlencode({"done": message})
    return RedirectResponse(url, status_code=303)


def parse_kwargs(text: str) -> dict[str, Any]:
    """The trigger form's kwargs: a JSON object (empty: none); BadInput otherwise."""
    if not text.strip():
        return {}
    if len(text.encode()) > MAX_KWARGS:
        raise ArgumentsTooLarge(f"kwargs: at most {MAX_KWARGS:,} bytes of JSON")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"kwargs is not valid JSON: {exc.msg} at column {exc.colno}") from None
    except RecursionError:
        raise BadInput("kwargs: nested too deeply") from None
    if not isinstance(value, dict):
        raise BadInput('kwargs must be a JSON object like {"region": "eu"}')
    return value


def trigger(
    request: Request,
    name: str,
    kwargs: Annotated[str, Form()] = "",
) -> Response:
    """Queue a run of the job now (as `jobrunner jobs trigger NAME --kwargs ...`)."""
    run = dashboard(request).store.enqueue(name, parse_kwargs(kwargs))
    return _done(request, "run", f"queued run {run.id} of {name}", run_id=run.id)


def _set_paused(request: Request, name: str, paused: bool) -> Response:
    dashboard(request).store.set_paused(name, paused)
    said = "paused" if paused else "resumed"
    return _done(request, "job", f"{name} {said}", name=name)


def pause_job(request: Request, name: str) -> Response:
    return _set_paused(request, name, True)


def resume_job(request: Request, name: str) -> Response:
    return _set_paused(request, name, False)


def cancel_run(request: Request, run_id: int) -> Response:
    run = dashboard(request).store.cancel_run(run_id)
    if run.status in FINAL_STATUSES and run.status != "cancelled":
        return error_page(request, 409, f"run {run_id} already finished: {run.status}")
    said = "cancelled" if run.status == "cancelled" else "cancel requested (at its worker)"
    return _done(request, "run", f"run {run_id}: {said}", run_id=run_id)


def retry_run(request: Request, run_id: int) -> Response:
    run = dashboard(request).store.retry_run(run_id)
    return _done(request, "run", f"queued run {run.id}, retrying {run_id}", run_id=run.id)


def _schedule(request: Request, job: str, key: str, method: str, *args: Any) -> Response:
    row = getattr(dashboard(request).store, method)(job, key, *args)
    said = f"schedule {key!r} of {job}: {row.status} (version {row.version})"
    return _done(request, "schedules", said)


def pause_schedule(request: Request, job: str, key: str) -> Response:
    return _schedule(request, job, key, "set_schedule_paused", True)


def resume_schedule(request: Request, job: str, key: str) -> Response:
    return _schedule(request, job, key, "set_schedule_paused", False)


def delete_schedule(request: Request, job: str, key: str) -> Response:
    return _schedule(request, job, key, "delete_schedule")
