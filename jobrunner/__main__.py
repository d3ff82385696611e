"""`jobrunner` and `python -m jobrunner`: `run [-c FILE]` starts a worker without loading the
management CLI (see `jobrunner.daemon`); every other command goes to `jobrunner.cli`."""

from __future__ import annotations

import sys


def _structlog_without_rich() -> None:
    """Import structlog with rich hidden from it. structlog imports rich, when installed (the
    CLI's tables need it), only to pretty-print exceptions in its console renderer; a
    replica logs JSON in production and would carry about 4 MB of rich and pygments for
    nothing. Only structlog's own import is affected: rich imports normally afterwards."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


def main() -> None:
    from jobrunner.daemon import run_args

    matched, config = run_args(sys.argv[1:])
    if matched:
        _structlog_without_rich()
        from jobrunner.daemon import run_worker

        sys.exit(run_worker(config))
    from jobrunner.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
