"""A small web app that enqueues and observes jobrunner runs; it never runs jobs itself.

    pip install 'jobrunner[web]'
    export JOBRUNNER_DATABASE_URL=postgresql://app:secret@db/app
    export EXAMPLE_API_TOKEN=change-me          # optional: protects the jobrunner routes
    uvicorn --factory examples.fastapi_app:create_app

- `/jobrunner/` is jobrunner's dashboard and `/jobrunner/api/...` its JSON router (list jobs,
  enqueue, show, cancel and retry runs, runtime schedules), both behind the app's own auth
  dependency: a bearer token here, or the cookie `/login?token=...` sets for a browser.
- `POST /reports/{region}` is the app's own endpoint: it enqueues the `report` job with the
  request's correlation id and an optional `Idempotency-Key` header.
- A middleware gives every request a correlation id (the `X-Request-ID` header, or a new one),
  binds it in structlog's contextvars, so the app's log lines carry it, and the router stores it
  on the runs it enqueues; the workers bind it again in the job's log context.
"""

from __future__ import annotations

import os
import re
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import structlog
from fastapi import Cookie, Depends, FastAPI, Header, HTTPException, Path, Query, status
from fastapi.responses import RedirectResponse, Response

from jobrunner import AsyncClient, JobNotFound
from jobrunner.errors import BadInput
from jobrunner.fastapi import RunOut, create_router
from jobrunner.http_input import NO_NUL, REFUSED, ErrorOut
from jobrunner.web import create_dashboard

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REQUEST_ID_HEADER = "X-Request-ID"
REPORT_JOB = "report"
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
UNAUTHORIZED = {401: {"model": ErrorOut, "description": "No valid bearer token"}}

log = structlog.get_logger("example")


class RequestIdMiddleware:
    """Bind a correlation id for the whole request (pure ASGI, so it reaches every handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = given if _VALID_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
                ]
            await send(message)

        with structlog.contextvars.bound_contextvars(correlation_id=request_id):
            await self.app(scope, receive, send_with_id)


def create_app(database_url: str | None = None, api_token: str | None = None) -> FastAPI:
    """The app. `database_url` defaults to $JOBRUNNER_DATABASE_URL, `api_token` to
    $EXAMPLE_API_TOKEN (without a token the jobrunner routes are open: fine on a laptop only)."""
    url = database_url or os.environ["JOBRUNNER_DATABASE_URL"]
    token = api_token if api_token is not None else os.environ.get("EXAMPLE_API_TOKEN")
    client = AsyncClient.from_url(url)

    async def require_token(
        authorization: Annotated[str | None, Header()] = None,
        example_token: Annotated[str | None, Cookie()] = None,
    ) -> None:
        if token is None:
            return
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            given = example_token or ""
        if not secrets.compare_digest(given, token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a valid bearer token is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.close()

    app = FastAPI(title="jobrunner example", lifespan=lifespan)
    app.add_middleware(RequestIdMiddleware)
    guard = [Depends(require_token)]
    app.include_router(
        create_router(client, dependencies=guard), prefix="/jobrunner/api", responses=UNAUTHORIZED
    )
    app.mount("/jobrunner", create_dashboard(client, dependencies=guard))

    @app.get("/login", include_in_schema=False)
    async def login(token_: Annotated[str, Query(alias="token")] = "") -> Response:
        """A browser's way in: the token in an HttpOnly cookie, then the dashboard."""
        if token is not None and not secrets.compare_digest(token_, token):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong token")
        answer = RedirectResponse("/jobrunner/", status_code=303)
        answer.set_cookie("example_token", token_, httponly=True, samesite="strict")
        return answer

    @app.post(
        "/reports/{region}",
        response_model=RunOut,
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(require_token)],
        responses={
            **UNAUTHORIZED,
            **REFUSED,
            503: {"model": ErrorOut, "description": "No worker has published the job yet"},
        },
    )
    async def request_report(
        region: Annotated[str, Path(max_length=200, pattern=NO_NUL)],
        idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200)] = None,
    ) -> RunOut:
        """Ask for a report: the `report` job builds it on a worker."""
        correlation_id = structlog.contextvars.get_contextvars().get("correlation_id")
        try:
            run = await client.enqueue(
                REPORT_JOB,
                {"region": region},
                idempotency_key=idempotency_key,
                correlation_id=correlation_id,
            )
        except JobNotFound as exc:  # no worker published the job yet
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
        except BadInput as exc:  # the job's own checks of its kwargs
            raise HTTPException(422, str(exc)) from None
        log.info("report requested", run_id=run.id, region=region)
        return RunOut.model_validate(run, from_attributes=True)

    return app


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)
