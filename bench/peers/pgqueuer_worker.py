"""Run the pgqueuer worker as `pgq run bench.peers.pgqueuer_app:create --batch-size 10` does:
its logger at INFO, uvloop, `pgqueuer.run` (its documented way to run a worker without the CLI).

pgqueuer 1.6.0's `pgq run` command crashes at start with this typer (`--log-level` reaches
`setup_fancy_logger` as a str: AttributeError 'str' object has no attribute 'name'), so the
harness starts this module instead: `python -m bench.peers.pgqueuer_worker [BATCH_SIZE]`.
"""

from __future__ import annotations

import sys
from datetime import timedelta

import pgqueuer
import uvloop
from pgqueuer.core import logconfig

from bench.peers.pgqueuer_app import create


def main() -> None:
    batch_size = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    logconfig.setup_fancy_logger(logconfig.LogLevel.INFO)
    uvloop.run(pgqueuer.run(create, batch_size=batch_size, dequeue_timeout=timedelta(seconds=30)))


if __name__ == "__main__":
    main()
