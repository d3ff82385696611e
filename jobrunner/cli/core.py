"""`jobrunner run` and `jobrunner check`: start a worker, validate a config."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from jobrunner.cli.app import ConfigOption, app, err, limits_text, load, out, table, when
from jobrunner.config import Config, mask_url
from jobrunner.daemon import run_worker


@app.command()
def run(config: Path | None = ConfigOption) -> None:
    """Start a worker: fire cron slots and queued runs until SIGTERM/SIGINT."""
    raise typer.Exit(run_worker(config))


@app.command()
def check(
    config: Path | None = ConfigOption,
    count: int = typer.Option(3, "-n", min=1, max=100, help="Fire times to show per job."),
) -> None:
    """Validate the config, import every func, print each job's next fire times.

    Jobs with isolation = "process" get their arguments in a child process: kwargs that
    cannot be pickled are an error (exit 2)."""
    from jobrunner.schedule import next_fire_times
    from jobrunner.worker.isolation import unpicklable

    cfg = load(config)
    isolated = [(i, job) for i, job in enumerate(cfg.jobs) if job.isolation == "process"]
    problems = [
        f"{cfg.path}: jobs[{i}].kwargs.{key}: job {job.name!r}: runs with isolation = "
        f"'process', so its arguments must be picklable, but this one is not ({why})"
        for i, job in isolated
        for key, why in unpicklable(job.kwargs).items()
    ]
    for problem in problems:
        err.print(f"error: {problem}", markup=False, highlight=False)
    if problems:
        raise typer.Exit(2)
    now = datetime.now(UTC)
    t = table("JOB", "FUNC", "KIND", "QUEUE", "OVERLAP", "SCHEDULE", "ZONE", "NEXT")
    for job in cfg.jobs:
        kind = "async" if job.is_async else "sync"
        if job.isolation == "process":
            kind += ", process" + (f" (max {job.max_memory} bytes)" if job.max_memory else "")
        overlap = limits_text(job.definition())
        head = (job.name, job.func, kind, job.queue, overlap)
        if job.cron is None:
            t.add_row(*head, "(trigger only)", job.timezone.key, "-")
            continue
        times = next_fire_times(job.cron, job.timezone, now, count)
        t.add_row(
            *head,
            job.cron,
            job.timezone.key,
            "\n".join(when(x, job.timezone) for x in times),
        )
    out.print(t)
    if isolated:
        names = ", ".join(job.name for _, job in isolated)
        out.print(
            f"isolation = 'process' ({names}): each call runs in a child process, so its "
            "arguments (the kwargs here and those given at enqueue) must be picklable; "
            "return values stay in the child"
        )
    _warn_queues(cfg)
    out.print(f"{cfg.path}: ok, {len(cfg.jobs)} job(s), database {mask_url(cfg.database.url)}")


def _warn_queues(cfg: Config) -> None:
    """Name the queues `[worker] queues` serves that no job uses, and the jobs this worker
    will not run (their queue is not served)."""
    served = cfg.worker.queues
    if served is None:
        return
    used = {job.queue for job in cfg.jobs}
    for name in served:
        if name not in used:
            err.print(
                f"warning: {cfg.path}: worker.queues: no job uses queue {name!r} (queues of the "
                f"jobs: {', '.join(sorted(used)) or 'none'}); is it misspelt?",
                markup=False,
                highlight=False,
            )
    skipped = [job.name for job in cfg.jobs if job.queue not in served]
    if skipped:
        out.print(
            f"worker.queues = {list(served)}: this worker does not run {', '.join(skipped)} "
            "(other queues); a worker that serves their queue must"
        )
