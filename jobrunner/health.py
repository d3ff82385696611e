"""Health checks: `jobrunner health` (a container HEALTHCHECK or liveness probe) and the
building blocks of the worker's /healthz and /readyz.

`jobrunner health -c FILE` asks the worker on this host:

- with `[http]` set: `GET /healthz` on the configured address (`0.0.0.0` and `::` mean this
  host's loopback), healthy on 200;
- without it: the database, healthy when a worker registered from this hostname was seen
  within `lease_ttl` (by the database's clock). In a container the hostname is the
  container's, so this is the local worker.

Every check returns `(ok, one-line reason)` and is bounded by a timeout, because it runs every
few seconds under a probe's deadline.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from jobrunner.config import Config
from jobrunner.logging import mask_secrets
from jobrunner.store.access import AdminStore
from jobrunner.store.ports import WorkerPort

__all__ = ["check", "check_database", "check_http", "database_ready", "probe_loop"]

Verdict = tuple[bool, str]

_LOOPBACK = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}


def check(cfg: Config, *, timeout: float = 1.0) -> Verdict:
    """Is the worker on this host healthy? Over HTTP when `[http]` is set, else the database."""
    if cfg.http is not None:
        return check_http(cfg.http.host, cfg.http.port, timeout=timeout)
    return check_database(cfg, timeout=timeout)


def check_http(host: str, port: int, *, timeout: float = 1.0) -> Verdict:
    """`GET http://host:port/healthz`: healthy on 200; the reason is the body or the error."""
    target = _LOOPBACK.get(host, host)
    where = f"http://{f'[{target}]' if ':' in target else target}:{port}/healthz"
    conn = http.client.HTTPConnection(target, port, timeout=timeout)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = " ".join(response.read(1000).decode("utf-8", "replace").split())
    except ConnectionRefusedError:
        return False, f"no worker listening on {where}"
    except TimeoutError:
        return False, f"{where} did not answer within {timeout:g}s"
    except (OSError, http.client.HTTPException) as exc:
        return False, f"{where}: {type(exc).__name__}: {_first_line(exc)}"
    finally:
        conn.close()
    if response.status == 200:
        return True, f"{where}: {body or 'ok'}"
    return False, f"{where} answered {response.status}: {body or response.reason}"


def check_database(cfg: Config, *, hostname: str | None = None, timeout: float = 1.0) -> Verdict:
    """Healthy when a worker row from `hostname` (default: this host) has a `last_seen`
    within `lease_ttl` of the database's now. Gives up after `timeout` seconds."""
    host = hostname or socket.gethostname()
    result: list[Verdict] = []
    thread = threading.Thread(
        target=lambda: result.append(_check_database(cfg, host)),
        name="jobrunner-health",
        daemon=True,  # a connection stuck past the deadline must not keep the process alive
    )
    thread.start()
    thread.join(timeout)
    if not result:
        return False, f"database did not answer within {timeout:g}s"
    return result[0]


def _check_database(cfg: Config, host: str) -> Verdict:
    url = cfg.database.url
    parsed = sa.make_url(url)
    kwargs: dict[str, Any] = {"poolclass": sa.NullPool}
    if parsed.get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": 2}  # libpq's minimum
    elif not parsed.database or not Path(parsed.database).is_file():
        # Opening a missing SQLite file would create an empty one.
        return False, f"SQLite database file {parsed.database or '(none)'!r} does not exist"
    store = AdminStore.from_url(url, **kwargs)
    try:
        now = store.now()
        mine = [w for w in store.list_workers() if w.hostname == host]
    except sa.exc.SQLAlchemyError as exc:
        return False, mask_secrets(f"database: {_first_line(exc)}")
    finally:
        store.close()
    ttl = cfg.worker.lease_ttl.total_seconds()
    if not mine:
        return False, f"no worker from host {host} is registered in the database"
    newest = max(mine, key=lambda w: w.last_seen)
    age = (now - newest.last_seen).total_seconds()
    if age > ttl:
        return False, (
            f"worker {newest.worker_id} on {host} was last seen {age:.0f}s ago "
            f"(worker.lease_ttl is {ttl:g}s)"
        )
    return True, f"worker {newest.worker_id} ({newest.state}) seen {max(age, 0):.1f}s ago"


# -- building blocks for the worker's /healthz and /readyz ----------------------------------


def probe_loop(loop: asyncio.AbstractEventLoop, *, timeout: float = 2.0) -> Verdict:
    """From another thread: does `loop` run a callback within `timeout` seconds?

    Fails when the loop stopped or is blocked (e.g. by a job that calls blocking code in an
    `async def`), which is what a liveness probe should restart.
    """
    if loop.is_closed() or not loop.is_running():
        return False, "event loop is not running"
    answered = threading.Event()
    started = time.monotonic()
    try:
        loop.call_soon_threadsafe(answered.set)
    except RuntimeError:  # closed meanwhile
        return False, "event loop is not running"
    if not answered.wait(timeout):
        return False, f"event loop did not respond within {timeout:g}s"
    return True, f"event loop responded in {(time.monotonic() - started) * 1000:.0f}ms"


def database_ready(store: WorkerPort) -> Verdict:
    """Does the database answer, with the schema this jobrunner needs? (one quick query)"""
    try:
        status = store.schema_status()
    except sa.exc.SQLAlchemyError as exc:
        return False, mask_secrets(f"database unavailable: {_first_line(exc)}")
    if status.current is None:
        return False, "database has no jobrunner schema: run `jobrunner db upgrade`"
    if not status.up_to_date:
        return False, (
            f"schema at revision {status.current}, this jobrunner needs {status.head}: "
            "run `jobrunner db upgrade`"
        )
    return True, f"database ok, schema at {status.current}"


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    return text.splitlines()[0] if text else type(orig).__name__
