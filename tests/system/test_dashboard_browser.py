"""The dashboard in a real headless browser (Debian's chromium through Playwright), served by
a real `jobrunner web` over a database a real worker fills: every page renders, the filters
work, every action takes effect in the database, the token and the CSRF check hold, and it
reads without JavaScript and on a phone. Screenshots of each page go to
`artifacts/screenshots/` (ignored by git; CI keeps them)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobrunner import Client
from tests.support import Workers, jobrunner_cmd, wait_for, write_config

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
TOKEN = "browser-test-token-0123456789"
TEXT_OF = "els => els.map(e => e.textContent)"
CHROMIUM = os.environ.get("JOBRUNNER_CHROMIUM", "/usr/bin/chromium")
JOBS = [
    {"name": "tick", "func": "sysjobs:noop_async", "cron": "* * * * * *"},
    {"name": "flip", "func": "sysjobs:flip", "cron": "* * * * * *", "timezone": "Europe/Berlin"},
    {"name": "flaky", "func": "sysjobs:fail", "kwargs": {"message": "disk full"}},
    {"name": "typed", "func": "sysjobs:typed", "kwargs": {"region": "us"}},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true: no chromium at {CHROMIUM} (.ci/run installs Debian's)")
        pytest.skip(f"no chromium at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def site(tmp_path: Path, pg_url: str, workers: Workers) -> Iterator[tuple[str, Client]]:
    """A worker that has run the jobs for a few seconds, and `jobrunner web` over it."""
    port = free_port()
    config = write_config(
        tmp_path / "jr.toml", pg_url, JOBS,
        sections={"web": {"listen": f"127.0.0.1:{port}", "token": TOKEN}},
    )  # fmt: skip
    worker = workers.start(config)
    client = Client.from_url(pg_url)
    client.create_schedule("typed", "0 9 * * 1", key="user-7", kwargs={"user_id": 7})
    failed = client.enqueue("flaky")
    assert wait_for(lambda: client.get_run(failed.id).status == "failed", 20)
    assert wait_for(lambda: len(client.list_runs(job="flip", status="succeeded")) >= 8, 30)
    with (tmp_path / "web.log").open("wb") as log:  # the child keeps its own descriptor
        web = subprocess.Popen(
            [*jobrunner_cmd(), "web", "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: _up(port), 20), (tmp_path / "web.log").read_text()
    try:
        yield base, client
    finally:
        web.send_signal(signal.SIGTERM)
        web.wait(20)
        worker.signal(signal.SIGTERM)
        worker.wait(30)
        client.close()


def _up(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_every_page_filter_and_action_in_a_real_browser(site: Any, browser: Any) -> None:
    base, client = site
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{base}/jobs")
    assert page.url.endswith("/login"), "no token: to the login form"
    page.fill("input[name=token]", "wrong-token-0000000")
    page.click("button[type=submit]")
    assert "wrong token" in page.content()
    page.fill("input[name=token]", TOKEN)
    page.click("button[type=submit]")
    assert page.inner_text("h1") == "Overview"
    assert page.evaluate("typeof htmx") == "object", "the vendored htmx is loaded"
    shot(page, "overview")
    failed = client.list_runs(job="flaky", status="failed")[0]
    for path, name, wanted in (
        ("/jobs", "jobs", "tick"),
        ("/jobs/flip", "timeline", "Slots, last 6 h"),
        ("/runs", "runs", "Filter"),
        (f"/runs/{failed.id}", "run", "disk full"),
        ("/schedules", "schedules", "user-7"),
        ("/workers", "workers", "Leases"),
    ):
        page.goto(base + path)
        assert wanted in page.content(), path
        shot(page, name)
    page.goto(f"{base}/jobs/tick")
    titles = page.eval_on_selector_all("svg.timeline rect title", TEXT_OF)
    assert any("ran: succeeded" in t for t in titles), titles[:5]

    page.goto(f"{base}/runs")
    page.select_option("select[name=status]", "failed")
    page.click("form.filters button[type=submit]")
    statuses = page.eval_on_selector_all("td span.status", TEXT_OF)
    assert statuses and set(statuses) == {"failed"}, statuses

    _actions(page, base, client, failed.id)
    _guards(browser, page, base, client)
    for name in ("overview", "jobs", "timeline", "runs", "run", "schedules", "workers"):
        data = (SHOTS / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, name


def _actions(page: Any, base: str, client: Client, failed_id: int) -> None:
    page.goto(f"{base}/jobs/tick")
    page.click("button:has-text('Pause')")
    assert "tick paused" in page.inner_text("p.done")
    assert client.get_job("tick").paused
    page.click("button:has-text('Resume')")
    assert not client.get_job("tick").paused
    page.goto(f"{base}/jobs/typed")
    page.fill("input[name=kwargs]", '{"user_id": 5}')
    page.click("button:has-text('Trigger now')")
    assert "queued run" in page.inner_text("p.done")
    run_id = int(page.url.split("/runs/")[1].split("?")[0])
    assert wait_for(lambda: client.get_run(run_id).result == 5, 20)
    page.goto(f"{base}/runs/{failed_id}")
    page.click("button:has-text('Retry')")
    retried = int(page.url.split("/runs/")[1].split("?")[0])
    assert client.get_run(retried).retry_of == failed_id
    later = client.enqueue("typed", {"user_id": 1}, run_at=datetime.now(UTC) + timedelta(hours=1))
    page.goto(f"{base}/runs/{later.id}")
    page.click("button:has-text('Cancel')")
    assert client.get_run(later.id).status == "cancelled"
    page.goto(f"{base}/schedules")
    page.click("button:has-text('Pause')")
    assert client.get_schedule("typed", "user-7").status == "paused"
    bad = f"{base}/jobs/typed"
    page.goto(bad)
    page.fill("input[name=kwargs]", '{"user_id": "five"}')
    page.click("button:has-text('Trigger now')")
    assert "must be integer" in page.inner_text("p.error")


def _guards(browser: Any, page: Any, base: str, client: Client) -> None:
    before = len(client.list_runs(limit=1000))
    refused = page.request.post(f"{base}/jobs/typed/trigger", form={"kwargs": "{}"})
    assert refused.status == 403 and "CSRF" in refused.text(), "a POST without the token"
    forged = page.request.post(f"{base}/jobs/tick/pause", form={"csrf": "forged"})
    assert forged.status == 403 and not client.get_job("tick").paused
    assert len(client.list_runs(limit=1000)) == before
    stranger = browser.new_context()
    anonymous = stranger.request.get(f"{base}/runs", max_redirects=0)
    assert anonymous.status == 303, "no session: the login form"
    assert stranger.request.post(f"{base}/jobs/tick/pause").status == 401
    stranger.close()
    phone = browser.new_context(viewport={"width": 375, "height": 812}, is_mobile=True)
    phone.add_cookies(page.context.cookies())
    small = phone.new_page()
    small.goto(f"{base}/")
    assert small.inner_text("h1") == "Overview"
    width = small.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the overview is wider than a phone: {width}px"
    shot(small, "overview-phone")
    phone.close()
    static = browser.new_context(java_script_enabled=False)
    static.add_cookies(page.context.cookies())
    plain = static.new_page()
    plain.goto(f"{base}/runs")
    assert plain.eval_on_selector_all("td span.status", "els => els.length") > 0
    static.close()
