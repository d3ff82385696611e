"""notify: the cost of notifications on the drain, and their delivery latency (jobrunner).

Drain: one job per variant, a fresh database of `size` runs (bulk) drained by one worker at
the default concurrency, measured as `throughput` measures a drain:
- ok / ok-notify: runs that succeed, without and with a `[[notify]]` target that wants every
  event (a success causes none: what the target costs when nothing fails);
- fail / fail-notify: runs that fail (no retry), without and with the target: every run
  writes `failed` and `exhausted` to the outbox in its outcome's transaction, and the
  notifier delivers them to a local receiver meanwhile.
Latency: failing runs enqueued at `rate` per second for `seconds`, one worker, a target that
wants `failed`: receive time at the local receiver less the event's `occurred_at` (both this
host's clock and the database's, on one host), p50/p99/max, and every event received once.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import percentile, stop_all, wait_for, wait_jobrunner_started
from bench.report import Metric, Result
from bench.scenarios import Context, queues, throughput
from bench.systems import Jobrunner, System

VARIANTS = {
    "ok": ("bench.jobs:tenant_noop", False),
    "ok-notify": ("bench.jobs:tenant_noop", True),
    "fail": ("bench.jobs:fails", False),
    "fail-notify": ("bench.jobs:fails", True),
}


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[float, dict[str, Any]]]]]:
    """A local HTTP receiver: (its URL, what it received with the time it did)."""
    got: list[tuple[float, dict[str, Any]]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            got.append((time.time(), json.loads(body)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    finally:
        server.shutdown()
        server.server_close()


def metrics() -> list[Metric]:
    return [
        Metric("rate", "drain at the default concurrency, database time", "runs/s", "higher", 0),
        Metric("cpu", "worker CPU per run", "us", "lower", 0),
        Metric(
            "rig_cpu", "this process's CPU per run (fill, poll, the receiver)", "us", "lower", 0
        ),
        Metric("lat_p50", "delivery latency p50", "ms", "lower", 0),
        Metric("lat_p99", "delivery latency p99", "ms", "lower", 0),
        Metric("lat_max", "delivery latency max", "ms", "lower", 0),
    ]


def run(ctx: Context, size: int = 20_000, rate: int = 100, seconds: float = 10.0) -> Result:
    params = {"runs per drain": size, "events/s": rate, "seconds": seconds, "repeats": ctx.repeats}
    result = Result("notify", params, metrics(), ratio_to="ok")
    kwargs = [{"tenant": f"t{i:03d}"} for i in range(100)]
    with receiver() as (url, got):
        target = {"url": url, "events": ["failed", "exhausted", "lost", "misfired"], "name": "b"}
        for r in range(ctx.repeats):
            order = list(VARIANTS.items())
            for variant, (func, notified) in order if r % 2 == 0 else order[::-1]:
                got.clear()
                job = {"name": "fail" if "fail" in variant else "ok", "func": func}
                drain(ctx, result, variant, job, kwargs, size, r, [target] if notified else [])
        lat = latency(ctx, url, got, rate, seconds)
        for key, q in (("lat_p50", 50), ("lat_p99", 99), ("lat_max", 100)):
            result.add("fail-notify", key, percentile(lat["ms"], q))
        result.extra["latency"] = {k: v for k, v in lat.items() if k != "ms"}
        ctx.say(f"  latency: {lat['received']} of {lat['sent']} events, p99 "
                f"{percentile(lat['ms'], 99) or 0:.0f} ms")  # fmt: skip
    return result


def drain(
    ctx: Context,
    result: Result,
    variant: str,
    job: dict[str, Any],
    kwargs: list[dict[str, Any]],
    size: int,
    r: int,
    notify: list[dict[str, Any]],
) -> None:
    label = f"notify {variant} r{r}"

    def make(url: str, workdir: Path) -> System:
        return Jobrunner(url, workdir, jobs=[job], kwargs=kwargs, notify=notify)

    began = time.process_time()  # the receiver runs in this process, on the same cores
    m = ctx.guarded(
        label,
        lambda: throughput.measure(
            ctx, "jobrunner", "bulk", 1, size, r, throughput.DEFAULT_CONCURRENCY,
            make=make, where=f"notify/{variant}-r{r}",
        ),
    )  # fmt: skip
    rig_us = (time.process_time() - began) / size * 1e6
    db_rate, cpu_us = throughput.figures(result, label, m, size)
    result.add(variant, "rate", db_rate)
    result.add(variant, "cpu", cpu_us)
    result.add(variant, "rig_cpu", rig_us)
    ctx.say(f"  {label}: drain {queues.times(None) if db_rate is None else f'{db_rate:,.0f}'}/s, "
            f"CPU {cpu_us or 0:.0f} us per run, this process {rig_us:.0f} us")  # fmt: skip


def latency(
    ctx: Context, url: str, got: list[tuple[float, dict[str, Any]]], rate: int, seconds: float
) -> dict[str, Any]:
    """Failing runs at `rate`/s for `seconds`; each one's `failed` event's delivery latency."""
    got.clear()
    sent = int(rate * seconds)
    job = {"name": "fail", "func": "bench.jobs:fails"}
    target = {"url": url, "events": ["failed"], "name": "b"}
    with ctx.server.fresh("notify_lat") as db:
        system = Jobrunner(db, ctx.dir("notify/latency"), jobs=[job],
                           kwargs=[{"tenant": "t"}], notify=[target])  # fmt: skip
        system.setup()
        try:
            wait_jobrunner_started([system.start_worker()])
            began = time.monotonic()
            for i in range(sent):
                time.sleep(max(began + i / rate - time.monotonic(), 0))
                system.enqueue_each(1)
            wait_for(lambda: len(got) >= sent, 60, 0.1)
        finally:
            stop_all(system.procs)
            system.close()
    ms = [(t - datetime.fromisoformat(body["occurred_at"]).timestamp()) * 1000 for t, body in got]
    ids = [body["event_id"] for _, body in got]
    return {"ms": ms, "sent": sent, "received": len(got), "distinct": len(set(ids))}
