"""LISTEN for enqueue notifications on a direct PostgreSQL connection (its own thread).

PgBouncer in transaction mode cannot carry LISTEN, so this uses `[database] listen_url`
(default: `url`). It reconnects with backoff after an outage and reports a wake-up after each
(re)connect, since notifications sent meanwhile are lost; the worker's slow poll stays the
fallback.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import psycopg
import sqlalchemy as sa

from jobrunner.logging import get_logger
from jobrunner.store.queue import NOTIFY_CHANNEL

log = get_logger("jobrunner.listen")


def libpq_url(url: str) -> str:
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Listener:
    def __init__(self, url: str, on_notify: Callable[[str], None]) -> None:
        self._url = libpq_url(url)
        self._on_notify = on_notify
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jobrunner-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        step = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    if step:
                        log.info("listening again for notifications")
                    step = 0
                    self._on_notify("connected")
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._on_notify(note.payload)
            except psycopg.Error as exc:
                delay = min(0.5 * 2.0**step, 5.0)
                log.warning("listen connection lost", error=type(exc).__name__, retry_in=delay)
                step += 1
                self._stop.wait(delay)
