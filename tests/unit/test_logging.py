"""Log lines: JSON per line, flushed once per event-loop iteration on the loop's thread,
at once elsewhere, in the order they were logged; passwords masked."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Iterator
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
