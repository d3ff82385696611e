"""throughput: enqueue N no-op runs, then drain them with 1 (and 2) worker processes.

Per repeat and system, two fresh databases: one filled one run per transaction through the
public client API (`enqueue_each`), drained by the first worker count; one filled through the
bulk path (`enqueue_bulk`), drained by the second. runs/s from the database = runs succeeded /
(last finish - first start); wall = runs / (worker spawn to queue empty), which includes the
workers' start-up.

jobrunner runs with `[worker] concurrency = 200` unless `--concurrency` says otherwise:
pgqueuer's entrypoint has no concurrency limit (its default), and a claim takes at most the
free places, so with jobrunner's default of 16 its claims hold 16 runs against pgqueuer's
unbounded dispatch. One more drain per repeat (bulk-filled, 1 worker) runs jobrunner with its
default 16, reported on its own row.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import rss_bytes, stop_all, wait_for
from bench.report import Metric, Result
from bench.scenarios import Context
from bench.systems import SYSTEMS, System


def metrics(workers: Sequence[int]) -> list[Metric]:
    out = [
        Metric("enqueue_each", "enqueue, one run per transaction", "runs/s", "higher", 0),
        Metric("enqueue_bulk", "enqueue, bulk", "runs/s", "higher", 0),
    ]
    for k in workers:
        out += [
            Metric(
                f"db_rate_{k}", f"drain with {k} worker(s), database time", "runs/s", "higher", 0
            ),
            Metric(
                f"wall_rate_{k}", f"drain with {k} worker(s), wall clock", "runs/s", "higher", 0
            ),
            Metric(f"cpu_us_{k}", f"worker CPU per run, {k} worker(s)", "us", "lower", 0),
        ]
    out += [
        Metric(
            "db_rate_default",
            f"drain with 1 worker at jobrunner's default concurrency ({DEFAULT_CONCURRENCY}), "
            "database time",
            "runs/s",
            "higher",
            0,
        ),
        Metric("cpu_us_default", "worker CPU per run, default concurrency", "us", "lower", 0),
    ]
    return out


def plan(workers: Sequence[int]) -> list[tuple[str, int]]:
    """(enqueue mode, worker count) for each database of a repeat."""
    if len(workers) == 1:
        return [("each", workers[0]), ("bulk", workers[0])]
    return [("each", workers[0]), *(("bulk", k) for k in workers[1:])]


CONCURRENCY = 200  # jobrunner's, unless --concurrency (see the module's docstring)
DEFAULT_CONCURRENCY = 16  # jobrunner's own default (config.example.toml)


def run(ctx: Context, size: int = 20_000, workers: Sequence[int] = (1, 2)) -> Result:
    result = Result(
        "throughput",
        {
            "runs": size,
            "workers": list(workers),
            "repeats": ctx.repeats,
            "jobrunner concurrency": ctx.concurrency or CONCURRENCY,
            "procrastinate concurrency": 10,
            "pgqueuer batch_size": 10,
            "pgqueuer concurrency_limit": "0 (unlimited, its default)",
        },
        metrics(workers),
    )
    for r in range(ctx.repeats):
        for name in ctx.systems:
            for mode, k in plan(workers):
                drain(ctx, result, name, mode, k, size, r)
            if name == "jobrunner":
                drain(ctx, result, name, "bulk", 1, size, r, DEFAULT_CONCURRENCY)
    return result


def drain(
    ctx: Context,
    result: Result,
    name: str,
    mode: str,
    k: int,
    size: int,
    r: int,
    concurrency: int | None = None,
) -> None:
    """One fill and drain; with `concurrency` (jobrunner), at that concurrency, reported
    on the `_default` rows only."""
    label = f"throughput {name} r{r} {mode}/{k}" + (f" c{concurrency}" if concurrency else "")
    conc = concurrency or ctx.concurrency or CONCURRENCY
    m = ctx.guarded(label, lambda: measure(ctx, name, mode, k, size, r, conc))
    db_rate, cpu_us = figures(result, label, m, size)
    n, wall = m["n"], m["wall"]
    if concurrency:
        result.add(name, "db_rate_default", db_rate)
        result.add(name, "cpu_us_default", cpu_us)
    else:
        result.add(name, f"enqueue_{mode}", size / m["secs"])
        result.add(name, f"db_rate_{k}", db_rate)
        result.add(name, f"wall_rate_{k}", n / wall if m["done"] else None)
        result.add(name, f"cpu_us_{k}", cpu_us)
    result.extra.setdefault("rss_mib", {}).setdefault(name, []).append(round(m["rss"], 1))
    ctx.say(
        f"  {label}: enqueue {size / m['secs']:,.0f}/s; drain {_f(db_rate)}/s (db), "
        f"{n / wall if m['done'] else 0:,.0f}/s (wall), worker CPU {m['cpu']:.1f}s, "
        f"RSS {m['rss']:.0f} MiB"
    )


def figures(
    result: Result, label: str, m: dict[str, Any], size: int
) -> tuple[float | None, float | None]:
    """(runs/s in database time, worker CPU us per run) of one `measure`; a note when not
    every run succeeded or a worker did not exit 0."""
    if not m["done"] or m["n"] != size:
        result.note(f"{label}: {m['n']} of {size} runs succeeded (drained: {m['done']})")
    if any(c != 0 for c in m["codes"]):
        result.note(f"{label}: worker exit codes {m['codes']} after SIGTERM")
    n, first, last = m["n"], m["first"], m["last"]
    db_rate = (
        n / (last - first) if first is not None and last is not None and last > first else None
    )
    return db_rate, m["cpu"] / n * 1e6 if n else None


def measure(
    ctx: Context,
    name: str,
    mode: str,
    k: int,
    size: int,
    r: int,
    concurrency: int,
    *,
    make: Callable[[str, Path], System] | None = None,
    where: str | None = None,
    probe: Callable[[System], Any] | None = None,
) -> dict[str, Any]:
    """Fill a fresh database with `size` runs, drain it with `k` workers. `make(url,
    workdir)` builds the system instead of `SYSTEMS[name]` (its own jobs), `where` names the
    work directory, `probe(system)` reads the drained database before it is dropped (its value
    is the result's "probe")."""
    workdir = ctx.dir(where or f"throughput/{name}-r{r}-{mode}-c{concurrency}")
    with ctx.server.fresh(f"tp_{name}") as url:
        system = (
            make(url, workdir)
            if make
            else SYSTEMS[name](
                url, workdir, concurrency=concurrency if name == "jobrunner" else None
            )
        )
        system.setup()
        try:
            secs = system.enqueue_each(size) if mode == "each" else system.enqueue_bulk(size)
            t0 = time.monotonic()
            procs = [system.start_worker() for _ in range(k)]

            def drained() -> bool:
                if not any(p.alive() for p in procs):
                    raise RuntimeError(f"{name}: every worker exited:\n{procs[0].tail()}")
                return system.unfinished() == 0

            done = wait_for(drained, 60 + size / 20, 0.1)
            wall = time.monotonic() - t0
            cpu = sum(_cpu_seconds(p.pid) or 0.0 for p in procs)
            rss = max((rss_bytes(p.pid) or 0) for p in procs) / 2**20
            codes = stop_all(procs)
            n, first, last = system.done_window()
            found = probe(system) if probe else None
        finally:
            stop_all(system.procs)
            system.close()
    return {
        "secs": secs,
        "done": done,
        "wall": wall,
        "cpu": cpu,
        "rss": rss,
        "codes": codes,
        "n": n,
        "first": first,
        "last": last,
        "probe": found,
    }


def _cpu_seconds(pid: int) -> float | None:
    try:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except Exception:
        return None


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}"
