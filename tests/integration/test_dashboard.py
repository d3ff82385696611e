"""The dashboard over HTTP, on both databases: every page renders the store's data, filters
and keyset pagination, every action writes what the CLI would, and the guards hold: the host
app's dependencies, the token and its session, read-only mode, CSRF on every POST."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException

from jobrunner import Client
from jobrunner.records import CatalogEntry, Outcome, Policy, Slot, WorkerInfo
from tests.support import AllPorts

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from jobrunner.web import create_dashboard

TOKEN = "a-long-dashboard-token-123"
EVIL = "<script>alert(1)</script>"

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def seed(url: str) -> dict[str, Any]:
    """A catalog, a worker, slots that ran, failed and were skipped, a queued run, a
    runtime schedule and a held lease: what the pages show."""
    store = AllPorts.from_url(url)
    try:
        store.publish_catalog(
            [
                CatalogEntry(
                    name="nightly",
                    cron="* * * * *",
                    timezone="Europe/Berlin",
                    config_hash="h1",
                    definition={"name": "nightly", "retries": 0},
                ),
                CatalogEntry(
                    name="adhoc",
                    cron=None,
                    timezone="UTC",
                    config_hash="h2",
                    definition={"name": "adhoc", "overlap": "allow"},
                ),
            ],
            worker_id="w1",
        )
        store.register_worker(
            WorkerInfo(worker_id="w1", hostname="host-a", pid=1, version="0.1.0",
                       config_hash="c1", jobs={"nightly": "h1", "adhoc": "h2"})
        )  # fmt: skip
        now = store.now().replace(second=0, microsecond=0)
        slots = [now - timedelta(minutes=m) for m in (1, 2, 3)]
        store.insert_slots(
            [Slot(job_name="nightly", scheduled_for=s, run_at=s, status="queued") for s in slots]
            + [Slot(job_name="nightly", scheduled_for=now - timedelta(minutes=4),
                    run_at=now - timedelta(minutes=4), status="skipped", reason="overlap")]
        )  # fmt: skip
        pol = {"nightly": Policy(overlap="allow", misfire_grace=3600)}
        claim = store.claim(worker_id="w1", limit=3, policies=pol, lease_ttl=30)
        ok, bad, held = (c.lease for c in claim.started)
        error = {"type": "ValueError", "message": EVIL, "traceback": "Traceback: boom"}
        store.finish("w1", [Outcome(lease=ok, status="succeeded", result='{"rows": 3}')])
        store.finish("w1", [Outcome(lease=bad, status="failed", error=error)])
        queued = store.enqueue("adhoc", {"note": EVIL}, traceparent=TRACEPARENT)
        return {"ok": ok.run_id, "bad": bad.run_id, "held": held.run_id, "queued": queued.id}
    finally:
        store.close()


@pytest.fixture
def site(db_url: str) -> Iterator[tuple[TestClient, dict[str, Any], Client]]:
    ids = seed(db_url)
    client = Client.from_url(db_url)
    client.create_schedule("adhoc", "0 9 * * 1", key="user-7", kwargs={"user": 7})
    app = FastAPI()
    app.mount("/jr", create_dashboard(client, dependencies=[]))
    with TestClient(app) as http:
        yield http, ids, client
    client.close()


def csrf(http: TestClient) -> str:
    if not http.cookies.get("jr_csrf"):
        http.get("/jr/")
    return str(http.cookies.get("jr_csrf"))


def test_every_page_renders_the_stores_data(site: Any) -> None:
    http, ids, _ = site
    pages = {
        "/jr/": ["Workers alive", "Needs attention", f"#{ids['bad']}", "failed"],
        "/jr/jobs": ["nightly", "adhoc", "* * * * *", "Europe/Berlin", "(trigger only)"],
        "/jr/jobs/nightly": [
            "Slots, last 6 h",
            "ran: succeeded",
            "ran: failed",
            "skipped: overlap",
        ],
        "/jr/runs": [f"#{ids['ok']}", f"#{ids['queued']}", "Filter"],
        f"/jr/runs/{ids['bad']}": ["ValueError", "Traceback: boom", "Retry"],
        f"/jr/runs/{ids['ok']}": ['"rows": 3', "succeeded"],
        f"/jr/runs/{ids['queued']}": ["Cancel", "note", TRACEPARENT.split("-")[1]],
        "/jr/schedules": ["user-7", "0 9 * * 1", "Pause", "Delete"],
        "/jr/workers": ["w1", "host-a", "c1", f"#{ids['held']}", "s left"],
    }
    for path, wanted in pages.items():
        page = http.get(path)
        assert page.status_code == 200, (path, page.text[:300])
        for text in wanted:
            assert text in page.text, (path, text)
        assert EVIL not in page.text, f"{path}: unescaped markup from the database"
        assert "htmx.min.js" in page.text and "cdn" not in page.text.lower()
    assert http.get("/jr/static/htmx.min.js").status_code == 200


def test_missing_things_and_bad_input_are_error_pages(site: Any) -> None:
    http, _, _ = site
    for path, status, said in (
        ("/jr/runs/424242", 404, "no run with id 424242"),
        ("/jr/runs/99999999999999999999", 404, "no run with id"),
        ("/jr/jobs/nope", 404, "no job named"),
        ("/jr/runs?status=nope", 422, "allowed: queued"),
        ("/jr/runs?since=yesterday", 422, "since:"),
        ("/jr/runs?before_id=-3", 422, "before_id"),
        ("/jr/jobs/nightly?hours=1000", 422, "hours"),
        ("/jr/nowhere", 404, "no page at"),
    ):
        page = http.get(path)
        assert page.status_code == status and said in page.text, (path, page.text[:400])


def test_runs_filter_and_page_by_keyset(site: Any) -> None:
    http, ids, client = site
    client.enqueue_many("adhoc", [{"n": i} for i in range(120)])
    failed = http.get("/jr/runs?status=failed").text
    assert f"#{ids['bad']}" in failed and f"#{ids['ok']}" not in failed
    only = http.get("/jr/runs?job=nightly").text
    assert f"#{ids['queued']}" not in only and f"#{ids['ok']}" in only
    seen: list[int] = []
    path = "/jr/runs?job=adhoc"
    while path:
        page = http.get(path).text
        shown = [int(i) for i in re.findall(r'href="[^"]*/runs/(\d+)"', page)]
        assert shown == sorted(shown, reverse=True) and len(shown) <= 50
        assert not set(shown) & set(seen), "a run on two pages"
        seen += shown
        more = re.search(r'href="([^"]*/runs\?[^"]*before_id=\d+[^"]*)"', page)
        path = more.group(1).replace("&amp;", "&").replace("http://testserver", "") if more else ""
    assert len(seen) == 121, "every run of the job, once"  # 120 and the seeded one


def test_actions_write_what_the_cli_would(site: Any) -> None:
    http, ids, client = site
    token = csrf(http)
    done = http.post("/jr/jobs/nightly/pause", data={"csrf": token}, follow_redirects=False)
    assert done.status_code == 303 and "done=" in done.headers["location"]
    assert client.get_job("nightly").paused
    http.post("/jr/jobs/nightly/resume", data={"csrf": token})
    assert not client.get_job("nightly").paused
    made = http.post(
        "/jr/jobs/adhoc/trigger", data={"csrf": token, "kwargs": '{"n": 5}'}, follow_redirects=False
    )
    run_id = int(re.search(r"/runs/(\d+)", made.headers["location"]).group(1))  # type: ignore[union-attr]
    assert client.get_run(run_id).kwargs == {"n": 5}
    assert "queued run" in http.get(made.headers["location"]).text
    http.post(f"/jr/runs/{ids['queued']}/cancel", data={"csrf": token})
    assert client.get_run(ids["queued"]).status == "cancelled"
    retried = http.post(
        f"/jr/runs/{ids['bad']}/retry", data={"csrf": token}, follow_redirects=False
    )
    new = int(re.search(r"/runs/(\d+)", retried.headers["location"]).group(1))  # type: ignore[union-attr]
    assert client.get_run(new).retry_of == ids["bad"]
    again = http.post(f"/jr/runs/{ids['ok']}/retry", data={"csrf": token})
    assert again.status_code == 409 and "succeeded" in again.text
    http.post("/jr/schedules/adhoc/user-7/pause", data={"csrf": token})
    assert client.get_schedule("adhoc", "user-7").status == "paused"
    http.post("/jr/schedules/adhoc/user-7/delete", data={"csrf": token})
    assert client.get_schedule("adhoc", "user-7").status == "deleted"
    for kwargs, said in (("{nope", "not valid JSON"), ("[1]", "JSON object"), ('{"a": 1', "JSON")):
        bad = http.post("/jr/jobs/adhoc/trigger", data={"csrf": token, "kwargs": kwargs})
        assert bad.status_code == 422 and said in bad.text
    assert http.post("/jr/jobs/nope/trigger", data={"csrf": token}).status_code == 404


def test_a_post_without_the_csrf_token_is_refused_and_writes_nothing(site: Any) -> None:
    http, ids, client = site
    token = csrf(http)
    before = len(client.list_runs(limit=1000))
    for data in ({}, {"csrf": ""}, {"csrf": token + "x"}):
        for path in ("/jr/jobs/nightly/pause", "/jr/jobs/adhoc/trigger",
                     f"/jr/runs/{ids['queued']}/cancel"):  # fmt: skip
            refused = http.post(path, data=data)
            assert refused.status_code == 403 and "CSRF" in refused.text, (path, data)
    other = TestClient(http.app)  # another browser: its own cookie, the first one's token
    assert other.post("/jr/jobs/nightly/pause", data={"csrf": token}).status_code == 403
    assert not client.get_job("nightly").paused
    assert client.get_run(ids["queued"]).status == "queued"
    assert len(client.list_runs(limit=1000)) == before


def test_the_host_apps_dependencies_guard_every_page_and_action(sqlite_url: str) -> None:
    seed(sqlite_url)

    def admin(authorization: str | None = Header(None)) -> None:
        if authorization != "Bearer admin":
            raise HTTPException(401, "unauthorized")

    with Client.from_url(sqlite_url) as client:
        app = FastAPI()
        app.mount("/jr", create_dashboard(client, dependencies=[Depends(admin)]))
        http = TestClient(app)
        for path in ("/jr/", "/jr/jobs", "/jr/jobs/nightly", "/jr/runs", "/jr/runs/1",
                     "/jr/schedules", "/jr/workers"):  # fmt: skip
            assert http.get(path).status_code == 401, path
            ok = http.get(path, headers={"Authorization": "Bearer admin"})
            assert ok.status_code == 200, path
        assert http.post("/jr/jobs/nightly/pause", data={"csrf": "x"}).status_code == 401
        assert not client.get_job("nightly").paused


def test_a_token_is_asked_of_every_request_and_the_login_sets_a_session(
    sqlite_url: str,
) -> None:
    seed(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        app = create_dashboard(client, token=TOKEN)
        http = TestClient(app)
        first = http.get("/jobs", follow_redirects=False)
        assert first.status_code == 303 and first.headers["location"].endswith("/login")
        assert http.post("/jobs/nightly/pause", data={"csrf": "x"}).status_code == 401
        assert http.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        wrong_bearer = {"Authorization": "Bearer wrong"}
        assert http.get("/jobs", headers=wrong_bearer, follow_redirects=False).status_code == 303
        wrong = http.post("/login", data={"token": "nope"})
        assert wrong.status_code == 401 and "wrong token" in wrong.text
        assert http.post("/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
        assert TOKEN not in str(http.cookies.get("jr_session")), "the cookie is not the token"
        assert http.get("/jobs").status_code == 200
        token = csrf_at(http, "/jobs")
        assert http.post("/jobs/nightly/pause", data={"csrf": token}).status_code == 200
        assert client.get_job("nightly").paused


def csrf_at(http: TestClient, path: str) -> str:
    http.get(path)
    return str(http.cookies.get("jr_csrf"))


def test_read_only_refuses_every_action_and_says_so(sqlite_url: str) -> None:
    ids = seed(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        http = TestClient(create_dashboard(client, read_only=True))
        for path in ("/", "/jobs", "/jobs/nightly", "/runs", f"/runs/{ids['bad']}", "/workers"):
            assert "Read-only" in http.get(path).text, path
        token = csrf_at(http, "/")
        refused = http.post("/jobs/nightly/pause", data={"csrf": token})
        assert refused.status_code == 403 and "read-only" in refused.text
        assert http.post(f"/runs/{ids['bad']}/retry", data={"csrf": token}).status_code == 403
        assert not client.get_job("nightly").paused
        assert len(client.list_runs(limit=100)) == 5  # the seeded ones: nothing more


def test_times_follow_the_viewers_choice(sqlite_url: str) -> None:
    ids = seed(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        http = TestClient(create_dashboard(client, dependencies=[]))
        path = f"/runs/{ids['ok']}"
        assert re.search(r"\d\d:\d\d:\d\d CES?T", http.get(path).text)  # the job's zone
        moved = http.get(f"/prefs?tz=utc&back={path}", follow_redirects=False)
        assert moved.status_code == 303 and moved.headers["location"].endswith(path)
        assert " UTC<" in http.get(path).text and "CET<" not in http.get(path).text
        away = http.get("/prefs?tz=utc&back=https://evil.example/", follow_redirects=False)
        assert "evil" not in away.headers["location"], "no open redirect"


def test_an_unguarded_dashboard_is_refused_and_odd_input_is_4xx(sqlite_url: str) -> None:
    seed(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        with pytest.raises(ValueError, match="dependencies"):
            create_dashboard(client)
        http = TestClient(create_dashboard(client, dependencies=[]))
        token = csrf_at(http, "/")
        for method, path, data in (
            ("GET", "/runs?since=999999999d", None),
            ("GET", "/jobs/%00", None),
            ("GET", "/runs?job=%00", None),
            ("POST", "/jobs/adhoc/trigger", {"csrf": token, "kwargs": '{"a":' + "[" * 30000}),
            ("POST", "/jobs/adhoc/trigger", {"csrf": "\u00e9"}),
        ):
            answer = http.request(method, path, data=data)
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
        assert http.head("/").status_code == 200
        odd = {"Authorization": "Bearer \u00e9".encode("latin-1")}
        assert http.get("/runs", headers=odd).status_code == 200


def test_sessions_expire_and_log_out(sqlite_url: str) -> None:
    seed(sqlite_url)
    with Client.from_url(sqlite_url) as client:
        app = create_dashboard(client, token=TOKEN)
        http = TestClient(app)
        odd = {"Authorization": "Bearer \u00e9".encode("latin-1")}
        assert http.get("/", headers=odd, follow_redirects=False).status_code == 303
        http.post("/login", data={"token": TOKEN})
        assert http.get("/jobs").status_code == 200
        dash = app.state.dashboard
        stale = dash.session_value(int(time.time()) - 13 * 3600)
        other = TestClient(app, cookies={"jr_session": stale})
        assert other.get("/jobs", follow_redirects=False).status_code == 303, "expired"
        forged = TestClient(app, cookies={"jr_session": f"{int(time.time())}.beef"})
        assert forged.get("/jobs", follow_redirects=False).status_code == 303
        http.post("/logout")
        assert http.get("/jobs", follow_redirects=False).status_code == 303
