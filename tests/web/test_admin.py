"""The admin panel's users and status pages, against the in-process app and a real Redis."""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from proto.runtime import Stats
from tests.web.conftest import csrf_token, login
from web.app import create_app
from web.settings import WebSettings

HTML = {"Accept": "text/html"}
ADMIN_PAGES = ("/admin/users", "/admin/status", "/admin/brokers", "/admin")


def signed_in(settings: WebSettings, name: str, password: str) -> TestClient[Any]:
    client = TestClient(app=create_app(settings))
    client.__enter__()
    assert login(client, name, password).status_code == 303
    return client


def post_form(client: TestClient[Any], path: str, **form: str) -> Any:
    token = csrf_token(client.get("/admin/users", headers=HTML).text)
    return client.post(path, data={**form, "_csrf_token": token}, headers=HTML,
                       follow_redirects=False)


@pytest.fixture
def root(settings: WebSettings, users: dict[str, str]) -> Any:
    client = signed_in(settings, "root", users["root"])
    yield client
    client.__exit__(None, None, None)


def test_admin_pages_are_hidden_from_plain_users(client: TestClient[Any],
                                                 users: dict[str, str]) -> None:
    assert client.get("/admin/users", headers=HTML, follow_redirects=False).status_code in (
        302, 303)  # signed out: to the login page
    login(client, "alice", users["alice"])
    for path in ADMIN_PAGES:
        assert client.get(path, headers=HTML).status_code == 404, path
    token = csrf_token(client.get("/login").text)
    assert client.get("/admin/brokers/kite/login", headers=HTML).status_code == 404
    for path in ("/admin/users", "/admin/users/bob/role", "/admin/brokers/kite/credentials"):
        response = client.post(path, data={"_csrf_token": token, "role": "admin",
                                           "username": "eve", "password": "eve-password"})
        assert response.status_code == 404, path
    home = client.get("/", headers=HTML).text
    assert 'href="/admin/users"' not in home


def test_admin_sees_the_nav_link_and_the_users(root: TestClient[Any]) -> None:
    assert 'href="/admin/users"' in root.get("/", headers=HTML).text
    page = root.get("/admin/users", headers=HTML)
    assert page.status_code == 200
    rows = re.findall(r'<tr data-user="([^"]+)">', page.text)
    assert rows == ["alice", "bob", "root"]
    assert "argon2" not in page.text  # no hash leaks into the page


def test_create_user_then_sign_in_as_them(root: TestClient[Any], r: redis.Redis,
                                          settings: WebSettings) -> None:
    response = post_form(root, "/admin/users", username="Carol", password="carol-secret-pw")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/users?done=created&name=carol"
    assert "User carol created." in root.get(response.headers["location"], headers=HTML).text
    record = store.get_user(r, "carol")
    assert record is not None and record["admin"] == "0"
    assert record["pw"].startswith("$argon2") and "carol-secret-pw" not in str(record)
    with TestClient(app=create_app(settings)) as carol:
        assert login(carol, "carol", "carol-secret-pw").status_code == 303


@pytest.mark.parametrize(("form", "message"), [
    ({"username": "dave", "password": "short"}, "password must be at least 8 characters"),
    ({"username": "x", "password": "long-enough-pw"}, "bad user name"),
    ({"username": "alice", "password": "long-enough-pw"}, "user &#39;alice&#39; already exists"),
])
def test_create_user_refusals_are_shown(root: TestClient[Any], r: redis.Redis,
                                        form: dict[str, str], message: str) -> None:
    before = store.list_users(r)
    response = post_form(root, "/admin/users", **form)
    assert response.status_code == 400
    assert message in response.text
    assert 'data-user="alice"' in response.text  # the list is still there
    assert store.list_users(r) == before
    assert form["password"] not in response.text


def test_roles(root: TestClient[Any], r: redis.Redis, settings: WebSettings,
               users: dict[str, str]) -> None:
    assert post_form(root, "/admin/users/alice/role", role="admin").status_code == 303
    with TestClient(app=create_app(settings)) as alice:
        login(alice, "alice", users["alice"])
        assert alice.get("/admin/users", headers=HTML).status_code == 200
        assert post_form(root, "/admin/users/alice/role", role="user").status_code == 303
        assert alice.get("/admin/users", headers=HTML).status_code == 404  # at once
    bad = post_form(root, "/admin/users/alice/role", role="owner")
    assert bad.status_code == 400 and "unknown role" in bad.text
    unknown = post_form(root, "/admin/users/nobody/role", role="admin")
    assert unknown.status_code == 400 and "unknown user" in unknown.text
    last = post_form(root, "/admin/users/root/role", role="user")
    assert last.status_code == 400 and "last enabled admin" in last.text
    assert store.get_user(r, "root")["admin"] == "1"  # type: ignore[index]


def test_disable_ends_sessions_and_sign_in(root: TestClient[Any], settings: WebSettings,
                                           users: dict[str, str]) -> None:
    with TestClient(app=create_app(settings)) as alice:
        login(alice, "alice", users["alice"])
        assert alice.get("/api/alerts").status_code == 200
        response = post_form(root, "/admin/users/alice/disabled", disabled="true")
        assert response.status_code == 303
        assert alice.get("/api/alerts").status_code == 401
        assert alice.get("/", headers=HTML, follow_redirects=False).headers["location"] == (
            "/login")
        assert login(alice, "alice", users["alice"]).status_code == 401
        assert "disabled" in root.get("/admin/users", headers=HTML).text
        assert post_form(root, "/admin/users/alice/disabled", disabled="false").status_code == (
            303)
        assert login(alice, "alice", users["alice"]).status_code == 303
        assert alice.get("/api/alerts").status_code == 200
    himself = post_form(root, "/admin/users/root/disabled", disabled="true")
    assert himself.status_code == 400 and "last enabled admin" in himself.text


def test_password_reset_ends_old_sessions(root: TestClient[Any], settings: WebSettings,
                                          users: dict[str, str]) -> None:
    with TestClient(app=create_app(settings)) as alice:
        login(alice, "alice", users["alice"])
        # Sessions carry their issue time in whole seconds: reset in a later second.
        time.sleep(1.05)
        response = post_form(root, "/admin/users/alice/password", password="brand-new-pw")
        assert response.status_code == 303
        assert alice.get("/api/alerts").status_code == 401
        assert login(alice, "alice", users["alice"]).status_code == 401
        assert login(alice, "alice", "brand-new-pw").status_code == 303
        assert alice.get("/api/alerts").status_code == 200
    short = post_form(root, "/admin/users/alice/password", password="short")
    assert short.status_code == 400 and "at least 8" in short.text


def test_user_changes_need_the_csrf_token(root: TestClient[Any], r: redis.Redis) -> None:
    response = root.post("/admin/users/alice/disabled", data={"disabled": "true"},
                         headers=HTML, follow_redirects=False)
    assert response.status_code == 403
    assert "disabled" not in (store.get_user(r, "alice") or {})


def beat(r: redis.Redis, process: str, *, rate: float = 0.0,
         counters: dict[str, int] | None = None, **gauges: Any) -> None:
    """A heartbeat as proto.runtime writes it; ``rate`` is the ticks/s."""
    stats = Stats(process)
    for name, n in (counters or {}).items():
        stats.inc(name, n)
    stats.gauges.update(gauges)
    r.set(keys.heartbeat(process), orjson.dumps(stats.snapshot({"ticks": rate})),
          ex=keys.HEARTBEAT_TTL_S)


def add_alerts(r: redis.Redis, latencies_ms: list[float]) -> None:
    now_us = time.time_ns() // 1000
    for i, ms in enumerate(latencies_ms):
        r.xadd(keys.ALERTS, {"id": f"a{i}", "rule": "r", "user": "alice", "sym": "NSE:INFY",
                             "kind": "cross_above", "ltp": "1", "ts": str(now_us // 1000),
                             "rx": str(now_us), "at": str(now_us + int(ms * 1000)), "msg": "m"})


def test_status_page(root: TestClient[Any], r: redis.Redis) -> None:
    beat(r, "ingest-sim", counters={"ticks": 5000}, rate=1234.5, feed="sim", connected=1)
    beat(r, "engine-0", counters={"ticks": 3000}, rate=700.0, shard=0, shards=2)
    beat(r, "engine-1", counters={"ticks": 2000}, rate=534.5, shard=1, shards=2)
    for shard in (0, 1):
        r.xgroup_create(keys.ticks(shard), keys.ENGINE_GROUP, id="0", mkstream=True)
        for i in range(3 + shard):
            r.xadd(keys.ticks(shard), {"sym": "NSE:INFY", "n": str(i)})
    r.xreadgroup(keys.ENGINE_GROUP, "c0", {keys.ticks(0): ">"}, count=2)  # 2 pending, lag 1
    add_alerts(r, [float(ms) for ms in range(1, 101)])  # 1..100 ms
    r.xadd(keys.ALERTS_DEAD, {"id": "a1", "reason": "gave up"})
    r.hset(keys.feed_state("sim"), mapping={"state": "connected", "since": str(time.time())})

    page = root.get("/admin/status", headers=HTML)
    assert page.status_code == 200
    text = page.text
    assert 'data-process="engine-0"' in text and 'data-process="ingest-sim"' in text
    assert 'data-process="web"' in text  # the web process's own heartbeat
    assert '<dd id="ingest-rate">1234.5/s</dd>' in text
    assert "700 ticks/s" in text and "534.5 ticks/s" in text
    row = re.search(r'<tr data-stream="sa:ticks:\{0\}" data-group="engine">(.*?)</tr>', text,
                    re.S)
    assert row, text
    assert '<td class="num lag">1</td>' in row.group(1)
    assert '<td class="num pending">2</td>' in row.group(1)
    assert re.search(r'<dd id="dead-letters"[^>]*>1</dd>', text)
    # nearest-rank percentiles of 1..100 ms (index int(q * n)): p50 = 51, p99 = 100
    assert "p50 51.00 ms · p99 100.00 ms" in text
    assert "Feed sim: connected" in text
