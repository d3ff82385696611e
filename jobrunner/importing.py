"""Importing the ``func`` of a job (``module:attr.path``) and what the worker needs to know
about it: whether it is async and whether it takes ``ctx``. Nothing is ever evaluated."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["accepts_ctx", "extend_sys_path", "import_func", "is_async"]


def extend_sys_path(paths: Sequence[Path]) -> None:
    """Put ``paths`` at the front of ``sys.path``, in order, skipping those already there."""
    for path in reversed(paths):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    importlib.invalidate_caches()


def import_func(spec: str, import_paths: Sequence[Path]) -> Callable[..., Any]:
    """Import ``module:attr.path``; raise ValueError with a one-line reason."""
    module_name, _, attr_path = spec.partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except (Exception, SystemExit) as exc:
        where = ", ".join(str(p) for p in import_paths) or "-"
        raise ValueError(
            f"cannot import module {module_name!r}: {type(exc).__name__}: {exc} "
            f"(searched worker.import_paths: {where}, then the installed packages)"
        ) from None
    owner = module_name
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            close = difflib.get_close_matches(part, [n for n in dir(obj) if n[:1] != "_"], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{owner!r} has no attribute {part!r}{hint}")
        obj, owner = getattr(obj, part), f"{owner}.{part}"
    if not callable(obj):
        raise ValueError(
            f"{spec!r} is {type(obj).__name__}, not callable; allowed: a function or async function"
        )
    return obj


def is_async(fn: Callable[..., Any]) -> bool:
    """True for async functions, partials of them and instances with an async ``__call__``."""
    target: object = fn
    while isinstance(target, functools.partial):
        target = target.func
    if inspect.isclass(target):
        return False
    if not inspect.isroutine(target):
        target = type(target).__call__
    return inspect.iscoroutinefunction(target)


def accepts_ctx(fn: Callable[..., Any]) -> bool:
    try:
        return "ctx" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False
