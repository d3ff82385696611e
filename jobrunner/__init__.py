"""jobrunner: a distributed cron and job-runner daemon.

Public API: the job context, the clients for web apps, and the errors they raise.
"""

from jobrunner.errors import (
    ConfigError,
    InvalidArguments,
    JobNotFound,
    JobrunnerError,
    RunNotFound,
    SchemaOutOfDate,
)
from jobrunner.executor import JobContext

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidArguments",
    "JobContext",
    "JobNotFound",
    "JobrunnerError",
    "RunNotFound",
    "SchemaOutOfDate",
    "__version__",
]
