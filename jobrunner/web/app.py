"""What the dashboard's pages and actions share: its state, the session and CSRF checks,
page rendering and the error pages (`create_dashboard` in `jobrunner.web` puts them together).

With a token (`jobrunner web`), every request needs it as `Authorization: Bearer TOKEN` or
the signed session cookie the login form sets. Read-only (what `jobrunner web` serves without
a token) refuses every action and says so on every page.

Every action is a POST form carrying a CSRF token: a random value in a cookie (SameSite
Strict, HttpOnly) that the form repeats; a POST whose field does not equal its cookie is
refused (403) and writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import Depends, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobrunner.http_input import sized_route, status_of
from jobrunner.store.ports import AdminPort

HERE = Path(__file__).resolve().parent
SESSION_AGE = 12 * 3600  # seconds a login lasts
CSRF_COOKIE = "jr_csrf"
SESSION_COOKIE = "jr_session"
ZONE_COOKIE = "jr_tz"
MAX_FORM_SIZE = 512 * 1024  # bytes of a form: the trigger's kwargs, URL-encoded, and the rest


def html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


# Every status a page or an action answers, for its OpenAPI schema (`create_dashboard(...)
# .openapi()`; the dashboard does not serve it). The host app's dependencies add their own.
Answers = dict[int | str, dict[str, Any]]
PAGE_ANSWERS: Answers = {
    303: {"description": "To the login form (a token is set and the request has no session)"},
    404: html("No such job or run, or no page at that path"),
    422: html("A parameter was refused: the page names it and what is allowed"),
}
ACTION_ANSWERS: Answers = {
    303: {"description": "Done: to the page of what changed (`?done=` says what was done)"},
    400: html("The body is not a form"),
    401: html("The dashboard has a token and the request has no session"),
    403: html("The CSRF field is missing or wrong, or the dashboard is read-only"),
    404: html("No such job, run or schedule"),
    409: html("The run finished already, or cannot be retried"),
    413: html(f"The body is over {MAX_FORM_SIZE:,} bytes, or the kwargs over the limit"),
    422: html("A field was refused: the page names it and what is allowed"),
}
Routes = sized_route(MAX_FORM_SIZE)  # the route class of the dashboard's routers


@dataclass
class Dashboard:
    """What every page and action of one dashboard shares."""

    store: AdminPort
    templates: Jinja2Templates
    token: str | None = None  # asked of every request when set (`jobrunner web`)
    read_only: bool = False
    lease_ttl: timedelta = timedelta(seconds=30)  # a worker seen within it is alive
    include_traceback: bool = True

    secret: bytes = b""  # signs sessions: random per dashboard (a restart logs everyone out)

    def session_value(self, issued: int) -> str:
        """A session cookie: when it was issued, signed with the token and this dashboard's
        secret (never the token itself)."""
        assert self.token is not None
        key = self.secret + self.token.encode()
        mac = hmac.new(key, str(issued).encode(), hashlib.sha256).hexdigest()
        return f"{issued}.{mac}"

    def session_ok(self, cookie: str, now: float) -> bool:
        issued, _, _ = cookie.partition(".")
        if not issued.isdigit() or now - int(issued) > SESSION_AGE:
            return False
        return same(cookie, self.session_value(int(issued)))


def same(given: str, wanted: str) -> bool:
    """A constant-time comparison of two texts, whatever characters they hold."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), wanted.encode())


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
    if header.startswith("Bearer ") and same(header[7:], dash.token):
        return
    cookie = request.cookies.get(SESSION_COOKIE, "")
    if cookie and dash.session_ok(cookie, time.time()):
        return
    raise LoginNeeded


def login_needed(request: Request, _exc: Exception) -> Response:
    if request.method == "GET":  # a page: to the login form
        return RedirectResponse(request.url_for("login_form").path, status_code=303)
    return HTMLResponse("401: this dashboard needs its token", status_code=401)


def check_csrf(request: Request, csrf: Annotated[str, Form()] = "") -> None:
    """A POST's CSRF field must equal its cookie (403 otherwise: nothing is written)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not cookie or not csrf or not same(csrf, cookie):
        raise HTTPException(403, "CSRF token missing or wrong: reload the page and submit again")


def check_writable(request: Request) -> None:
    if dashboard(request).read_only:
        raise HTTPException(403, "this dashboard is read-only: set [web] token to allow actions")


def no_nul(request: Request) -> None:
    """A NUL character cannot be in any name or id the store keeps: 422, not a database error."""
    if "\x00" in request.url.path or "%00" in request.url.query:
        raise HTTPException(422, "a NUL character is not allowed in a path or query")


Guarded = [Depends(no_nul), Depends(require_session)]
Action = [Depends(no_nul), Depends(require_session), Depends(check_writable), Depends(check_csrf)]


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

    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    page = dash.templates.TemplateResponse(
        request,
        name,
        {
            "dash": dash,
            "csrf": token,
            "when": when,
            "here": here,  # this page as a path: what htmx refreshes, where the zone toggle goes
            "url_for": lambda page, **params: request.url_for(page, **params).path,
            "zone_choice": zone_choice(request),
            "done": request.query_params.get("done"),
            **context,
        },
        status_code=status,
    )
    if request.cookies.get(CSRF_COOKIE) != token:
        secure = request.url.scheme == "https"
        page.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="lax", path="/", secure=secure)
    return page


def error_page(request: Request, status: int, message: str) -> Response:
    return render(request, "error.html", status=status, message=message)


def http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404 and exc.detail == "Not Found":
        return error_page(request, 404, f"no page at {request.url.path}")
    return error_page(request, exc.status_code, str(exc.detail))


def refused(request: Request, exc: Exception) -> Response:
    """A refusal of the store (no such job, run or schedule; a value refused): its page."""
    return error_page(request, status_of(exc), str(exc))


def bad_request(request: Request, exc: RequestValidationError) -> Response:
    said = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
        for e in exc.errors()
    )
    return error_page(request, 422, said or "bad request")
