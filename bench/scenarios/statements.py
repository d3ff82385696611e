"""statements: database statements per run while one worker drains a queue (a diagnostic).

Each system's queue is filled in bulk, then one worker drains it through a counting proxy
(bench/pgproxy.py): statements per run (BEGIN/COMMIT included), and the statements that
dominate. The proxy adds a little latency, so runs/s here are not the throughput figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import sqlalchemy as sa

from bench.common import stop_all, wait_for
from bench.pgproxy import Proxies
from bench.report import Metric, Result
from bench.scenarios import Context
from bench.systems import SYSTEMS, System

METRICS = [
    Metric("per_run", "statements per run", "", "lower", 2),
    Metric("tx_per_run", "BEGIN per run", "", "lower", 2),
]


def run(ctx: Context, size: int = 5000) -> Result:
    result = Result("statements", {"runs": size, "repeats": ctx.repeats}, METRICS)
    server = sa.make_url(ctx.server.url)
    for r in range(ctx.repeats):
        for name in ctx.systems:
            proxies = Proxies(server.host or "127.0.0.1", server.port or 5432)
            try:
                with ctx.server.fresh(f"st_{name}") as url:
                    proxy = proxies.new()
                    query = {"sslmode": "disable"}
                    if name != "pgqueuer":  # asyncpg would send it on as a server setting
                        query["gssencmode"] = "disable"
                    via = (
                        sa.make_url(url)
                        .set(host="127.0.0.1", port=proxy.port)
                        .update_query_dict(query)
                        .render_as_string(hide_password=False)
                    )
                    system = SYSTEMS[name](
                        url,
                        ctx.dir(f"statements/{name}-r{r}"),
                        concurrency=ctx.concurrency if name == "jobrunner" else None,
                        worker_url=via,
                    )
                    system.setup()
                    try:
                        system.enqueue_bulk(size)
                        system.start_worker()
                        done = wait_for(_drained(system), 60 + size / 20, 0.1)
                        n, _, _ = system.done_window()
                        stop_all(system.procs)
                        counts = proxy.snapshot()
                    finally:
                        stop_all(system.procs)
                        system.close()
            finally:
                proxies.close()
            total = sum(counts.values())
            if not done or n != size:
                result.note(f"{name} r{r}: {n} of {size} runs succeeded")
            result.add(name, "per_run", total / n if n else None)
            result.add(name, "tx_per_run", counts.get("BEGIN", 0) / n if n else None)
            top = Counter({k: round(v / n, 3) for k, v in counts.most_common(15)})
            result.extra.setdefault("top_per_run", {})[f"{name}-r{r}"] = dict(top)
            ctx.say(f"  statements {name} r{r}: {total / max(n, 1):.2f} per run")
            for sql, per in top.most_common(15):
                ctx.say(f"      {per:8.3f}/run  {sql}")
    return result


def _drained(system: System) -> Callable[[], bool]:
    def check() -> bool:
        return system.unfinished() == 0

    return check
