"""`jobrunner health`, /healthz, /readyz and /metrics against real `jobrunner run` processes."""

from __future__ import annotations

import http.client
import signal
import socket
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobrunner import __version__
from jobrunner.config import load_config
from tests.support import WorkerProcess, Workers, run_cli, wait_for, write_config

pytestmark = pytest.mark.system

EVERY_SECOND = "* * * * * *"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def worker_id(proc: WorkerProcess) -> str:
    value = proc.find("worker started")[0]["worker_id"]
    assert isinstance(value, str)
    return value


def samples(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    status, body = get(port, "/metrics")
    assert status == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def health(config: Path) -> tuple[int, str, str]:
    result = run_cli("health", "-c", str(config), timeout=10)
    return result.returncode, result.stdout, result.stderr


def test_http_endpoints_and_health_command(tmp_path: Path, pg_url: str, workers: Workers) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "jr.toml",
        pg_url,
        [{"name": "tick", "func": "sysjobs:noop_async", "cron": EVERY_SECOND}],
        sections={"http": {"listen": f"127.0.0.1:{port}"}},
    )
    proc = workers.start(config)
    assert wait_for(lambda: _answers(port), 10), "no /healthz on the configured port"
    assert get(port, "/healthz")[0] == 200
    status, body = get(port, "/readyz")
    assert status == 200, body

    info = samples(port)["jobrunner_worker_info"]
    expected = load_config(config, import_funcs=False).config_hash
    assert info == [
        ({"worker_id": worker_id(proc), "version": __version__, "config_hash": expected}, 1.0)
    ]

    def ran() -> bool:
        runs = samples(port).get("jobrunner_runs_total", [])
        return ({"job": "tick", "status": "succeeded"} in [labels for labels, _ in runs]) and (
            sum(v for labels, v in samples(port)["jobrunner_fire_lag_seconds_count"]) >= 1
        )

    assert wait_for(ran, 10), "runs and fire lag should be counted"

    code, out, err = health(config)
    assert code == 0, err
    assert out.startswith("healthy: ") and f"127.0.0.1:{port}/healthz" in out

    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    with pytest.raises(ConnectionRefusedError):
        get(port, "/healthz")
    code, out, err = health(config)
    assert code != 0 and out == ""
    assert err == f"unhealthy: no worker listening on http://127.0.0.1:{port}/healthz\n"


def _answers(port: int) -> bool:
    try:
        return get(port, "/healthz")[0] in (200, 503)
    except OSError:
        return False


def test_health_from_the_database_after_sigkill(
    tmp_path: Path, db_url: str, workers: Workers
) -> None:
    """Without [http]: healthy while this host's worker renews its row; unhealthy once its
    last_seen is older than lease_ttl."""
    config = write_config(
        tmp_path / "jr.toml",
        db_url,
        [{"name": "tick", "func": "sysjobs:noop_async", "cron": EVERY_SECOND}],
        worker={"lease_ttl": "2s", "heartbeat": "0.5s"},
    )
    proc = workers.start(config)
    code, out, err = health(config)
    assert code == 0, err
    assert out.startswith(f"healthy: worker {worker_id(proc)} ")

    proc.proc.kill()
    proc.wait()
    assert wait_for(lambda: health(config)[0] != 0, 15), "a dead worker must become unhealthy"
    code, out, err = health(config)
    assert code == 1 and len(err.splitlines()) == 1
    assert f"worker {worker_id(proc)} on {socket.gethostname()} was last seen" in err
    assert "(worker.lease_ttl is 2s)" in err


def test_health_from_the_database_after_sigterm(
    tmp_path: Path, sqlite_url: str, workers: Workers
) -> None:
    config = write_config(tmp_path / "jr.toml", sqlite_url, [])
    proc = workers.start(config)
    assert health(config)[0] == 0
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0
    code, _, err = health(config)
    assert code == 1
    assert err == (
        f"unhealthy: no worker from host {socket.gethostname()} is registered in the database\n"
    )
