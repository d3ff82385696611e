"""OpenTelemetry traces, when the `otel` extra is installed (`pip install jobrunner[otel]`).

A client stores the caller's current span as the run's W3C `traceparent`; the worker starts a
span per run (`run JOB`, kind CONSUMER), a child of that span, with the job, run id, attempt
and outcome as attributes, and the run's log lines carry its `trace_id` and `span_id`. A
retry's span is a child of the same enqueuing span and links to the span of the attempt
before it (`trace_link` on the retry's row). Runs without a traceparent (schedules) begin a
trace of their own.

jobrunner only uses the OpenTelemetry API: whatever SDK the process has set up (for
`jobrunner run`, `opentelemetry-instrument` reading the standard `OTEL_*` variables) decides
what is sampled and where it goes; with none, the spans cost little and go nowhere. Without
the API installed, nothing of OpenTelemetry is imported and every function here is a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

try:
    from opentelemetry import context as _context
    from opentelemetry import trace as _trace
except ImportError:  # the extra is not installed
    _trace = None  # type: ignore[assignment]

ENABLED = _trace is not None


def current_traceparent() -> str | None:
    """The `traceparent` of the caller's current span, if it has a valid one."""
    if _trace is None:
        return None
    return _format(_trace.get_current_span().get_span_context())


def _format(span_context: Any) -> str | None:
    if not span_context.is_valid:
        return None
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def _parse(traceparent: str | None) -> Any:
    """The remote span context of a stored `traceparent` (None if there is none)."""
    if not traceparent:
        return None
    assert _trace is not None
    _, trace_id, span_id, flags = traceparent.split("-")
    return _trace.SpanContext(
        int(trace_id, 16),
        int(span_id, 16),
        is_remote=True,
        trace_flags=_trace.TraceFlags(int(flags, 16)),
    )


def start_run_span(
    job: str, attributes: Mapping[str, Any], traceparent: str | None, link: str | None
) -> Any:
    """The span of one run: a child of `traceparent`, linked to `link` (the attempt before),
    not yet current. None without OpenTelemetry."""
    if _trace is None:
        return None
    parent = _parse(traceparent)
    context = (
        None if parent is None else _trace.set_span_in_context(_trace.NonRecordingSpan(parent))
    )
    linked = _parse(link)
    return _trace.get_tracer("jobrunner").start_span(
        f"run {job}",
        context=context,
        kind=_trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "jobrunner", **attributes},
        links=None if linked is None else [_trace.Link(linked, {"jobrunner.relation": "retry_of"})],
    )


def log_ids(span: Any) -> dict[str, str]:
    """`trace_id` and `span_id` of the span for the run's log lines (none if invalid)."""
    if span is None:
        return {}
    ctx = span.get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def enter(span: Any) -> None:
    """Make the span current in the calling task (and the threads it copies its context to),
    so spans the job starts are its children."""
    if span is not None:
        _context.attach(_trace.set_span_in_context(span))


def end_run_span(span: Any, outcome: str, error: Mapping[str, Any] | None) -> str | None:
    """Record the run's outcome on its span and end it; returns its traceparent (for the
    link of a retry)."""
    if span is None:
        return None
    assert _trace is not None
    span.set_attribute("jobrunner.outcome", outcome)
    if outcome != "succeeded":
        description = f"{error['type']}: {error['message']}" if error else outcome
        span.set_status(_trace.Status(_trace.StatusCode.ERROR, description[:300]))
    span.end()
    return _format(span.get_span_context())


def flush(timeout: float = 5.0) -> None:
    """Export the spans the SDK still holds (the worker ends with `os._exit`, which skips
    the SDK's own flush at exit), waiting at most `timeout` seconds."""
    if _trace is None:
        return
    force_flush = getattr(_trace.get_tracer_provider(), "force_flush", None)
    if callable(force_flush):
        force_flush(int(timeout * 1000))
