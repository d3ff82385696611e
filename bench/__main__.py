"""`python -m bench SCENARIO --db URL [--repeats N] [--size N] ...`

Scenarios: throughput, pickup (jobrunner, procrastinate, pgqueuer side by side); firelag, scale,
failover, partition, upgrade, idle, memory, queues, results, schedules, dashboard,
notify, traces, history (jobrunner);
pgbench (the machine's limit); statements (a diagnostic: statements per run, side by side);
all (each in turn).
`--db` is a PostgreSQL server URL (its maintenance database): each scenario creates fresh
databases named bench_* and drops every one at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Server, kill_all, stop_all
from bench.report import Result, dump
from bench.scenarios import Context
from bench.systems import ALL_SYSTEMS, PEERS

SCENARIOS = (
    "throughput",
    "pickup",
    "firelag",
    "scale",
    "failover",
    "partition",
    "upgrade",
    "idle",
    "memory",
    "queues",
    "results",
    "schedules",
    "dashboard",
    "notify",
    "traces",
    "history",
    "pgbench",
    "statements",
)
WITH_PEERS = ("throughput", "pickup", "statements")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("scenario", choices=(*SCENARIOS, "all"))
    p.add_argument("--db", required=True, help="PostgreSQL server URL (maintenance database)")
    p.add_argument("--repeats", type=int, default=None, help="repeats (median is reported)")
    p.add_argument(
        "--size",
        type=int,
        default=None,
        help="throughput: runs; pickup: runs; firelag/scale: cron jobs; "
        "idle: largest replica count; queues, results: runs per drain; schedules: schedules; "
        "dashboard: rows",
    )
    p.add_argument(
        "--duration",
        type=float,
        default=None,
        help="firelag: fire times observed (s); scale: minutes observed; "
        "idle: measuring window (s); memory: seconds; pgbench: seconds; schedules: fire "
        "minutes",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="firelag (3), scale (4), failover (2), schedules (4): worker processes",
    )
    p.add_argument("--workers", default="1,2", help="throughput: worker counts (default 1,2)")
    p.add_argument(
        "--systems",
        default=",".join(ALL_SYSTEMS),
        help="systems to run where peers apply (default: all three)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="jobrunner [worker] concurrency (default: throughput 200, scale one replica's share "
        "of the jobs, queues 16 and 200 for its drains, the others jobrunner's default 16)",
    )
    p.add_argument("--cron", default=None, help="scale: cron of every job (default * * * * *)")
    p.add_argument("--lease-ttl", default="30s", help="failover: lease_ttl (default 30s)")
    p.add_argument("--old", default="HEAD~1", help="upgrade: the earlier commit (default HEAD~1)")
    p.add_argument("--heartbeat", default="10s", help="failover: heartbeat (default 10s)")
    p.add_argument("--shutdown-grace", default="1s", help="failover: shutdown_grace (1s)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--workdir", default=None, help="keep configs and worker logs here")
    return p.parse_args(argv)


def options(args: argparse.Namespace, scenario: str) -> dict[str, Any]:
    """Scenario keyword arguments from the generic command-line options."""
    opts: dict[str, Any] = {}
    if scenario == "throughput":
        opts["workers"] = tuple(int(w) for w in args.workers.split(","))
        if args.size:
            opts["size"] = args.size
    elif scenario in ("pickup", "statements", "queues", "results"):
        if args.size:
            opts["size"] = args.size
    elif scenario in ("firelag", "scale"):
        if args.size:
            opts["jobs"] = args.size
        if args.replicas:
            opts["replicas"] = args.replicas
        if args.duration:
            opts["fire_times"] = int(args.duration)
        if scenario == "scale" and args.cron:
            opts["cron"] = args.cron
    elif scenario == "upgrade":
        opts["old"] = args.old
        if args.replicas:
            opts["replicas"] = args.replicas
    elif scenario == "failover":
        opts.update(
            lease_ttl=args.lease_ttl, heartbeat=args.heartbeat, shutdown_grace=args.shutdown_grace
        )
        if args.replicas:
            opts["replicas"] = args.replicas
    elif scenario == "idle":
        if args.size:
            opts["counts"] = (*(c for c in (1, 5, 20) if c < args.size), args.size)
        if args.duration:
            opts["window"] = args.duration
    elif scenario in ("notify", "traces"):
        if args.size:
            opts["size"] = args.size
    elif scenario in ("dashboard", "history"):
        if args.size:
            opts["rows"] = args.size
    elif scenario == "schedules":
        if args.size:
            opts["count"] = args.size
        if args.replicas:
            opts["replicas"] = args.replicas
        if args.duration:
            opts["minutes"] = int(args.duration)
    elif scenario in ("memory", "pgbench") and args.duration:
        opts["duration"] = args.duration
    return opts


def machine_facts(server: Server) -> dict[str, str]:
    def sh(cmd: str) -> str:
        try:
            return subprocess.run(
                cmd, shell=True, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except Exception:
            return "?"

    return {
        "nproc": sh("nproc"),
        "memory": sh("free -h | awk '/Mem:/ {print $2}'"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "postgresql": server.version(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    server = Server(args.db)
    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = set(systems) - set(ALL_SYSTEMS)
    if unknown:
        print(f"unknown systems {sorted(unknown)}: allowed {', '.join(ALL_SYSTEMS)}")
        return 2
    scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="jobrunner-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    facts = machine_facts(server)
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()), flush=True)
    print(f"logs and configs: {workdir}", flush=True)
    results: list[Result] = []
    try:
        for scenario in scenarios:
            ctx = Context(
                server=server,
                workdir=workdir,
                repeats=args.repeats or default_repeats(scenario),
                systems=systems if scenario in WITH_PEERS else ("jobrunner",),
                concurrency=args.concurrency,
            )
            missing = [s for s in ctx.systems if s in PEERS and not _installed(s)]
            if missing:
                print(f"not installed (pip install -e '.[bench]'): {', '.join(missing)}")
                ctx.systems = tuple(s for s in ctx.systems if s not in missing)
            module = importlib.import_module(f"bench.scenarios.{scenario}")
            print(f"== {scenario} ({ctx.repeats} repeat(s))", flush=True)
            t0 = time.monotonic()
            load0 = os.getloadavg()
            result: Result = module.run(ctx, **options(args, scenario))
            result.extra["seconds"] = round(time.monotonic() - t0, 1)
            result.extra["loadavg"] = {"start": load0, "end": os.getloadavg()}
            result.note(
                f"took {result.extra['seconds']:.0f}s; load average (1 min) "
                f"{load0[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
            )
            results.append(result)
            print(result.render(), flush=True)
            print(flush=True)
            if args.json:
                dump(results, args.json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        stop_all(timeout=10)
        kill_all()
        server.drop_all()
    return 0


def default_repeats(scenario: str) -> int:
    if scenario == "partition":
        return 2
    return (
        3 if scenario in ("throughput", "pickup", "failover", "pgbench", "queues", "results") else 1
    )


def _installed(system: str) -> bool:
    try:
        importlib.import_module({"procrastinate": "procrastinate", "pgqueuer": "pgqueuer"}[system])
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
