"""The dashboard (`pip install 'jobrunner[web]'`): see and steer jobs, slots, runs, runtime
schedules and workers in the browser. Server-rendered with Jinja2; the vendored htmx
(`static/htmx.min.js`, Zero-Clause BSD) refreshes lists and the timeline, and every page
reads without JavaScript. Mount it in a FastAPI app behind the app's own auth::

    from fastapi import Depends, FastAPI
    from jobrunner import Client
    from jobrunner.web import create_dashboard

    app = FastAPI()
    app.mount("/jobrunner", create_dashboard(Client.from_url(URL), dependencies=[Depends(admin)]))

or serve it alone with `jobrunner web -c FILE` (`[web] listen`, `[web] token`). Pages are in
`pages`, actions (POST forms with CSRF) in `actions`, what they share in `app`, and what they
compute without a database in `views`.
"""

from __future__ import annotations

import secrets
import weakref
from collections.abc import Sequence
from datetime import timedelta

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.params import Depends as DependsParam
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobrunner.client import AsyncClient, Client
from jobrunner.http_input import REFUSALS
from jobrunner.store.access import AdminStore
from jobrunner.store.engine import create_engine
from jobrunner.store.ports import AdminPort
from jobrunner.web.actions import action_routes
from jobrunner.web.app import (
    HERE,
    Action,
    Dashboard,
    Guarded,
    LoginNeeded,
    bad_request,
    http_error,
    login_needed,
    refused,
)
from jobrunner.web.pages import login_routes, page_routes

__all__ = ["create_dashboard"]


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
    actions are refused. One of them is required (an explicit `dependencies=[]` when
    something else guards the mount): a dashboard takes actions. `lease_ttl`: the
    workers' (a worker seen within it is alive)."""
    if dependencies is None and token is None and not read_only:
        raise ValueError(
            "create_dashboard: give dependencies=[...] (your app's auth; [] if something "
            "else guards the mount), a token, or read_only=True: it takes actions"
        )
    store = _admin_store(client)
    dash = Dashboard(
        secret=secrets.token_bytes(32),
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
    if not isinstance(client, Client):  # the engine is the dashboard's own: closed with it
        weakref.finalize(app, store.close)
    app.add_exception_handler(LoginNeeded, login_needed)
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, bad_request)  # type: ignore[arg-type]
    for kind in REFUSALS:
        app.add_exception_handler(kind, refused)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(login_routes())
    app.include_router(page_routes(), dependencies=Guarded)
    app.include_router(action_routes(), dependencies=Action)
    return app
