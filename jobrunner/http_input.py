"""What the routes of `jobrunner.fastapi.create_router` share about bad input: the error
responses, the strict types of their parameters, the body size limit, and the statuses the
client's errors become. Every status a route can answer is in its OpenAPI schema.

- 400: the body is not JSON; 404: no such job, run or schedule (a run id out of range too);
  409: a conflict; 413: a body over `MAX_BODY_SIZE` or kwargs over `MAX_KWARGS_SIZE` bytes of
  JSON; 422: a value refused (a list of FastAPI's validation errors, or one message naming
  the value and what is allowed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import HTTPException, Path, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, BaseModel, BeforeValidator, Field
from starlette.types import Message, Receive

from jobrunner.converters import MAX_KWARGS_SIZE, TEXT_MAX
from jobrunner.errors import (
    ArgumentsTooLarge,
    BadInput,
    JobNotFound,
    RunNotFound,
    RunNotRetryable,
    ScheduleExists,
    ScheduleNotFound,
)

T = TypeVar("T")

MAX_BODY_SIZE = MAX_KWARGS_SIZE + 16 * 1024  # bytes of a request body: its kwargs and the rest
NO_NUL = r"^[^\x00]*$"  # PostgreSQL keeps no NUL character: a text holding one is refused


class ErrorOut(BaseModel):
    """An error response (FastAPI's shape)."""

    detail: str


class RefusedOut(BaseModel):
    """422: FastAPI's validation errors (a list), or jobrunner's refusal of a value (a message
    naming it and what is allowed)."""

    detail: str | list[dict[str, Any]]


Responses = dict[int | str, dict[str, Any]]


def _error(code: int, description: str, model: type[BaseModel] = ErrorOut) -> Responses:
    return {code: {"model": model, "description": description}}


NOT_FOUND = _error(404, "No such job, run or schedule")
CONFLICT = _error(409, "Conflict with the run's or schedule's state")
REFUSED = _error(422, "A value was refused", RefusedOut)
BODY: Responses = {
    **_error(400, "The body is not JSON"),
    **_error(413, f"Over {MAX_BODY_SIZE:,} bytes, or kwargs over {MAX_KWARGS_SIZE:,} as JSON"),
    **REFUSED,
}

JobPath = Annotated[str, Path(max_length=TEXT_MAX, pattern=NO_NUL)]
KeyPath = Annotated[str, Path(max_length=TEXT_MAX, pattern=NO_NUL)]
TextQuery = Annotated[str | None, Query(max_length=TEXT_MAX, pattern=NO_NUL)]


def _timestamp(value: object) -> object:
    """A date-time is a string in JSON (RFC 3339): a number is refused, not read as a time."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be a date-time string with a UTC offset, like 2026-01-01T09:00:00Z")
    return value


Timestamp = Annotated[AwareDatetime, BeforeValidator(_timestamp)]


def text(**field: Any) -> Any:
    """A JSON string field as the store keeps one: at most TEXT_MAX characters, no NUL."""
    return Field(max_length=TEXT_MAX, pattern=NO_NUL, **field)


def sized_route(most: int) -> type[APIRoute]:
    """A route class (`APIRouter(route_class=...)`) whose requests carry at most `most` bytes
    of body: 413 before more is read, whether Content-Length says so or a streamed body grows
    past it (FastAPI reads a body before any dependency runs, the host app's auth too)."""

    class SizedRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()
            if self.body_field is None:  # a route that reads no body
                return handler

            async def sized(request: Request) -> Response:
                length = request.headers.get("content-length", "")
                if length.isdigit() and int(length) > most:
                    raise _too_large(f"{int(length):,} bytes", most)
                return await handler(Request(request.scope, _bounded(request.receive, most)))

            return sized

    return SizedRoute


def _bounded(receive: Receive, most: int) -> Receive:
    seen = 0

    async def bounded() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > most:
            raise _too_large(f"over {most:,} bytes", most)
        return message

    return bounded


def _too_large(size: str, most: int) -> HTTPException:
    return HTTPException(413, f"the body is {size}: at most {most:,} are allowed")


# The status each refusal of the store is, first match wins (the router's and the dashboard's).
STATUS_OF: tuple[tuple[type[Exception] | tuple[type[Exception], ...], int], ...] = (
    ((JobNotFound, RunNotFound, ScheduleNotFound), 404),
    ((ScheduleExists, RunNotRetryable), 409),
    (ArgumentsTooLarge, 413),
    (BadInput, 422),
)
REFUSALS = (JobNotFound, RunNotFound, ScheduleNotFound, BadInput)  # what STATUS_OF covers


def status_of(exc: Exception) -> int:
    return next(code for kinds, code in STATUS_OF if isinstance(exc, kinds))


async def answer(pending: Awaitable[T]) -> T:
    """What a client call returns, or the HTTP error its exception stands for."""
    try:
        return await pending
    except REFUSALS as exc:
        raise HTTPException(status_of(exc), str(exc)) from None
