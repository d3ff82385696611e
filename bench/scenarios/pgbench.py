"""pgbench: the machine's limit for one-statement commits, as the issue states it.

On a scratch database (`pgbench -i -s 10`): a one-statement UPDATE per transaction (a custom
script, autocommit) with 1 and 4 clients, the built-in simple-update (`-N`) and select-only
(`-S`) with 1 client; `duration` seconds each, median transactions/s over repeats.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import sqlalchemy as sa

from bench.report import Metric, Result
from bench.scenarios import Context

SCRIPT = """\\set aid random(1, 100000 * :scale)
UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = :aid;
"""

METRICS = [
    Metric("update_c1", "one-statement UPDATE commits, 1 client", "tps", "higher", 0),
    Metric("update_c4", "one-statement UPDATE commits, 4 clients", "tps", "higher", 0),
    Metric("simple_c1", "built-in simple-update (-N), 1 client", "tps", "higher", 0),
    Metric("select_c1", "select-only (-S), 1 client", "tps", "higher", 0),
]


def run(ctx: Context, duration: float = 5.0) -> Result:
    result = Result("pgbench", {"duration_s": duration, "repeats": ctx.repeats}, METRICS)
    if shutil.which("pgbench") is None:
        result.note("pgbench is not installed: skipped")
        return result
    script = ctx.dir("pgbench") / "one_update.sql"
    script.write_text(SCRIPT)
    with ctx.server.fresh("pgbench") as url:
        u = sa.make_url(url)
        conn = [
            "-h",
            u.host or "127.0.0.1",
            "-p",
            str(u.port or 5432),
            "-U",
            u.username or "postgres",
        ]
        env_pw = {"PGPASSWORD": u.password} if u.password else {}
        _pgbench([*conn, "-i", "-q", "-s", "10", str(u.database)], env_pw)
        t = str(int(duration))
        runs = {
            "update_c1": ["-n", "-f", str(script), "-c", "1", "-j", "1", "-T", t],
            "update_c4": ["-n", "-f", str(script), "-c", "4", "-j", "2", "-T", t],
            "simple_c1": ["-n", "-N", "-c", "1", "-j", "1", "-T", t],
            "select_c1": ["-n", "-S", "-c", "1", "-j", "1", "-T", t],
        }
        for r in range(ctx.repeats):
            for key, args in runs.items():
                out = _pgbench([*conn, *args, str(u.database)], env_pw)
                m = re.search(r"tps = ([\d.]+)", out)
                tps = float(m.group(1)) if m else None
                result.add("pgbench", key, tps)
                ctx.say(f"  pgbench r{r} {key}: {tps} tps")
    return result


def _pgbench(args: list[str], env: dict[str, str]) -> str:
    import os

    done = subprocess.run(
        ["pgbench", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout + done.stderr
