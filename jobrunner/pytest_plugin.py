"""The pytest plugin of `jobrunner.testing` (registered by the `pytest11` entry point).

Fixtures:
- `jobrunner_config`: the path of your configuration: the `jobrunner_config` ini option
  (relative to the rootdir), else `$JOBRUNNER_CONFIG`, else `jobrunner.toml` in the rootdir.
  Override the fixture to choose another per test or module.
- `jobrunner_worker`: a real `jobrunner run` process on that configuration and a temporary
  SQLite database (`JobrunnerWorker`: `enqueue`, `wait_for(run_id)`, `client`), stopped and
  its files removed when the test ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("jobrunner_config", "the jobrunner configuration file of jobrunner_worker")


@pytest.fixture
def jobrunner_config(request: pytest.FixtureRequest) -> Path:
    root = Path(str(request.config.rootpath))
    given = request.config.getini("jobrunner_config") or os.environ.get("JOBRUNNER_CONFIG")
    path = root / (given or "jobrunner.toml")
    if not path.exists():
        raise pytest.UsageError(
            f"jobrunner_worker: no configuration at {path}: set the ini option "
            "jobrunner_config, $JOBRUNNER_CONFIG, or override the jobrunner_config fixture"
        )
    return path


@pytest.fixture
def jobrunner_worker(jobrunner_config: Path) -> Iterator[object]:
    from jobrunner.testing import JobrunnerWorker

    with JobrunnerWorker(jobrunner_config) as worker:
        yield worker
