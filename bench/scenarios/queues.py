"""queues: priority behind a backlog, and the cost of per-key and rate-limited claims (jobrunner).

Priority: a fresh database, one worker at the `[worker]` defaults (concurrency 16) and a
trigger-only no-op job. `backlog` runs are bulk-enqueued at priority 0, then the worker starts;
while it drains them, one run with priority 10 is enqueued every 50-100 ms (`urgent` of them,
fewer if the backlog would empty first: it is kept non-empty, and a note says if it emptied).
Latency = started_at - enqueued_at of each urgent run, both the database's times. The worker
is stopped once every urgent run started; the rest of the backlog goes with the database.

Limits: one job per variant, each a fresh database of `size` runs (bulk) drained by one
worker, measured as `throughput` measures a drain (runs/s in database time, worker CPU per
run), at each of `concurrencies`:
- plain: no limits;
- keyed: `concurrency_key = "tenant"`, `max_per_key = 1000`;
- rated: `rate_limit = "10000/1s"` per tenant (`concurrency_key = "tenant"`);
- rated-global: `rate_limit = "10000/1s"` for the whole job, at the default concurrency only
  (it may bind at 200; the peak of starts in any 1 s says whether it did).
Every variant runs the same function with the same kwargs (`tenants` tenant values in turn, so
that no per-key limit binds); only the limits differ. The variants take turns within each
repeat, so that the machine's noise hits them alike; the table's ratios are of the medians.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.common import percentile, scalar, stop_all, wait_for, wait_jobrunner_started
from bench.report import Metric, Result
from bench.scenarios import Context, throughput
from bench.systems import Jobrunner, System

URGENT = 10  # the priority of the runs enqueued behind the backlog
DEFAULT_CONCURRENCY = throughput.DEFAULT_CONCURRENCY
RATE = "10000/1s"
VARIANTS: dict[str, Mapping[str, Any]] = {
    "plain": {},
    "keyed": {"concurrency_key": "tenant", "max_per_key": 1000},
    "rated": {"concurrency_key": "tenant", "rate_limit": RATE},
    "rated-global": {"rate_limit": RATE},
}
AT_DEFAULT_ONLY = ("rated-global",)


def metrics(backlog: int, concurrencies: Sequence[int]) -> list[Metric]:
    behind = f"priority {URGENT} behind {backlog:,} queued runs, start latency"
    out = [
        Metric("urgent_p50", f"{behind} p50", "ms", "lower", 2),
        Metric("urgent_p99", f"{behind} p99", "ms", "lower", 2),
        Metric("urgent_max", f"{behind} max", "ms", "lower", 2),
    ]
    for c in concurrencies:
        out += [
            Metric(f"rate_{c}", f"drain at concurrency {c}, database time", "runs/s", "higher", 0),
            Metric(f"cpu_{c}", f"worker CPU per run, concurrency {c}", "us", "lower", 0),
        ]
    return out


def run(
    ctx: Context,
    size: int = 20_000,
    backlog: int = 100_000,
    urgent: int = 200,
    tenants: int = 100,
    concurrencies: Sequence[int] | None = None,
    gap: tuple[float, float] = (0.05, 0.1),
) -> Result:
    concs = tuple(concurrencies or ((ctx.concurrency,) if ctx.concurrency else (16, 200)))
    result = Result(
        "queues",
        {
            "runs per drain": size,
            "tenants": tenants,
            "concurrencies": list(concs),
            "backlog": backlog,
            "urgent runs": urgent,
            "gap_ms": f"{gap[0] * 1000:.0f}-{gap[1] * 1000:.0f}",
            "priority worker concurrency": ctx.concurrency or DEFAULT_CONCURRENCY,
            "repeats": ctx.repeats,
        },
        metrics(backlog, concs),
        ratio_to="plain",
    )
    rng = random.Random(7)
    kwargs = [{"tenant": f"t{i:03d}"} for i in range(tenants)]
    for r in range(ctx.repeats):
        label = f"queues priority r{r}"
        m = ctx.guarded(label, functools.partial(measure_urgent, ctx, r, backlog, urgent, gap, rng))
        lat = m["lat"]
        if len(lat) != m["sent"]:
            result.note(f"{label}: {len(lat)} of {m['sent']} urgent runs started")
        if m["sent"] < urgent:
            result.note(f"{label}: {m['sent']} of {urgent} urgent runs (the backlog ran low)")
        if not m["left"]:
            result.note(f"{label}: the backlog emptied before the last urgent run started")
        for key, q in (("urgent_p50", 50), ("urgent_p99", 99), ("urgent_max", 100)):
            result.add("plain", key, percentile(lat, q))
        ctx.say(
            f"  {label}: {m['sent']} urgent runs, p50 {percentile(lat, 50) or 0:.2f} ms, "
            f"p99 {percentile(lat, 99) or 0:.2f} ms, max {percentile(lat, 100) or 0:.2f} ms; "
            f"{m['left']:,} of the backlog still queued after the last one started"
        )
        for c in concs:
            rates: dict[str, float | None] = {}
            for variant, limits in VARIANTS.items():
                if variant in AT_DEFAULT_ONLY and c != DEFAULT_CONCURRENCY:
                    continue
                job = {"name": variant, "func": "bench.jobs:tenant_noop", **limits}
                rates[variant] = drain(ctx, result, variant, job, kwargs, size, r, c)
            paired = {v: ratio(x, rates["plain"]) for v, x in rates.items() if v != "plain"}
            result.extra.setdefault("paired_ratios", {}).setdefault(f"c{c}", []).append(paired)
            ctx.say(
                f"  r{r} c{c} runs/s against plain: "
                + ", ".join(f"{v} {times(x)}" for v, x in paired.items())
            )
    return result


def drain(
    ctx: Context,
    result: Result,
    variant: str,
    job: Mapping[str, Any],
    kwargs: Sequence[Mapping[str, Any]],
    size: int,
    r: int,
    concurrency: int,
    scenario: str = "queues",
    **system: Any,
) -> float | None:
    """One fill and drain of the variant's job (its `[[jobs]]` table); its runs/s (database
    time). `system`: more of `Jobrunner`'s arguments (`worker_env`, `worker_prefix`)."""
    label = f"{scenario} {variant} r{r} c{concurrency}"

    def make(url: str, workdir: Path) -> System:
        return Jobrunner(url, workdir, concurrency=concurrency, jobs=[job], kwargs=kwargs, **system)

    m = ctx.guarded(
        label,
        lambda: throughput.measure(
            ctx,
            "jobrunner",
            "bulk",
            1,
            size,
            r,
            concurrency,
            make=make,
            where=f"{scenario}/{variant}-r{r}-c{concurrency}",
            probe=_peak_starts,
        ),
    )
    db_rate, cpu_us = throughput.figures(result, label, m, size)
    result.add(variant, f"rate_{concurrency}", db_rate)
    result.add(variant, f"cpu_{concurrency}", cpu_us)
    peak = m["probe"]
    result.extra.setdefault("peak_starts_per_s", {}).setdefault(variant, []).append(peak)
    if "rate_limit" in job and "concurrency_key" not in job:
        count = int(str(job["rate_limit"]).split("/")[0])
        bound = "bound" if peak is not None and peak >= count else "did not bind"
        result.note(f"{label}: peak {peak or 0:,} starts in 1 s, limit {count:,}: {bound}")
    ctx.say(
        f"  {label}: drain {_f(db_rate)}/s (db), worker CPU {_f(cpu_us)} us per run, "
        f"peak {peak or 0:,} starts in 1 s"
    )
    return db_rate


def _peak_starts(system: System) -> int | None:
    """The most runs started in any 1 s (trailing windows ending at each start)."""
    found = scalar(
        system.db_url,
        """SELECT max(n) FROM (
               SELECT count(*) OVER (ORDER BY started_at
                                     RANGE BETWEEN interval '1 second' PRECEDING AND CURRENT ROW)
                      AS n
               FROM job_runs WHERE started_at IS NOT NULL) w""",
    )
    return None if found is None else int(found)


def measure_urgent(
    ctx: Context,
    r: int,
    backlog: int,
    urgent: int,
    gap: tuple[float, float],
    rng: random.Random,
) -> dict[str, Any]:
    workdir = ctx.dir(f"queues/priority-r{r}")
    with ctx.server.fresh("qu_priority") as url:
        system = Jobrunner(url, workdir, concurrency=ctx.concurrency)
        system.setup()
        try:
            system.enqueue_bulk(backlog)
            system.start_worker()
            wait_jobrunner_started(system.procs)
            time.sleep(0.5)
            low = max(backlog // 10, 1)  # at the drain rate: seconds' worth, checked every 10
            sent = 0
            while sent < urgent:
                if sent % 10 == 0 and _queued(url, 0) < low:
                    break
                system.enqueue_each(1, priority=URGENT)
                sent += 1
                time.sleep(rng.uniform(*gap))
            wait_for(_started(url, URGENT), 30, 0.05)
            left = _queued(url, 0)  # still queued behind the last urgent run's start
            lat = [x * 1000 for x in system.latencies(URGENT)]
        finally:
            stop_all(system.procs)
            system.close()
    return {"sent": sent, "lat": lat, "left": left}


def _queued(url: str, priority: int) -> int:
    return int(
        scalar(
            url,
            "SELECT count(*) FROM job_runs WHERE status = 'queued' AND priority = %s",
            (priority,),
        )
    )


def _started(url: str, priority: int) -> Callable[[], bool]:
    return lambda: _queued(url, priority) == 0


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


def times(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}x"
