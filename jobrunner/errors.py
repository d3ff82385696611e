"""The exceptions jobrunner raises. Each docstring is the default message."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class JobrunnerError(Exception):
    """jobrunner failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


@dataclass(frozen=True, kw_only=True)
class ConfigIssue:
    """One problem found in a configuration file."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: {self.key}" if self.key else self.file
        return f"{where}: {self.message}"


class ConfigError(JobrunnerError, ValueError):
    """The configuration is invalid."""

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(str(i) for i in self.issues) or None)


class BadInput(JobrunnerError, ValueError):
    """The input is invalid."""


class InvalidArguments(BadInput, TypeError):
    """The job arguments are not a JSON object."""


class ArgumentsTooLarge(InvalidArguments):
    """The job arguments are larger than the limit (`MAX_KWARGS_SIZE` bytes as JSON)."""


class JobNotFound(JobrunnerError, LookupError):
    """No such job in the catalog."""


class RunNotFound(JobrunnerError, LookupError):
    """No such run."""


class ScheduleNotFound(JobrunnerError, LookupError):
    """No such runtime schedule (or it was deleted or retired)."""


class ScheduleExists(InvalidArguments):
    """A live schedule of the job has that key already."""


class SchemaOutOfDate(JobrunnerError, RuntimeError):
    """The database schema is not current: run `jobrunner db upgrade`."""


class ClockSkew(JobrunnerError, RuntimeError):
    """The host clock is too far from the database clock."""


class WaitTimeout(JobrunnerError, TimeoutError):
    """The run did not finish in time."""


class RunNotRetryable(BadInput):
    """The run cannot be retried: it succeeded, or an attempt of it is still queued or
    running."""
