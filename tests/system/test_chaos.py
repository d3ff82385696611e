"""The chaos scenario of `bench/chaos.py`, short, in the test suite: 3 replicas, random
SIGKILL / SIGTERM / SIGSTOP+SIGCONT / restarts of replicas and two PostgreSQL restarts. Every
slot starts once per attempt and finishes; no replica exits except by the harness's signals
(a replica restarted while PostgreSQL restarts waits for it, guarantee 10)."""

from __future__ import annotations

import os

import pytest
import sqlalchemy as sa

from bench.chaos import FAILURES, NOTIFY_FAILURES, chaos, pg_cluster

pytestmark = pytest.mark.system


def test_chaos_with_replica_faults_and_postgresql_restarts(pg_server_url: str) -> None:
    if pg_cluster() is None or sa.make_url(pg_server_url).host not in ("127.0.0.1", "localhost"):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: the chaos test needs the local PostgreSQL cluster")
        pytest.skip("needs the local PostgreSQL cluster (pg_ctlcluster) as the test database")
    result = chaos(pg_server_url, replicas=3, duration=40, seed=7, pg_restarts=2)
    assert result["slots_expected"] >= 70
    assert result["actions_pg_restart"] == 2
    assert result["actions_kill"] + result["actions_term"] + result["actions_pause"] >= 5
    assert {k: result[k] for k in FAILURES} == dict.fromkeys(FAILURES, 0.0), result


def test_chaos_with_runtime_schedules(pg_server_url: str) -> None:
    """Per-second schedules created through the client at runtime, beside the TOML ones,
    under random SIGKILL / SIGTERM / SIGSTOP of 3 replicas: every slot of each starts once
    per attempt and finishes."""
    result = chaos(pg_server_url, replicas=3, duration=30, seed=11, runtime=4)
    assert result["slots_expected"] >= 6 * 25  # 2 TOML jobs and 4 schedules, per second
    assert result["actions_kill"] + result["actions_term"] + result["actions_pause"] >= 4
    assert {k: result[k] for k in FAILURES} == dict.fromkeys(FAILURES, 0.0), result


def test_chaos_with_notifications_delivered_by_replicas_that_die(pg_server_url: str) -> None:
    """A failing job under SIGKILL/SIGTERM/SIGSTOP of 3 replicas, its events delivered by
    whichever replica is up: every expected event arrives at least once, with one event id
    per cause and a valid signature."""
    result = chaos(pg_server_url, replicas=3, duration=30, seed=13, notify=True)
    assert result["notify_expected"] >= 10, str(result)
    assert result["actions_kill"] + result["actions_term"] + result["actions_pause"] >= 4
    checked = (*FAILURES, *NOTIFY_FAILURES)
    assert {k: result[k] for k in checked} == dict.fromkeys(checked, 0.0), result
