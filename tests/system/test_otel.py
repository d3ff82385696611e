"""Issue 21, OpenTelemetry: one trace from a FastAPI request, through the run's row, to the
run's span in a `jobrunner run` process set up the standard way (`opentelemetry-instrument`
reading `OTEL_*` variables); retries linked; log lines with the span's ids; and without the
extra nothing of OpenTelemetry is imported."""

from __future__ import annotations

import json
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.exceptions import StarletteDeprecationWarning

from examples.fastapi_app import create_app
from jobrunner import Client
from tests.support import Workers, run_cli, wait_for, write_config

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

pytestmark = pytest.mark.system

OTEL_ENV = {
    "OTEL_TRACES_EXPORTER": "console",  # the SDK's own exporter, to the worker's stdout
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    # Nothing is exported before the worker stops: it flushes the SDK's spans as it exits.
    "OTEL_BSP_SCHEDULE_DELAY": "600000",
    "OTEL_SERVICE_NAME": "jobrunner-worker",
}
INSTRUMENT = [str(Path(sys.executable).with_name("opentelemetry-instrument"))]


def exported(path: Path) -> list[dict[str, Any]]:
    """The spans the console exporter wrote (one JSON object each, indented)."""
    text, spans, at = path.read_text(), [], 0
    decoder = json.JSONDecoder()
    while (at := text.find("{", at)) != -1:
        span, at = decoder.raw_decode(text, at)
        spans.append(span)
    return spans


def hexid(value: str | None) -> int | None:
    return None if value is None else int(value, 16)


def test_one_trace_from_a_request_to_the_run_on_another_process(
    tmp_path: Path, pg_url: str, workers: Workers
) -> None:
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [
            {"name": "traced", "func": "sysjobs:traced"},
            {"name": "flaky", "func": "sysjobs:fail", "retries": 1, "retry_backoff": "0.1s"},
        ],
    )
    spans_path = tmp_path / "spans.json"
    env = {**OTEL_ENV}
    worker = workers.start(config, prefix=INSTRUMENT, stdout_path=spans_path, env_extra=env)
    exporter, provider = InMemorySpanExporter(), TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(pg_url, api_token="t")
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider)
    with TestClient(app) as http:
        ids = {}
        for job in ("traced", "flaky"):
            response = http.post(
                f"/jobrunner/api/jobs/{job}/runs",
                json={"kwargs": {}},
                headers={"Authorization": "Bearer t"},
            )
            assert response.status_code == 202, response.text
            ids[job] = response.json()["id"]
    requests = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert len(requests) == 2
    traced_req, flaky_req = (s.get_span_context() for s in requests)

    finished = lambda: len(worker.find("run finished")) >= 3  # noqa: E731
    assert wait_for(finished, 30), worker.log_path.read_text()[-2000:]
    assert exported(spans_path) == []
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    spans = exported(spans_path)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)

    # The request's span is the parent of its run's span, in one trace.
    (run,) = by_name["run traced"]
    assert hexid(run["context"]["trace_id"]) == traced_req.trace_id
    assert hexid(run["parent_id"]) == traced_req.span_id
    assert run["kind"] == "SpanKind.CONSUMER"
    assert run["attributes"]["jobrunner.job"] == "traced"
    assert run["attributes"]["jobrunner.run_id"] == ids["traced"]
    assert run["attributes"]["jobrunner.attempt"] == 1
    assert run["attributes"]["jobrunner.outcome"] == "succeeded"
    assert run["status"]["status_code"] == "UNSET"
    # The job's own span, started in a thread of the pool, is the run's child.
    (inner,) = by_name["inner work"]
    assert inner["parent_id"] == run["context"]["span_id"]
    assert inner["context"]["trace_id"] == run["context"]["trace_id"]

    # Each attempt is a child of the request; the retry links to the attempt before it.
    first, second = sorted(by_name["run flaky"], key=lambda s: s["attributes"]["jobrunner.attempt"])
    for attempt in (first, second):
        assert hexid(attempt["context"]["trace_id"]) == flaky_req.trace_id
        assert hexid(attempt["parent_id"]) == flaky_req.span_id
        assert attempt["status"]["status_code"] == "ERROR"
        assert attempt["attributes"]["jobrunner.outcome"] == "failed"
    assert first["links"] == []
    (link,) = second["links"]
    assert link["context"]["span_id"] == first["context"]["span_id"]

    # The run's log lines carry its span's ids, the job's own lines included.
    for event in ("run finished", "traced job works"):
        line = next(e for e in worker.find(event) if e.get("run_id") == ids["traced"])
        assert hexid(line["trace_id"]) == traced_req.trace_id
        assert "0x" + line["span_id"] == run["context"]["span_id"]
    # The row holds the request's span as its traceparent.
    with Client.from_url(pg_url) as client:
        stored = client.get_run(ids["traced"]).traceparent
    flags = int(traced_req.trace_flags)
    assert stored == f"00-{traced_req.trace_id:032x}-{traced_req.span_id:016x}-{flags:02x}"


BLOCK_OTEL = """\
import atexit, os, sys
sys.modules["opentelemetry"] = None  # as if the extra were not installed

def _report():
    seen = sorted(m for m in sys.modules if m.startswith("opentelemetry") and sys.modules[m])
    with open(os.environ["JR_OTEL_SEEN"], "a") as f:
        f.write(json.dumps({"argv": sys.argv[1:3], "seen": seen}) + "\\n")

import json
atexit.register(_report)
"""


def test_without_the_extra_nothing_of_opentelemetry_is_imported(
    tmp_path: Path, sqlite_url: str, workers: Workers
) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK_OTEL)
    seen = tmp_path / "seen.jsonl"
    env = {"PYTHONPATH": str(site), "JR_OTEL_SEEN": str(seen)}
    config = write_config(
        tmp_path / "jr.toml", sqlite_url, [{"name": "modules", "func": "sysjobs:otel_modules"}]
    )
    worker = workers.start(config, env_extra=env)
    got = run_cli("jobs", "trigger", "modules", "-c", str(config), env=env)
    assert got.returncode == 0, got.stderr
    assert wait_for(lambda: bool(worker.find("run finished")), 20)
    (line,) = worker.find("run finished")
    assert line["outcome"] == "succeeded"
    assert "trace_id" not in line
    with Client.from_url(sqlite_url) as client:
        run = client.get_run(line["run_id"])
    assert run.traceparent is None
    assert run.result == []  # what the worker had imported when it ran the job
    (report,) = [json.loads(x) for x in seen.read_text().splitlines()]  # the CLI's
    assert report == {"argv": ["jobs", "trigger"], "seen": []}
