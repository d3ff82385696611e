"""The notifier service: delivers the outbox's events to the `[[notify]]` targets.

Each pass claims up to `BATCH` due events of the targets this worker knows (SKIP LOCKED:
replicas share them; a claim moves the event `CLAIM_LEASE` ahead, so one that dies mid-way
leaves it to another) and POSTs each as JSON, signed with the target's secret, in its own
small thread pool: delivery never blocks running jobs. A 2xx marks it delivered; anything
else is retried with exponential backoff (capped), one log line per failed attempt; an event
pending longer than `KEEP` is recorded `dropped`, with a log line and a metric. A worker
that stops mid-delivery gives back the events not yet delivered (due again at once); once its
runs have drained it makes one last pass (at most `LAST_PASS` seconds), so the events of runs
that ended during the drain leave with it rather than wait for the next replica. At least
once: a receiver deduplicates by `event_id`.
"""

from __future__ import annotations

import asyncio
import http.client
import random
import threading
import time
from asyncio import Future
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from jobrunner.logging import get_logger
from jobrunner.notify import NotifyTarget, encode, request_headers
from jobrunner.store.outbox import Pending
from jobrunner.store.ports import WorkerPort
from jobrunner.worker.backoff import Backoff, Offload, offload, sleep_or
from jobrunner.worker.metrics import Metrics
from jobrunner.worker.runs import RunTable

log = get_logger("jobrunner.worker")
BATCH = 50  # events claimed per pass
CLAIM_LEASE = 30.0  # seconds a claimed event is this worker's to deliver
TIMEOUT = 10.0  # seconds per request
IDLE = 1.0  # seconds between passes that found nothing
KEEP = 24 * 3600.0  # seconds an event is retried before it is recorded dropped
BACKOFF_MAX = 600.0  # seconds between attempts, at most
LAST_PASS = 5.0  # seconds the pass at stop may take; what it has not delivered is given back
STOPPED = "the worker stopped before the delivery ended"


def backoff_delay(attempts: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before attempt `attempts + 1`: 2, 4, 8, ... up to `BACKOFF_MAX`, jittered."""
    base = min(2.0**attempts, BACKOFF_MAX)
    return base * (0.75 + 0.5 * rand())


_local = threading.local()  # each delivery thread's kept-alive connections, by origin


def post(target: NotifyTarget, body: dict[str, object], timeout: float = TIMEOUT) -> None:
    """POST one event on a kept-alive connection of this thread (a new one if the old one
    was closed); raises on anything but a 2xx (the error says what came back)."""
    payload = encode(body)
    parts = urlsplit(target.url)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    headers = request_headers(target, payload)
    for attempt in (1, 2):
        conn = _connection(
            parts.scheme, parts.hostname or "", parts.port, timeout, fresh=attempt > 1
        )
        try:
            conn.request("POST", path, body=payload, headers=headers)
            answer = conn.getresponse()
            answer.read()
            status = answer.status
            break
        except (http.client.HTTPException, OSError) as exc:
            conn.close()
            if attempt == 2:
                raise RuntimeError(f"no answer: {exc}") from None
    if not 200 <= status < 300:
        raise RuntimeError(f"HTTP {status} from the receiver")


def _connection(
    scheme: str, host: str, port: int | None, timeout: float, *, fresh: bool
) -> http.client.HTTPConnection:
    pool: dict[tuple[str, str, int | None], http.client.HTTPConnection] = getattr(
        _local, "pool", {}
    )
    _local.pool = pool
    key = (scheme, host, port)
    conn = pool.get(key)
    if conn is None or fresh:
        kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
        conn = pool[key] = kind(host, port, timeout=timeout)
    return conn


class Notifier:
    """Delivers events of `targets` (nothing to do without any)."""

    def __init__(
        self,
        targets: Sequence[NotifyTarget],
        store: WorkerPort,
        runs: RunTable,
        metrics: Metrics,
        *,
        db: Offload | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        send: Callable[[NotifyTarget, dict[str, object]], None] = post,
    ) -> None:
        self.targets = {t.name: t for t in targets}
        self.store = store
        self.runs = runs
        self.metrics = metrics
        self.db = db or offload()
        self.monotonic = monotonic
        self.send = send
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="jobrunner-notify")
        self.last_drop = 0.0

    async def run(self) -> None:
        if not self.targets:
            return
        backoff = Backoff("notifier", self.metrics.db_error, self.monotonic)
        while not self.runs.stopping.is_set():
            try:
                delay = await backoff.guard(self.run_once)
            except Exception:  # a bug here must not stop the jobs: log it, go on
                log.exception("notifier pass failed")
                delay = IDLE * 10
            await sleep_or(self.runs.stopping, delay)

    async def last_pass(self) -> None:
        """At stop, after the runs have drained: deliver what is due now (the events of runs
        that ended in the drain), for at most `LAST_PASS` seconds."""
        try:
            if self.targets:
                async with asyncio.timeout(LAST_PASS):
                    await self.run_once()
        except TimeoutError:
            log.warning("notifications left to the next replica", waited=LAST_PASS)
        except Exception as exc:  # the database may be gone: the events wait in the outbox
            log.warning("notifications left to the next replica", error=str(exc)[:300])

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def run_once(self) -> float:
        """Deliver what is due; returns seconds until the next pass."""
        if self.monotonic() - self.last_drop > 60:
            self.last_drop = self.monotonic()
            for target, event_id, attempts in await self.db(self.store.drop_expired_events, KEEP):
                self.metrics.notify_dropped(target)
                log.error("notification dropped", target=target, event_id=event_id,
                          attempts=attempts, kept_hours=KEEP / 3600)  # fmt: skip
        claimed = await self.db(self.store.claim_events, list(self.targets), BATCH, CLAIM_LEASE)
        if not claimed:
            return IDLE
        loop = asyncio.get_running_loop()
        sending = [loop.run_in_executor(self.pool, self._deliver, e) for e in claimed]
        try:
            results = await asyncio.gather(*sending)
        except asyncio.CancelledError:  # the worker stops: give back what is not delivered
            await self._give_back(claimed, sending)
            raise
        done = [e.id for e, error in zip(claimed, results, strict=True) if error is None]
        await self.db(self.store.events_delivered, done)
        for event, error in zip(claimed, results, strict=True):
            if error is not None:
                await self._failed(event, error)
        return 0.0 if len(claimed) == BATCH else IDLE

    async def _give_back(
        self, claimed: Sequence[Pending], sending: Sequence[Future[str | None]]
    ) -> None:
        """Events whose delivery the stop cut short are due again at once (a peer sends them
        now, not after `CLAIM_LEASE`); those delivered already are recorded so."""
        done = [
            e.id for e, f in zip(claimed, sending, strict=True)
            if f.done() and not f.cancelled() and f.result() is None
        ]  # fmt: skip
        await self.db(self.store.events_delivered, done)
        for event in claimed:
            if event.id not in done:
                await self.db(self.store.event_retry, event.id, STOPPED, 0.0)
        log.info("notifications given back at stop", events=len(claimed) - len(done))

    def _deliver(self, event: Pending) -> str | None:
        try:
            self.send(self.targets[event.target], event.body)
        except Exception as exc:
            return str(exc)[:300] or type(exc).__name__
        self.metrics.notify_sent(event.target)
        return None

    async def _failed(self, event: Pending, error: str) -> None:
        delay = backoff_delay(event.attempts)
        self.metrics.notify_failed(event.target)
        log.warning(
            "notification not delivered", target=event.target, notification=event.event,
            event_id=event.event_id, attempt=event.attempts, error=error,
            retry_in=round(delay, 1),
        )  # fmt: skip
        await self.db(self.store.event_retry, event.id, error, delay)
