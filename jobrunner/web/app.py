"""The dashboard's app: its state, the session and CSRF checks, and page rendering.

`create_dashboard(client, dependencies=[...])` returns a FastAPI app to mount in the host app
(`app.mount("/jobrunner", create_dashboard(client, dependencies=[Depends(admin)]))`): every
page and action runs the host app's `dependencies` (its auth) first. `jobrunner web` builds
it with `token=`: then every request needs that token as `Authorization: Bearer TOKEN` or the
signed session cookie the login form sets. `read_only=True` (what `jobrunner web` serves
without a token) refuses every action and says so on every page.

Every action is a POST form carrying a CSRF token: a random value in a cookie (SameSite
Strict, HttpOnly) that the form repeats; a POST whose field does not equal its cookie is
refused (403) and writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobrunner.client import AsyncClient, Client
from jobrunner.store.access import AdminStore
from jobrunner.store.engine import create_engine
from jobrunner.store.ports import AdminPort

HERE = Path(__file__).resolve().parent
CSRF_COOKIE = "jr_csrf"
SESSION_COOKIE = "jr_session"
ZONE_COOKIE = "jr_tz"


@dataclass
class Dashboard:
    """What every page and action of one dashboard shares."""

    store: AdminPort
    templates: Jinja2Templates
    token: str | None = None  # asked of every request when set (`jobrunner web`)
    read_only: bool = False
    lease_ttl: timedelta = timedelta(seconds=30)  # a worker seen within it is alive
    include_traceback: bool = True

    def session_value(self) -> str:
        """The session cookie's value for this token: an HMAC of it, never the token."""
        assert self.token is not None
        return hmac.new(self.token.encode(), b"jobrunner-dashboard", hashlib.sha256).hexdigest()


def dashboard(request: Request) -> Dashboard:
    state: Dashboard = request.app.state.dashboard
    return state


class LoginNeeded(Exception):
    """A request without the token (or the session it opens)."""


def require_session(request: Request) -> None:
    """With a token: the bearer header or the session cookie, else LoginNeeded."""
    dash = dashboard(request)
    if dash.token is None:
        return
    header = request.headers.get("authorization", "")
    if header.startswith("Bearer ") and hmac.compare_digest(header[7:], dash.token):
        return
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and hmac.compare_digest(cookie, dash.session_value()):
        return
    raise LoginNeeded


def _login_needed(request: Request, _exc: Exception) -> Response:
    if request.method == "GET":  # a page: to the login form
        return RedirectResponse(str(request.url_for("login_form")), status_code=303)
    return HTMLResponse("401: this dashboard needs its token", status_code=401)


def check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    """A POST's CSRF field must equal its cookie (403 otherwise: nothing is written)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not csrf or not hmac.compare_digest(cookie, csrf):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and submit again")


def check_writable(request: Request) -> None:
    if dashboard(request).read_only:
        raise HTTPException(403, "this dashboard is read-only: set [web] token to allow actions")


Guarded = [Depends(require_session)]
Action = [Depends(require_session), Depends(check_writable), Depends(check_csrf)]


def zone_choice(request: Request) -> str:
    """`utc` or `job`: the zone the viewer reads times in (a cookie, default the job's)."""
    return "utc" if request.cookies.get(ZONE_COOKIE) == "utc" else "job"


def render(request: Request, name: str, status: int = 200, **context: Any) -> Response:
    """A page of the dashboard, with what every page needs; sets the CSRF cookie once."""
    dash = dashboard(request)
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    utc = zone_choice(request) == "utc"

    def when(value: datetime | None, zone: str | None = None) -> str:
        if value is None:
            return "-"
        tz = ZoneInfo("UTC") if utc or not zone else ZoneInfo(zone)
        return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")

    page = dash.templates.TemplateResponse(
        request,
        name,
        {
            "dash": dash,
            "csrf": token,
            "when": when,
            "zone_choice": zone_choice(request),
            "done": request.query_params.get("done"),
            **context,
        },
        status_code=status,
    )
    if request.cookies.get(CSRF_COOKIE) != token:
        page.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return page


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status=status, message=message)


def _admin_store(client: Client | AsyncClient) -> AdminPort:
    """The store the dashboard reads: over the Client's own engine, or (AsyncClient) a
    synchronous engine of the same database, whose calls run in the thread pool."""
    if isinstance(client, Client):
        return AdminStore(client.engine)
    if isinstance(client, AsyncClient):
        url = sa.make_url(client.engine.url).set(drivername="postgresql+psycopg")
        return AdminStore(create_engine(url.render_as_string(hide_password=False)))
    raise TypeError(f"client must be a jobrunner Client or AsyncClient, got {client!r}")


def create_dashboard(
    client: Client | AsyncClient,
    dependencies: Sequence[DependsParam] | None = None,
    *,
    token: str | None = None,
    read_only: bool = False,
    lease_ttl: timedelta = timedelta(seconds=30),
    include_traceback: bool = True,
) -> FastAPI:
    """The dashboard as a FastAPI app to mount (`app.mount("/jobrunner", ...)`).

    `dependencies` run before every page and action (the host app's auth). `token`: every
    request needs it (bearer header or the login form's session cookie). `read_only`:
    actions are refused. `lease_ttl`: the workers' (a worker seen within it is alive)."""
    from jobrunner.web import actions, pages

    store = _admin_store(client)
    dash = Dashboard(
        store=store,
        templates=Jinja2Templates(directory=HERE / "templates"),
        token=token,
        read_only=read_only,
        lease_ttl=lease_ttl,
        include_traceback=include_traceback,
    )
    app = FastAPI(
        title="jobrunner dashboard",
        dependencies=list(dependencies or ()),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.dashboard = dash
    app.add_exception_handler(LoginNeeded, _login_needed)
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _bad_request)  # type: ignore[arg-type]
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.login_routes())
    app.include_router(pages.page_routes(), dependencies=Guarded)
    app.include_router(actions.action_routes(), dependencies=Action)
    return app


def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return error_page(request, 404, f"no page at {request.url.path}")
    return error_page(request, exc.status_code, str(exc.detail))


def _bad_request(request: Request, exc: RequestValidationError) -> Response:
    said = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
        for e in exc.errors()
    )
    return error_page(request, 422, said or "bad request")
