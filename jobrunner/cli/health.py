"""`jobrunner health`: whether the worker on this host is healthy (for probes)."""

from __future__ import annotations

from pathlib import Path

import typer

from jobrunner.cli.app import ConfigOption, app, load_settings


@app.command()
def health(
    config: Path | None = ConfigOption,
    timeout: float = typer.Option(
        1.5, "--timeout", min=0.1, max=30.0, help="Seconds to wait for the worker or database."
    ),
) -> None:
    """Exit 0 when the worker on this host is healthy, else 1 with the reason (for a
    container HEALTHCHECK or a liveness probe). Asks the worker's /healthz when the config
    sets http.listen, else the database (a worker from this hostname seen within lease_ttl)."""
    from jobrunner.health import check

    cfg = load_settings(config)
    ok, reason = check(cfg, timeout=timeout)
    if not ok:
        # One line, never wrapped: probes show it as the reason.
        typer.echo(f"unhealthy: {reason}", err=True)
        raise typer.Exit(1)
    typer.echo(f"healthy: {reason}")
