"""memory: RSS of one worker running config.example.toml on PostgreSQL.

The file is copied with two changes only: `[http] listen` gets a free port (so that runs on a
shared machine do not collide on 9108) and `import_paths` points at the repository (the copy
lives elsewhere). The example config's jobs run meanwhile (`tick` every 10 s, `cleanup` every
minute). RSS is sampled every 0.5 s for `duration` seconds; the peak and the last sample are
reported.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

from bench.common import ROOT, rss_bytes, start_jobrunner, stop_all, wait_jobrunner_started
from bench.report import Metric, Result
from bench.scenarios import Context

METRICS = [
    Metric("rss_peak", "worker RSS, peak", "MiB", "lower", 1),
    Metric("rss_last", "worker RSS, at the end", "MiB", "lower", 1),
    Metric("startup", "worker up after", "s", "lower", 2),
]


def run(ctx: Context, duration: float = 30.0) -> Result:
    result = Result(
        "memory",
        {"config": "config.example.toml", "duration_s": duration, "repeats": ctx.repeats},
        METRICS,
    )
    for r in range(ctx.repeats):
        workdir = ctx.dir(f"memory/r{r}")
        config = example_config(workdir / "config.toml")
        with ctx.server.fresh("memory") as url:
            t0 = time.monotonic()
            proc = start_jobrunner(
                config, workdir / "worker.log", env={"JOBRUNNER_DATABASE_URL": url}
            )
            try:
                wait_jobrunner_started([proc])
                up = time.monotonic() - t0
                peak = last = 0
                end = time.monotonic() + duration
                while time.monotonic() < end:
                    last = rss_bytes(proc.pid) or 0
                    peak = max(peak, last)
                    time.sleep(0.5)
            finally:
                codes = stop_all([proc])
        result.add("jobrunner", "rss_peak", peak / 2**20)
        result.add("jobrunner", "rss_last", last / 2**20)
        result.add("jobrunner", "startup", up)
        if codes != [0]:
            result.note(f"r{r}: exit code after SIGTERM {codes}")
        ctx.say(f"  memory r{r}: peak {peak / 2**20:.1f} MiB, last {last / 2**20:.1f} MiB")
    return result


def example_config(path: Path) -> Path:
    text = (ROOT / "config.example.toml").read_text()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    text = re.sub(r'(?m)^listen = "[^"]*"', f'listen = "127.0.0.1:{port}"', text)
    text = re.sub(
        r"(?m)^import_paths = \[[^\]]*\]", f"import_paths = [{json.dumps(str(ROOT))}]", text
    )
    path.write_text(text)
    return path
