"""Job functions of every shape the loader must recognise."""

from __future__ import annotations

import functools
from typing import Any

NOT_CALLABLE = 42


def sync_job() -> str:
    return "sync"


async def async_job() -> str:
    return "async"


def ctx_job(ctx: Any, region: str = "eu") -> str:
    return region


async def async_ctx_job(ctx: Any) -> None:
    return None


def nightly(region: str) -> str:
    """Stands in for DESIGN.md's ``jobs.reports:nightly``."""
    return region


async def _add(a: int, b: int) -> int:
    return a + b


partial_async = functools.partial(_add, 1)


class AsyncCallable:
    async def __call__(self) -> None:
        return None


async_instance = AsyncCallable()


class Tasks:
    @staticmethod
    def nested() -> str:
        return "nested"

    @staticmethod
    async def nested_async() -> str:
        return "nested"
