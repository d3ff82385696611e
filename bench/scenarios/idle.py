"""idle: statements per second that each idle replica sends, with 1, 5 and 20 replicas.

Each replica has one job with no cron (nothing is ever due) and the example config's [worker]
defaults (heartbeat 10s, poll 1s). Every replica talks to PostgreSQL through its own counting
proxy (bench/pgproxy.py), which counts each statement it sends, BEGIN/COMMIT included, as
pg_stat_statements would; pg_stat_database's xact_commit + xact_rollback delta for the
database gives transactions per second as a cross-check. Measured over `window` seconds after
every replica is up and `settle` seconds have passed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

from bench.common import (
    median,
    rss_bytes,
    scalar,
    start_jobrunner,
    stop_all,
    wait_jobrunner_started,
    write_jobrunner_config,
)
from bench.pgproxy import Proxies
from bench.report import Metric, Result
from bench.scenarios import Context

NOOP: Sequence[Mapping[str, Any]] = ({"name": "noop", "func": "bench.jobs:noop"},)


def metrics(counts: Sequence[int]) -> list[Metric]:
    out = []
    for n in counts:
        out += [
            Metric(f"stmt_{n}", f"{n} replica(s): statements/s per replica", "", "lower", 2),
            Metric(
                f"stmt_max_{n}", f"{n} replica(s): statements/s, busiest replica", "", "lower", 2
            ),
            Metric(f"xact_{n}", f"{n} replica(s): transactions/s per replica", "", "lower", 2),
            Metric(f"rss_{n}", f"{n} replica(s): RSS per replica", "MiB", "lower", 0),
        ]
    return out


def run(
    ctx: Context, counts: Sequence[int] = (1, 5, 20), window: float = 60.0, settle: float = 5.0
) -> Result:
    result = Result(
        "idle",
        {"replicas": list(counts), "window_s": window, "repeats": ctx.repeats},
        metrics(counts),
    )
    for r in range(ctx.repeats):
        for n in counts:
            after, before, x0, x1, elapsed, rss, codes = ctx.guarded(
                f"idle r{r} n={n}", lambda r=r, n=n: measure(ctx, r, n, window, settle)
            )
            deltas = [a - b for a, b in zip(after, before, strict=True)]
            rates = [sum(d.values()) / elapsed for d in deltas]
            result.add("jobrunner", f"stmt_{n}", median(rates))
            result.add("jobrunner", f"stmt_max_{n}", max(rates))
            result.add("jobrunner", f"xact_{n}", (x1 - x0) / elapsed / n)
            result.add("jobrunner", f"rss_{n}", median([x / 2**20 for x in rss]))
            total: Counter[str] = Counter()
            for d in deltas:
                total.update(d)
            per_min = {k: round(v / n / elapsed * 60, 1) for k, v in total.most_common(12)}
            result.extra.setdefault("statements_per_replica_minute", {})[f"r{r}-n{n}"] = per_min
            if any(c != 0 for c in codes):
                result.note(f"r{r} n={n}: exit codes after SIGTERM {codes}")
            ctx.say(
                f"  idle r{r} n={n}: {median(rates):.2f} statements/s per replica "
                f"(max {max(rates):.2f}), {(x1 - x0) / elapsed / n:.2f} xact/s per replica"
            )
            for sql, per in per_min.items():
                ctx.say(f"      {per:7.1f}/min  {sql}")
    return result


def measure(
    ctx: Context,
    r: int,
    n: int,
    window: float,
    settle: float,
    *,
    jobs: Sequence[Mapping[str, Any]] = NOOP,
    after_start: Callable[[str], None] | None = None,
) -> tuple[Any, ...]:
    """`n` replicas with `jobs`, each through its own counting proxy; `after_start(url)`
    runs once they are up, before the settle time and the window."""
    server = sa.make_url(ctx.server.url)
    workdir = ctx.dir(f"idle/r{r}-n{n}")
    proxies = Proxies(server.host or "127.0.0.1", server.port or 5432)
    try:
        with ctx.server.fresh("idle") as url:
            db = sa.make_url(url).database
            procs = []
            meters = []
            for i in range(n):
                proxy = proxies.new()
                meters.append(proxy)
                via = (
                    sa.make_url(url)
                    .set(host="127.0.0.1", port=proxy.port)
                    .update_query_dict({"sslmode": "disable", "gssencmode": "disable"})
                    .render_as_string(hide_password=False)
                )
                config = write_jobrunner_config(
                    workdir / f"replica{i}.toml",
                    via,
                    jobs,
                )
                procs.append(start_jobrunner(config, workdir / f"replica{i}.log"))
            try:
                wait_jobrunner_started(procs, timeout=300)
                if after_start is not None:
                    after_start(url)
                time.sleep(settle)
                before = [m.snapshot() for m in meters]
                x0 = _xacts(ctx, db)
                t0 = time.monotonic()
                time.sleep(window)
                after = [m.snapshot() for m in meters]
                x1 = _xacts(ctx, db)
                elapsed = time.monotonic() - t0
                rss = [rss_bytes(p.pid) or 0 for p in procs]
            finally:
                codes = stop_all(procs)
    finally:
        proxies.close()
    return after, before, x0, x1, elapsed, rss, codes


def _xacts(ctx: Context, db: str | None) -> int:
    return int(
        scalar(
            ctx.server.url,
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (db,),
        )
    )
