"""jobrunner: a distributed cron and job-runner daemon.

Public API: the job context, the clients for web apps, and the errors they raise. The
clients and the context are imported on first use, so that `jobrunner run` decides what a
replica loads (see `jobrunner.__main__`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobrunner.errors import (
    ConfigError,
    InvalidArguments,
    JobNotFound,
    JobrunnerError,
    RunNotFound,
    ScheduleNotFound,
    SchemaOutOfDate,
    WaitTimeout,
)

if TYPE_CHECKING:
    from jobrunner.client import AsyncClient, Client
    from jobrunner.context import JobContext
    from jobrunner.records import Run

__version__ = "0.1.0"

_LAZY = {
    "AsyncClient": "jobrunner.client",
    "Client": "jobrunner.client",
    "JobContext": "jobrunner.context",
    "Run": "jobrunner.records",
}

__all__ = [
    "AsyncClient",
    "Client",
    "ConfigError",
    "InvalidArguments",
    "JobContext",
    "JobNotFound",
    "JobrunnerError",
    "Run",
    "RunNotFound",
    "ScheduleNotFound",
    "SchemaOutOfDate",
    "WaitTimeout",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jobrunner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
