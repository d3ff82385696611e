from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Workers


@pytest.fixture
def starts_file(tmp_path: Path) -> Path:
    return tmp_path / "starts.jsonl"


@pytest.fixture
def workers(tmp_path: Path, starts_file: Path) -> Iterator[Workers]:
    w = Workers(tmp_path, {"JR_STARTS": str(starts_file)})
    yield w
    w.close()
