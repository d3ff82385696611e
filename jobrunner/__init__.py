"""jobrunner: a distributed cron and job-runner daemon.

Public API: the job context, the clients for web apps, and the errors they raise.
"""

from jobrunner.client import AsyncClient, Client
from jobrunner.errors import (
    ConfigError,
    InvalidArguments,
    JobNotFound,
    JobrunnerError,
    RunNotFound,
    SchemaOutOfDate,
)
from jobrunner.executor import JobContext
from jobrunner.store.records import Run

__version__ = "0.1.0"

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
    "SchemaOutOfDate",
    "__version__",
]
