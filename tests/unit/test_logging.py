"""Log lines: JSON per line, flushed once per event-loop iteration on the loop's thread,
at once elsewhere, in the order they were logged; passwords masked."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

import pytest
import structlog

from jobrunner.logging import configure_logging, get_logger


@pytest.fixture
def stream(tmp_path: Path) -> Iterator[TextIO]:
    """A real file stream (text over a byte buffer, line-buffered like stderr)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with open(tmp_path / "log.jsonl", "w", encoding="utf-8", buffering=1) as f:
        configure_logging("json", "info", stream=f)
        yield f
    structlog.reset_defaults()
    root.handlers[:], root.level = handlers, level


def lines(stream: TextIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(stream.name).read_text().splitlines()]


def test_lines_logged_on_the_loop_are_written_once_its_callbacks_are_done(
    stream: TextIO,
) -> None:
    log = get_logger("jobrunner.test")

    async def scenario() -> list[int]:
        seen = []
        for i in range(3):
            log.info("run finished", n=i)
            seen.append(len(lines(stream)))
        logging.getLogger("job").warning("from stdlib")  # flushes the buffer, in order
        seen.append(len(lines(stream)))
        log.info("run finished", n=3)
        seen.append(len(lines(stream)))
        await asyncio.sleep(0)  # one loop iteration: the flush runs
        seen.append(len(lines(stream)))
        return seen

    seen = asyncio.run(scenario())
    assert seen == [0, 0, 0, 4, 4, 5], "written one system call per line, or lost"
    events = [(e["event"], e.get("n")) for e in lines(stream)]
    assert events == [
        ("run finished", 0),
        ("run finished", 1),
        ("run finished", 2),
        ("from stdlib", None),
        ("run finished", 3),
    ]


def test_lines_from_a_thread_without_a_loop_are_written_at_once(stream: TextIO) -> None:
    log = get_logger("jobrunner.test")
    seen: list[int] = []

    def job() -> None:
        log.info("from a sync job", password_url="postgresql://u:secret@db/x")
        seen.append(len(lines(stream)))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert seen == [1]
    (line,) = lines(stream)
    assert line["password_url"] == "postgresql://u:***@db/x"


class _Money:
    def __structlog__(self) -> str:
        return "12.50 EUR"


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque>"


def test_line_fields_context_timestamp_and_values_json_cannot_hold(stream: TextIO) -> None:
    """The processors written for speed keep what structlog's own did: context from
    contextvars (the event's keys win), level and logger, an ISO UTC timestamp with
    microseconds, `__structlog__()` or repr for other values, and masking in every value."""
    structlog.contextvars.bind_contextvars(worker_id="w-1", job="from-context")
    try:
        before = datetime.now(UTC)
        get_logger("jobrunner.test").warning(
            "event",
            job="from-event",
            money=_Money(),
            thing=_Opaque(),
            dsn="host=db user=u password=hunter2",
            n=1.5,
        )
        after = datetime.now(UTC)
        logging.getLogger("lib").info("stdlib", extra={"url": "redis://:pw@cache/0"})
    finally:
        structlog.contextvars.clear_contextvars()
    first, second = lines(stream)
    stamp = str(first.pop("timestamp"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    at = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert before - timedelta(microseconds=1) <= at <= after
    assert first == {
        "event": "event",
        "job": "from-event",
        "worker_id": "w-1",
        "money": "12.50 EUR",
        "thing": "<opaque>",
        "dsn": "host=db user=u password=***",
        "n": 1.5,
        "level": "warning",
        "logger": "jobrunner.test",
    }
    assert second["url"] == "redis://:***@cache/0"
    assert second["worker_id"] == "w-1" and second["logger"] == "lib"
