"""traces: the cost of OpenTelemetry on the drain and on enqueue (jobrunner).

Drain: the same job in every variant, a fresh database of `size` runs (bulk) drained by one
worker at the default concurrency, measured as `throughput` measures a drain:
- off: the worker cannot import OpenTelemetry (as without the `otel` extra: a
  `sitecustomize` on its path hides it), so no span is made;
- api: the API installed and no SDK set up (what the extra alone gives): a non-recording
  span per run;
- sdk: the worker under `opentelemetry-instrument` with `OTEL_TRACES_EXPORTER=console`:
  every run's span recorded, batched and written out (as JSON, to the worker's log).
Enqueue: one `Client.enqueue` per call, `enqueues` runs, in this process: off (tracing
switched off in the client), api (no current span), sdk (inside a recording SDK span, whose
traceparent is stored). The variants take turns, in an order that alternates per repeat.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from bench.report import Metric, Result
from bench.scenarios import Context, queues, throughput
from bench.systems import Jobrunner

HIDE_OTEL = 'import sys\nsys.modules["opentelemetry"] = None  # as without the extra\n'
OTEL_ENV = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
    "OTEL_SERVICE_NAME": "jobrunner-bench",
}


def metrics() -> list[Metric]:
    c = throughput.DEFAULT_CONCURRENCY
    return [
        Metric(
            f"rate_{c}", "drain at the default concurrency, database time", "runs/s", "higher", 0
        ),
        Metric(f"cpu_{c}", "worker CPU per run", "us", "lower", 0),
        Metric("enqueue", "one enqueue per call", "runs/s", "higher", 0),
    ]


def variants(ctx: Context) -> dict[str, dict[str, Any]]:
    site = Path(ctx.dir("traces/no-otel-site"))
    (site / "sitecustomize.py").write_text(HIDE_OTEL)
    path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)
    instrument = str(Path(sys.executable).with_name("opentelemetry-instrument"))
    return {
        "off": {"worker_env": {"PYTHONPATH": path}},
        "api": {},
        "sdk": {"worker_env": OTEL_ENV, "worker_prefix": [instrument]},
    }


def run(ctx: Context, size: int = 20_000, enqueues: int = 2_000) -> Result:
    c = throughput.DEFAULT_CONCURRENCY
    params = {"runs per drain": size, "enqueues": enqueues, "repeats": ctx.repeats}
    result = Result("traces", params, metrics(), ratio_to="off")
    kwargs = [{"tenant": f"t{i:03d}"} for i in range(100)]
    job = {"name": "noop", "func": "bench.jobs:tenant_noop"}
    for r in range(ctx.repeats):
        order = list(variants(ctx).items())
        for variant, system in order if r % 2 == 0 else order[::-1]:
            queues.drain(ctx, result, variant, job, kwargs, size, r, c, "traces", **system)
        for variant in ("off", "api", "sdk") if r % 2 == 0 else ("sdk", "api", "off"):
            per_s = ctx.guarded(
                f"traces enqueue {variant} r{r}", lambda v=variant: enqueue(ctx, v, enqueues)
            )
            result.add(variant, "enqueue", per_s)
            ctx.say(f"  traces enqueue {variant} r{r}: {per_s or 0:,.0f}/s")
    return result


def enqueue(ctx: Context, variant: str, n: int) -> float:
    """Runs/s of `n` enqueues, one per call, with tracing as `variant` says."""
    from opentelemetry.sdk.trace import TracerProvider

    import jobrunner.tracing as tracing

    with ctx.server.fresh("traces_enq") as url:
        system = Jobrunner(url, Path(ctx.dir(f"traces/enqueue-{variant}")))
        system.setup()
        enabled = tracing.ENABLED
        tracing.ENABLED = variant != "off"
        try:
            if variant == "sdk":
                with TracerProvider().get_tracer("bench").start_as_current_span("request"):
                    secs = system.enqueue_each(n)
            else:
                secs = system.enqueue_each(n)
        finally:
            tracing.ENABLED = enabled
            system.close()
    return n / secs
