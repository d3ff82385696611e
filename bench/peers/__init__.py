"""The peers' worker apps, as each one's documentation sets them up.

Both read their database from $BENCH_PEER_DSN (set by the harness for each fresh database).
"""
