"""`jobrunner` and `python -m jobrunner`: `run [-c FILE]` starts a worker without loading the
management CLI (see `jobrunner.daemon`); every other command goes to `jobrunner.cli`."""

from __future__ import annotations

import sys


def main() -> None:
    from jobrunner.daemon import run_args, run_worker

    matched, config = run_args(sys.argv[1:])
    if matched:
        sys.exit(run_worker(config))
    from jobrunner.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
