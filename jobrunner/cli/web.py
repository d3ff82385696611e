"""`jobrunner web`: the dashboard served alone (`pip install 'jobrunner[web]'`).

It listens on `[web] listen` (default 127.0.0.1:9109). With `[web] token` every request
needs the token (a bearer header, or the login form's signed cookie) and actions are allowed;
without one it is read-only and refuses to listen anywhere but on loopback.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from jobrunner.cli.app import ConfigOption, app, fail, load_settings, say
from jobrunner.converters import split_listen

LOOPBACK = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def web(
    config: Path | None = ConfigOption,
    listen: str | None = typer.Option(
        None, "--listen", help="HOST:PORT (default: [web] listen, 127.0.0.1:9109)."
    ),
) -> None:
    """Serve the dashboard alone: jobs, slot timelines, runs, schedules, workers."""
    cfg = load_settings(config)
    host, port = cfg.web.host, cfg.web.port
    if listen is not None:
        try:
            host, port = split_listen(listen)
        except ValueError as exc:
            fail(f"--listen: {exc}", 2)
    token = cfg.web.token
    if token is None and not is_loopback(host):
        fail(
            f"[web] listen {host}:{port}: without [web] token the dashboard serves loopback "
            "only (127.0.0.1, ::1); set [web] token to serve other hosts",
            2,
        )
    try:
        import uvicorn

        from jobrunner.client import Client
        from jobrunner.web import create_dashboard
    except ImportError as exc:
        fail(f"jobrunner web needs the web extra ({exc.name}): pip install 'jobrunner[web]'", 2)
    client = Client.from_url(cfg.database.url)
    dashboard = create_dashboard(
        client, token=token, read_only=token is None, lease_ttl=cfg.worker.lease_ttl
    )
    if token is None:  # loopback only, also for a name that resolves here (DNS rebinding)
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        hosts = ["localhost", "127.0.0.1", "[::1]", "::1", host]
        dashboard.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    mode = "token required" if token else "read-only: no [web] token"
    say(f"dashboard on http://{host}:{port}/ ({mode})")
    try:
        uvicorn.run(dashboard, host=host, port=port, log_level="warning")
    finally:
        client.close()
