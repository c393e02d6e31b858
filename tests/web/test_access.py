"""Who may use which route, for every route the app has.

``ACCESS`` says how each (method, path) of the app is checked; a route missing from it (a new
page, say) fails ``test_every_route_is_in_the_table`` until it is listed with a real check:

- ``PUBLIC``: answers without a session.
- ``SIGNED_IN``: any signed-in user, and it holds nobody's own data (market data, empty forms).
- ``ADMIN``: a plain user (bob) is refused; the admin (root) is not.
- ``Own(...)``: a user's own data. Alice owns an object of each kind (alert, rule, channel,
  API token, test-message request, backtest job); bob asks for it by its id, or lists, or
  writes, and must get a 403/404 or a list without it; nothing of alice's may change in
  Redis; and where the route reads, alice herself gets it (so a 404 for everyone would fail).

Every non-public route refuses a request without a session, and a bearer token opens /api/
routes only. The live stream is checked against a real server: bob never receives alice's
alerts.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aredis
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from proto import keys, store
from tests.web.conftest import add_alert, login
from tests.web.rulehelp import load_instruments
from tests.web.server import WebServer
from tests.web.sse import READ_TIMEOUT_S, next_event, stream
from web import tokens
from web.app import create_app
from web.settings import WebSettings

HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}
PUBLIC, SIGNED_IN, ADMIN = "public", "signed in", "admin"
PARAM = re.compile(r"\{(\w+)\}")
REFUSED = (403, 404)


@dataclass(frozen=True)
class Own:
    """A user-scoped route. ``kind``: ``object`` (names one of alice's objects by the path;
    bob gets 403/404), ``list`` (bob's answer lacks alice's ``marker``), ``write`` (acts on
    the caller's own data only; ``body`` is bob's request). ``reads``: alice's own call is
    expected to succeed (not asked of routes that would delete or change her object)."""

    kind: str
    marker: str = ""
    body: dict[str, Any] | None = None
    form: bool = False
    reads: bool = True


OBJECT = Own("object")
CHANGES = Own("object", reads=False)

ACCESS: dict[tuple[str, str], str | Own] = {
    # Sign-in, health, the API's description and static files.
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/schema"): PUBLIC,
    ("GET", "/schema/openapi.json"): PUBLIC,
    ("GET", "/schema/{path}"): PUBLIC,
    ("GET", "/static/{file_path}"): PUBLIC,
    ("HEAD", "/static/{file_path}"): PUBLIC,
    # Market data and empty forms: the same for everybody signed in.
    ("GET", "/api/quotes"): SIGNED_IN,
    ("GET", "/api/bars/{sym}"): SIGNED_IN,
    ("GET", "/api/symbols"): SIGNED_IN,
    ("GET", "/symbol-options"): SIGNED_IN,
    ("GET", "/feeds/banner"): SIGNED_IN,
    ("GET", "/rules/new"): SIGNED_IN,
    ("GET", "/rules/params"): SIGNED_IN,
    ("GET", "/backtests/new"): SIGNED_IN,
    ("POST", "/logout"): SIGNED_IN,
    # Admin.
    ("GET", "/admin"): ADMIN,
    ("GET", "/admin/users"): ADMIN,
    ("POST", "/admin/users"): ADMIN,
    ("POST", "/admin/users/{name}/role"): ADMIN,
    ("POST", "/admin/users/{name}/password"): ADMIN,
    ("POST", "/admin/users/{name}/disabled"): ADMIN,
    ("GET", "/admin/status"): ADMIN,
    ("GET", "/admin/brokers"): ADMIN,
    ("POST", "/admin/brokers/{feed}/credentials"): ADMIN,
    ("POST", "/admin/brokers/{feed}/remove"): ADMIN,
    ("GET", "/admin/brokers/{feed}/login"): ADMIN,
    ("GET", "/admin/brokers/kite/callback"): ADMIN,
    ("GET", "/admin/brokers/upstox/callback"): ADMIN,
    ("GET", "/metrics"): ADMIN,
    # Alerts.
    ("GET", "/"): Own("list", marker="alert_msg"),
    ("GET", "/alerts"): Own("list", marker="alert_msg"),
    ("GET", "/api/alerts"): Own("list", marker="alert_msg"),
    ("GET", "/alerts.csv"): Own("list", marker="alert_msg"),
    ("GET", "/api/alerts.csv"): Own("list", marker="alert_msg"),
    ("GET", "/alerts/{alert_id}"): OBJECT,
    ("GET", "/api/alerts/{alert_id}"): OBJECT,
    ("GET", "/events"): Own("list", marker="alert_msg"),  # against a real server
    # Rules (the pages and the JSON API).
    ("GET", "/rules"): Own("list", marker="rule_id"),
    ("GET", "/api/rules"): Own("list", marker="rule_id"),
    ("GET", "/symbols/{sym}"): Own("list", marker="rule_id"),
    ("GET", "/rules/{rule_id}/edit"): OBJECT,
    ("GET", "/api/rules/{rule_id}"): OBJECT,
    ("POST", "/rules/{rule_id}"): Own("object", form=True, reads=False, body={
        "symbol": "NSE:TCS", "kind": "cross_above", "params.level": "99"}),
    ("PUT", "/api/rules/{rule_id}"): Own("object", reads=False, body={
        "symbol": "NSE:TCS", "kind": "cross_above", "params": {"level": 99}}),
    ("POST", "/rules/{rule_id}/pause"): CHANGES,
    ("POST", "/rules/{rule_id}/resume"): CHANGES,
    ("POST", "/rules/{rule_id}/delete"): CHANGES,
    ("POST", "/api/rules/{rule_id}/pause"): CHANGES,
    ("POST", "/api/rules/{rule_id}/resume"): CHANGES,
    ("DELETE", "/api/rules/{rule_id}"): CHANGES,
    ("POST", "/rules"): Own("write", form=True, body={
        "symbol": "NSE:INFY", "kind": "cross_above", "params.level": "1600",
        "frequency": "every", "cooldown_s": "0", "channels": "default"}),
    ("POST", "/api/rules"): Own("write", body={
        "symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1600}}),
    ("GET", "/rules/export"): Own("list", marker="rule_id"),
    ("POST", "/rules/import"): Own("write", form=True, body={
        "file": '[{"symbol": "NSE:TCS", "kind": "cross_above", "params": {"level": 99}}]'}),
    # Test on history.
    ("GET", "/rules/{rule_id}/test"): OBJECT,
    ("POST", "/rules/{rule_id}/test"): Own("object", form=True, reads=False,
                                           body={"source": "days", "days": "1"}),
    ("POST", "/api/rules/{rule_id}/test"): Own("object", reads=False, body={"days": 1}),
    ("GET", "/backtests/{job_id}"): OBJECT,
    ("GET", "/api/backtests/{job_id}"): OBJECT,
    ("POST", "/backtests"): Own("write", form=True, body={
        "symbol": "NSE:INFY", "kind": "cross_above", "params.level": "1600", "source": "days",
        "days": "1"}),
    ("POST", "/api/backtests"): Own("write", body={
        "rule": {"symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1600}},
        "days": 1}),
    # Watchlist.
    ("POST", "/watchlist"): Own("write", form=True, body={"symbol": "NSE:TCS"}),
    ("POST", "/watchlist/remove"): Own("write", form=True, body={"symbol": "NSE:INFY"}),
    # Test messages.
    ("POST", "/test-message"): Own("write", form=True, body={}),
    ("GET", "/test-message/{request_id}"): OBJECT,
    ("GET", "/api/test-message/{request_id}"): OBJECT,
    # Settings: channels, limits, password, API tokens.
    ("GET", "/settings"): Own("list", marker="channel_id"),
    ("GET", "/api/channels"): Own("list", marker="channel_id"),
    ("GET", "/api/prefs"): Own("list", marker="quiet"),
    ("POST", "/settings/channels"): Own("write", form=True, body={
        "url": "json://127.0.0.1:9/bob", "tag": "default"}),
    ("POST", "/api/channels"): Own("write", body={"url": "json://127.0.0.1:9/bob2"}),
    ("POST", "/settings/channels/{channel_id}/delete"): CHANGES,
    ("DELETE", "/api/channels/{channel_id}"): CHANGES,
    ("POST", "/settings/prefs"): Own("write", form=True, body={"quiet": "01:00-02:00"}),
    ("PUT", "/api/prefs"): Own("write", body={"max_per_minute": 3}),
    ("POST", "/settings/password"): Own("write", form=True, body={
        "current": "not bob's password", "new": "whatever-pw", "confirm": "whatever-pw"}),
    ("POST", "/settings/tokens"): Own("write", form=True, body={"name": "bob bot"}),
    ("POST", "/settings/tokens/{token_id}/delete"): CHANGES,
}


def app_routes(app: Any) -> set[tuple[str, str]]:
    found = set()
    for route in app.routes:
        if isinstance(route, HTTPRoute):
            for method in route.route_handler_map:
                if method != "OPTIONS":
                    found.add((str(method), route.path_format))
    return found


@dataclass
class World:
    """alice (with one object of each kind), bob and root, each in a browser of their own."""

    r: redis.Redis
    settings: WebSettings
    clients: dict[str, TestClient[Any]] = field(default_factory=dict)
    ids: dict[str, str] = field(default_factory=dict)
    server: WebServer | None = None

    def call(self, who: str, method: str, path: str, *, body: dict[str, Any] | None = None,
             form: bool = False, headers: dict[str, str] | None = None) -> httpx.Response:
        client = self.clients[who]
        sent = {**(HTML if form or (method == "GET" and not path.startswith("/api/")) else JSON),
                **(headers or {})}
        if method != "GET" and "csrftoken" in client.cookies:
            sent["x-csrftoken"] = client.cookies["csrftoken"]
        kwargs: dict[str, Any] = {}
        if body is not None:
            kwargs["data" if form else "json"] = body
        return client.request(method, path, headers=sent, follow_redirects=False, **kwargs)

    def fill(self, path: str) -> str:
        return PARAM.sub(lambda m: self.ids.get(m.group(1), "x"), path)

    def data_of(self, name: str) -> dict[str, Any]:
        """Everything of a user's in Redis, to compare before and after a request."""
        data: dict[str, Any] = {key: self.r.dump(key) for key in sorted(
            self.r.scan_iter(f"{keys.user(name)}*"))}
        data["rules"] = {rule.id: rule.to_json() for rule in store.list_rules(self.r, name)}
        data["tokens"] = sorted(
            (key, self.r.get(key)) for key in self.r.scan_iter(keys.api_token("*"))
            if str(self.r.get(key)).startswith(f"{name}:"))
        return data

    def alice_data(self) -> dict[str, Any]:
        return self.data_of("alice")


async def _token(redis_url: str, user: str) -> tuple[str, str]:
    ar = aredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        token, info = await tokens.create_token(ar, user, "access test")
    finally:
        await ar.aclose()
    return token, info.id


@pytest.fixture(scope="module")
def world(redis_url: str, user_records: dict[str, dict[str, str]],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    r.flushdb()
    for name, record in user_records.items():
        r.sadd(keys.USERS, name)
        r.hset(keys.user(name), mapping=record)
    load_instruments(r)
    settings = WebSettings(redis_url=redis_url, stats_interval_s=3600,
                           login_attempts_per_minute=1000)
    w = World(r, settings)
    passwords = {"alice": "alice-secret-pw", "bob": "bob-secret-pw", "root": "root-secret-pw"}
    try:
        # Each client has an app of its own: a TestClient runs its app's lifespan in its own
        # event loop, and the app's Redis client belongs to that loop.
        w.clients["anonymous"] = TestClient(app=create_app(settings)).__enter__()
        for name, password in passwords.items():
            client = TestClient(app=create_app(settings)).__enter__()
            w.clients[name] = client
            assert login(client, name, password).status_code == 303
            client.get("/settings", headers=HTML)  # the CSRF cookie
        marker = secrets.token_hex(6)
        w.ids["alert_msg"] = f"alice private alert {marker}"  # nothing HTML escapes
        add_alert(r, "alice", w.ids["alert_msg"])
        [(_eid, fields)] = r.xrange(keys.ALERTS)  # type: ignore[misc]
        w.ids["alert_id"] = fields["id"]
        rule = w.call("alice", "POST", "/api/rules", body={
            "symbol": "NSE:INFY", "kind": "cross_above", "params": {"level": 1234.5}})
        assert rule.status_code == 201, rule.text
        w.ids["rule_id"] = rule.json()["id"]
        job = w.call("alice", "POST", f"/api/rules/{w.ids['rule_id']}/test", body={"days": 1})
        assert job.status_code == 202, job.text
        w.ids["job_id"] = job.json()["id"]
        sent = w.call("alice", "POST", "/test-message", form=True, body={})
        assert sent.status_code == 303, sent.text
        w.ids["request_id"] = sent.headers["location"].rsplit("/", 1)[-1]
        w.ids["channel_id"] = store.add_channel(r, "alice", "json://127.0.0.1:9/alice", "urgent")
        store.set_prefs(r, "alice", quiet="03:17-04:29")
        w.ids["quiet"] = "03:17-04:29"
        w.ids["token"], w.ids["token_id"] = asyncio.run(_token(redis_url, "alice"))
        w.ids["bob_token"], _ = asyncio.run(_token(redis_url, "bob"))
        w.ids["sym"] = "NSE:INFY"
        w.server = WebServer(redis_url, tmp_path_factory.mktemp("web-access"))
        yield w
    finally:
        for client in w.clients.values():
            client.__exit__(None, None, None)
        if w.server is not None:
            w.server.kill()
        r.close()


def test_every_route_is_in_the_table(world: World) -> None:
    routes = app_routes(world.clients["alice"].app)
    missing = sorted(routes - set(ACCESS))
    stale = sorted(set(ACCESS) - routes)
    assert not missing, f"routes with no access check, add them to ACCESS: {missing}"
    assert not stale, f"ACCESS lists routes the app no longer has: {stale}"


NOT_PUBLIC = sorted(k for k, v in ACCESS.items() if v != PUBLIC)


@pytest.mark.parametrize(("method", "path"), NOT_PUBLIC)
def test_signed_out_requests_are_refused(world: World, method: str, path: str) -> None:
    url = world.fill(path)
    anonymous = world.clients["anonymous"]
    anonymous.cookies.clear()
    response = anonymous.request(method, url, headers=JSON, follow_redirects=False)
    assert response.status_code in (401, 403), (response.status_code, response.text)
    page = anonymous.request(method, url, headers=HTML, follow_redirects=False)
    assert page.status_code in (302, 303, 401, 403)
    if page.status_code in (302, 303):
        assert page.headers["location"].startswith("/login")
    # An API token opens /api/ routes only (bob's: on alice's ids it gets a 404 at most).
    with_token = anonymous.request(method, url, follow_redirects=False, headers={
        **JSON, "Authorization": f"Bearer {world.ids['bob_token']}"})
    if not path.startswith("/api/"):
        assert with_token.status_code in (401, 403), (with_token.status_code, path)
    else:
        assert with_token.status_code not in (401, 403), (with_token.status_code, path)


ADMIN_ROUTES = sorted(k for k, v in ACCESS.items() if v == ADMIN)


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_admin_routes_refuse_plain_users(world: World, method: str, path: str) -> None:
    before = world.alice_data()
    response = world.call("bob", method, world.fill(path).replace("/x/", "/alice/"),
                          body={} if method == "POST" else None, form=method == "POST")
    refused = response.status_code in (401, 403, 404) or (
        response.status_code in (302, 303) and response.headers["location"].startswith("/login"))
    assert refused, (response.status_code, response.text)
    assert world.alice_data() == before
    if method == "GET":
        assert world.call("root", method, world.fill(path)).status_code not in (401, 403)


SIGNED_IN_ROUTES = sorted(k for k, v in ACCESS.items() if v == SIGNED_IN)


@pytest.mark.parametrize(("method", "path"), SIGNED_IN_ROUTES)
def test_shared_routes_hold_nothing_of_alice(world: World, method: str, path: str) -> None:
    if path == "/logout":
        return  # signing out ends only the caller's own session (a cookie of its own)
    response = world.call("bob", method, world.fill(path))
    assert response.status_code < 400, (response.status_code, response.text)
    for secret in ("alert_msg", "rule_id", "channel_id", "request_id", "job_id", "token_id"):
        assert world.ids[secret] not in response.text


OWN_ROUTES = sorted(k for k, v in ACCESS.items() if isinstance(v, Own))


@pytest.mark.parametrize(("method", "path"), OWN_ROUTES)
def test_users_reach_only_their_own_data(world: World, method: str, path: str) -> None:
    spec = ACCESS[(method, path)]
    assert isinstance(spec, Own)
    url = world.fill(path)
    if path == "/events":
        stream_never_carries_another_users_alerts(world)
        return
    before, bobs_before = world.alice_data(), world.data_of("bob")
    response = world.call("bob", method, url, body=spec.body, form=spec.form)
    after = world.alice_data()
    assert after == before, f"bob's {method} {url} changed alice's data"
    if spec.kind == "write" and response.status_code < 400:
        assert world.data_of("bob") != bobs_before, "the write went nowhere bob can see"
    if spec.kind == "object":
        assert response.status_code in REFUSED, (response.status_code, response.text)
    else:
        assert response.status_code < 500, (response.status_code, response.text)
    if spec.kind == "list":
        assert response.status_code == 200, response.text
        assert world.ids[spec.marker] not in response.text
    if spec.reads and spec.kind != "write":
        mine = world.call("alice", method, url)
        assert mine.status_code == 200, (mine.status_code, mine.text)
        if spec.kind == "list":
            assert world.ids[spec.marker] in mine.text


def stream_never_carries_another_users_alerts(world: World) -> None:
    """/events against a real server (TestClient buffers whole answers): bob's stream
    carries his alert and none of alice's, live and when replayed from the start."""
    assert world.server is not None
    server = world.server.start()
    try:
        with httpx.Client(base_url=server.url, timeout=READ_TIMEOUT_S) as bob:
            assert login(bob, "bob", "bob-secret-pw").status_code == 303
            with stream(bob) as events:
                alices = [add_alert(world.r, "alice", f"alice only {i}") for i in range(3)]
                bobs = add_alert(world.r, "bob", "for bob")
                event = next_event(events, "alert")
            assert event.id == bobs and orjson.loads(event.data)["msg"] == "for bob"
            # Reconnecting from before alice's alerts replays bob's only.
            with stream(bob, headers={"Last-Event-ID": "0-0"}) as events:
                assert next_event(events, "alert").id == bobs
            assert alices
    finally:
        server.kill()
