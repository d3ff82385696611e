"""The dashboard's pages (GET): overview, jobs, a job with its slot timeline, runs (filters,
keyset pagination), a run, runtime schedules, workers and leases; and the login form.

Each handler reads through the store (blocking: FastAPI runs these plain functions in its
thread pool) and renders one template. Nothing here writes, except the login's cookie.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

import jobrunner.web.views as views
from jobrunner.errors import JobNotFound
from jobrunner.ledger import Surroundings, account, slot_window
from jobrunner.schedule import Schedule
from jobrunner.store.tables import RUN_STATUSES
from jobrunner.units import parse_duration
from jobrunner.waits import job_queue, live
from jobrunner.web.app import (
    ACTION_ANSWERS,
    PAGE_ANSWERS,
    SESSION_AGE,
    SESSION_COOKIE,
    ZONE_COOKIE,
    Answers,
    Routes,
    dashboard,
    error_page,
    html,
    render,
    same,
    zone_choice,
)

PAGE = 50  # runs per page
MAX_HOURS = 48  # the longest timeline
MAX_STRIP = 720  # slots one strip shows (the newest)
LOGIN_ANSWERS: Answers = {
    303: {"description": "Logged in: to the overview, with the session cookie"},
    400: ACTION_ANSWERS[400],
    401: html("Wrong token (or the dashboard has none)"),
    413: ACTION_ANSWERS[413],
    422: ACTION_ANSWERS[422],
}


def page_routes() -> APIRouter:
    router = APIRouter(route_class=Routes)
    for path, handler, name in (
        ("/", overview, "overview"),
        ("/jobs", jobs_page, "jobs"),
        ("/jobs/{name}", job_page, "job"),
        ("/runs", runs_page, "runs"),
        ("/runs/{run_id}", run_page, "run"),
        ("/schedules", schedules_page, "schedules"),
        ("/workers", workers_page, "workers"),
        ("/prefs", prefs, "prefs"),
    ):
        router.add_api_route(
            path, handler, methods=["GET"], name=name, response_class=HTMLResponse,
            responses=PAGE_ANSWERS,
        )  # fmt: skip
        router.add_api_route(path, handler, methods=["HEAD"], include_in_schema=False)
    return router


def login_routes() -> APIRouter:
    router = APIRouter(route_class=Routes)
    routes: list[tuple[str, Any, str, str, Answers]] = [
        ("/login", login_form, "GET", "login_form", {200: html("The login form")}),
        ("/login", login, "POST", "login", LOGIN_ANSWERS),
        ("/logout", logout, "POST", "logout", {303: ACTION_ANSWERS[303]}),
    ]
    for path, handler, method, name, answers in routes:
        kind, code = (HTMLResponse, 200) if method == "GET" else (RedirectResponse, 303)
        router.add_api_route(
            path, handler, methods=[method], name=name, responses=answers, response_class=kind,
            status_code=code,
        )  # fmt: skip
    return router


def overview(request: Request) -> Response:
    store = dashboard(request).store
    now = store.now()
    workers = store.list_workers()
    alive = live(workers, now, dashboard(request).lease_ttl)
    failing = [
        store.list_runs(status=s, since=now - timedelta(days=1), limit=10) for s in views.ATTENTION
    ]
    return render(
        request,
        "overview.html",
        now=now,
        workers=workers,
        alive=alive,
        depth=views.depth_by_queue(store.queue_depth()),
        hour=store.outcome_counts(now - timedelta(hours=1)),
        day=store.outcome_counts(now - timedelta(days=1)),
        attention=views.attention(failing),
        colours=views.COLOURS,
    )


def jobs_page(request: Request) -> Response:
    store = dashboard(request).store
    now = store.now()
    entries = store.list_jobs()
    last = store.last_outcomes()
    rows = []
    for e in entries:
        nxt = None if e.cron is None else Schedule(e.cron, ZoneInfo(e.timezone)).next_after(now)
        spark = views.sparkline(store.list_runs(job=e.name, limit=20))
        rows.append({"entry": e, "next": nxt, "last": last.get(e.name), "spark": spark})
    return render(request, "jobs.html", rows=rows, queue_of=job_queue)


def job_page(
    request: Request, name: str, hours: Annotated[int, Query(ge=1, le=MAX_HOURS)] = 6
) -> Response:
    store = dashboard(request).store
    entry = store.get_job(name)  # JobNotFound: the dashboard's 404 page
    now = store.now()
    marks: list[views.Mark] = []
    summary: dict[str, int] = {}
    truncated = False
    start = now - timedelta(hours=hours)
    if entry.cron is not None:
        tz = ZoneInfo(entry.timezone)
        first, last = store.slot_bounds(name)
        if first is not None and first > start:  # the strip begins with the job's first slot
            start = first - timedelta(microseconds=1)
        window = slot_window(entry.cron, tz, start, now, limit=MAX_STRIP)
        around = Surroundings(
            now=now,
            job=entry,
            first_slot=first,
            last_slot=last,
            workers=store.list_workers(),
            lease_ttl=dashboard(request).lease_ttl,
            retention=None,
        )
        ledger = account(window, store.slot_runs(name, window.start, now), around)
        start, summary = window.start, ledger.summary
        label_zone = "UTC" if zone_choice(request) == "utc" else entry.timezone
        labels = {r.slot: _label(r.slot, label_zone) for r in ledger.reports}
        truncated = window.truncated
        marks = views.timeline(ledger.reports, start, now, labels)
    runs = store.list_runs(job=name, limit=20)
    return render(
        request, "job.html", entry=entry, marks=marks, summary=summary, hours=hours,
        start=start, now=now, runs=runs, width=views.TIMELINE_WIDTH, colours=views.COLOURS,
        duration=views.duration_text, zones={name: entry.timezone}, truncated=truncated,
        most=MAX_STRIP,
    )  # fmt: skip


def _label(at: datetime, zone: str) -> str:
    return at.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S %Z")


def runs_page(
    request: Request,
    job: str | None = None,
    status: str | None = None,
    queue: str | None = None,
    since: str | None = None,
    correlation_id: str | None = None,
    before_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    store = dashboard(request).store
    filters: dict[str, Any] = {
        k: v for k, v in {"job": job, "queue": queue, "correlation_id": correlation_id}.items() if v
    }
    if status:
        if status not in RUN_STATUSES:
            allowed = ", ".join(RUN_STATUSES)
            return error_page(request, 422, f"status: unknown {status!r}; allowed: {allowed}")
        filters["status"] = status
    if since:
        try:
            filters["since"] = store.now() - parse_duration(since)
        except (ValueError, OverflowError) as exc:
            return error_page(request, 422, f"since: {exc}")
    runs = store.list_runs(limit=PAGE + 1, before_id=before_id, **filters)
    more = len(runs) > PAGE
    runs = runs[:PAGE]
    shown = {"job": job, "status": status, "queue": queue, "since": since}
    shown["correlation_id"] = correlation_id
    older = {k: v for k, v in shown.items() if v}
    if more:
        older["before_id"] = str(runs[-1].id)
    zones = {e.name: e.timezone for e in store.list_jobs()}
    return render(
        request, "runs.html", runs=runs, filters=shown, older=older if more else None,
        statuses=RUN_STATUSES, duration=views.duration_text, zones=zones,
    )  # fmt: skip


def run_page(request: Request, run_id: int) -> Response:
    store = dashboard(request).store
    run = store.get_run(run_id)  # RunNotFound: the dashboard's 404 page
    attempts = store.run_attempts(run_id)
    try:
        zone = store.get_job(run.job_name).timezone
    except JobNotFound:
        zone = "UTC"
    return render(
        request, "run.html", run=run, attempts=attempts, zone=zone, zones={run.job_name: zone},
        duration=views.duration_text, show_traceback=dashboard(request).include_traceback,
    )  # fmt: skip


def schedules_page(request: Request, job: str | None = None, all: bool = False) -> Response:
    store = dashboard(request).store
    rows = store.list_schedules(job or None, ended=all)
    zones = {e.name: e.timezone for e in store.list_jobs()}
    return render(request, "schedules.html", rows=rows[:1000], total=len(rows), zones=zones,
                  job=job, ended=all)  # fmt: skip


def workers_page(request: Request) -> Response:
    store = dashboard(request).store
    now = store.now()
    workers = store.list_workers()
    alive = {w.worker_id for w in live(workers, now, dashboard(request).lease_ttl)}
    return render(
        request, "workers.html", workers=workers, alive=alive, now=now,
        skewed=views.skewed([w for w in workers if w.worker_id in alive]),
        locks=store.list_locks(), lease_left=views.lease_left,
    )  # fmt: skip


def prefs(request: Request, tz: str = "job", back: str = "") -> Response:
    """Read times in UTC or in each job's zone (a cookie); back to the page it came from."""
    same_site = back.startswith("/") and not back.startswith("//") and "\\" not in back
    target = back if same_site else request.url_for("overview").path  # never another site
    answer = RedirectResponse(target, status_code=303)
    answer.set_cookie(ZONE_COOKIE, "utc" if tz == "utc" else "job", samesite="lax", path="/")
    return answer


def login_form(request: Request, error: str | None = None) -> Response:
    return render(request, "login.html", error=error)


def login(request: Request, token: Annotated[str, Form()] = "") -> Response:
    dash = dashboard(request)
    if dash.token is None or not same(token, dash.token):
        return render(request, "login.html", status=401, error="wrong token")
    answer = RedirectResponse(request.url_for("overview").path, status_code=303)
    answer.set_cookie(
        SESSION_COOKIE, dash.session_value(int(time.time())), httponly=True, samesite="lax",
        path="/", secure=request.url.scheme == "https", max_age=SESSION_AGE,
    )  # fmt: skip
    return answer


def logout(request: Request) -> Response:
    answer = RedirectResponse(request.url_for("login_form").path, status_code=303)
    answer.delete_cookie(SESSION_COOKIE, path="/")
    return answer
