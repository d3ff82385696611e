"""Side-by-side benchmarks of jobrunner, procrastinate and pgqueuer on one PostgreSQL.

`python -m bench SCENARIO --db postgresql://postgres@127.0.0.1:5432/postgres` runs a scenario;
`--db` names a server (its maintenance database): every database a scenario needs is created
fresh by the harness and dropped at the end. See docs/benchmarks.md for what each scenario
measures and how.
"""
