"""Route tests against the in-process app and a real Redis."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from proto import keys
from tests.web.conftest import add_alert, csrf_token, login, set_quote
from web import pages
from web.app import create_app
from web.session import COOKIE
from web.settings import WebSettings

HTML = {"Accept": "text/html,application/xhtml+xml"}


def test_login_page_is_a_csrf_protected_form(client: TestClient[Any]) -> None:
    page = client.get("/login")
    assert page.status_code == 200
    assert 'name="username"' in page.text and 'type="password"' in page.text
    assert csrf_token(page.text)
    assert "csrftoken" in page.cookies


def test_login_sets_an_httponly_lax_session_cookie(client: TestClient[Any], users: dict) -> None:
    response = login(client, "alice", users["alice"])
    assert response.status_code in (302, 303)
    assert response.headers["location"] == "/"
    set_cookie = next(v for v in response.headers.get_list("set-cookie") if v.startswith(COOKIE))
    assert "HttpOnly" in set_cookie
    assert "SameSite=lax" in set_cookie or "SameSite=Lax" in set_cookie
    page = client.get("/", headers=HTML)
    assert page.status_code == 200
    assert "alice" in page.text


@pytest.mark.parametrize(("name", "password"), [
    ("alice", "wrong-password"), ("nobody", "whatever-pw"), ("alice", ""),
])
def test_login_failure_is_generic(client: TestClient[Any], users: dict, name: str,
                                  password: str) -> None:
    response = login(client, name, password)
    assert response.status_code == 401
    assert pages.LOGIN_FAILED in response.text
    assert COOKIE not in response.cookies
    if password:
        assert password not in response.text


def test_login_keeps_a_local_next_target_only(client: TestClient[Any], users: dict) -> None:
    assert login(client, "alice", users["alice"], next="/api/quotes").headers["location"] == (
        "/api/quotes")
    for target in ("https://evil.example/", "//evil.example/x", "/\\evil.example"):
        response = login(client, "alice", users["alice"], next=target)
        assert response.headers["location"] == "/"


def test_login_without_csrf_token_is_refused(client: TestClient[Any], users: dict) -> None:
    client.get("/login")
    response = client.post("/login", data={"username": "alice", "password": users["alice"]},
                           headers=HTML, follow_redirects=False)
    assert response.status_code == 403
    assert COOKIE not in response.cookies
    assert "expired" in response.text


def test_logged_out_requests(client: TestClient[Any]) -> None:
    page = client.get("/", headers=HTML, follow_redirects=False)
    assert page.status_code in (302, 303) and page.headers["location"] == "/login"
    deep = client.get("/?x=1", headers=HTML, follow_redirects=False)
    assert deep.headers["location"] == "/login?next=/%3Fx%3D1"
    api = client.get("/api/alerts", headers={"Accept": "application/json"})
    assert api.status_code == 401 and api.json()["detail"] == "authentication required"
    htmx = client.get("/", headers={**HTML, "HX-Request": "true"}, follow_redirects=False)
    assert htmx.status_code == 401 and htmx.headers["HX-Redirect"] == "/login"
    stream = client.get("/events", headers={"Accept": "text/event-stream"})
    assert stream.status_code == 401


def test_forged_session_cookie_is_refused(client: TestClient[Any]) -> None:
    client.cookies.set(COOKIE, "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJyb290In0.bad")
    assert client.get("/api/quotes").status_code == 401


def test_logout_needs_csrf_and_clears_the_session(client: TestClient[Any], users: dict) -> None:
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML)
    assert client.post("/logout", follow_redirects=False).status_code == 403
    response = client.post("/logout", data={"_csrf_token": csrf_token(page.text)},
                           follow_redirects=False)
    assert response.status_code in (302, 303) and response.headers["location"] == "/login"
    assert client.get("/api/quotes").status_code == 401


def test_dashboard_renders_quotes(client: TestClient[Any], users: dict, r: redis.Redis) -> None:
    set_quote(r, "NSE:INFY", 1502.25, pc=1480.0)
    set_quote(r, "NSE:NIFTY 50", 22012.5)
    r.hset(keys.QUOTES, "NSE:BROKEN", "not json")
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML).text
    assert "NSE:INFY" in page and "1,502.25" in page and "+1.50%" in page
    assert "NSE:NIFTY 50" in page and "22,012.50" in page
    assert "NSE:BROKEN" not in page
    quotes = client.get("/api/quotes").json()["quotes"]
    assert quotes["NSE:INFY"]["ltp"] == 1502.25 and "NSE:BROKEN" not in quotes


def test_users_see_only_their_own_alerts(client: TestClient[Any], users: dict,
                                         r: redis.Redis) -> None:
    alice_id = add_alert(r, "alice", "alice crossed 1500")
    bob_id = add_alert(r, "bob", "bob crossed 2900", sym="NSE:RELIANCE")
    r.xadd(keys.ALERTS, {"user": "alice", "msg": "malformed entry"})

    login(client, "alice", users["alice"])
    body = client.get("/api/alerts").json()
    assert [a["entry_id"] for a in body["alerts"]] == [alice_id]
    assert body["alerts"][0]["msg"] == "alice crossed 1500"
    assert body["cursor"] > bob_id
    page = client.get("/", headers=HTML).text
    assert "alice crossed 1500" in page and "2.50 ms" in page
    assert "bob crossed 2900" not in page and bob_id not in page

    client.cookies.clear()
    login(client, "bob", users["bob"])
    assert [a["msg"] for a in client.get("/api/alerts").json()["alerts"]] == ["bob crossed 2900"]

    client.cookies.clear()
    login(client, "root", users["root"])
    seen = [a["msg"] for a in client.get("/api/alerts").json()["alerts"]]
    assert seen == ["bob crossed 2900", "alice crossed 1500"]
    assert "bob crossed 2900" in client.get("/", headers=HTML).text


def test_page_cursor_covers_history(client: TestClient[Any], users: dict,
                                    r: redis.Redis) -> None:
    login(client, "alice", users["alice"])
    assert 'data-events="/events?since=0-0"' in client.get("/", headers=HTML).text
    last = add_alert(r, "bob", "not alice's")
    assert f'data-events="/events?since={last}"' in client.get("/", headers=HTML).text


def test_healthz(client: TestClient[Any]) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"redis": "ok"}


def test_healthz_503_when_redis_is_down() -> None:
    settings = WebSettings(redis_url="redis://127.0.0.1:1/0", jwt_secret="t" * 40,
                           stats_interval_s=3600)
    with TestClient(app=create_app(settings)) as client:
        response = client.get("/healthz")
        assert response.status_code == 503 and response.json() == {"redis": "down"}
        page = client.get("/login", headers=HTML)
        assert page.status_code == 200


def test_session_secret_is_created_once_in_redis(settings: WebSettings, r: redis.Redis,
                                                 users: dict) -> None:
    with TestClient(app=create_app(settings)) as first:
        login(first, "alice", users["alice"])
        cookie = first.cookies[COOKIE]
    secret = r.get(keys.JWT_SECRET)
    assert secret and len(secret) >= 32
    with TestClient(app=create_app(settings)) as restarted:
        restarted.cookies.set(COOKIE, cookie)
        assert restarted.get("/api/quotes").status_code == 200
        assert secret not in restarted.get("/", headers=HTML).text
    assert r.get(keys.JWT_SECRET) == secret


def test_configured_secret_wins(redis_url: str, r: redis.Redis) -> None:
    create_app(WebSettings(redis_url=redis_url, jwt_secret="c" * 40))
    assert r.get(keys.JWT_SECRET) is None


def test_unknown_page_is_a_plain_404(client: TestClient[Any], users: dict) -> None:
    login(client, "alice", users["alice"])
    page = client.get("/no/such/page", headers=HTML)
    assert page.status_code == 404 and "Page not found" in page.text
    api = client.get("/api/nothing")
    assert api.status_code == 404 and api.json()["status"] == 404


def test_server_error_page_leaks_nothing(client: TestClient[Any], users: dict,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_args: object) -> list:
        raise RuntimeError("internal detail sk-123")

    monkeypatch.setattr(pages.watchlist, "watchlist_context", explode)
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML)
    assert page.status_code == 500 and "Something went wrong" in page.text
    assert "sk-123" not in page.text and "Traceback" not in page.text


def test_static_assets_are_public(client: TestClient[Any]) -> None:
    assert client.get("/static/app.js").status_code == 200
    assert "text/css" in client.get("/static/app.css").headers["content-type"]


def test_pages_are_not_cached_and_carry_security_headers(client: TestClient[Any],
                                                         users: dict) -> None:
    login(client, "Alice ", users["alice"])  # user names are matched case-insensitively
    page = client.get("/", headers=HTML)
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "max-age=300" in client.get("/static/app.js").headers["cache-control"]


def test_sign_in_attempts_are_rate_limited(redis_url: str, r: redis.Redis) -> None:
    settings = WebSettings(redis_url=redis_url, login_attempts_per_minute=2,
                           stats_interval_s=3600)
    with TestClient(app=create_app(settings)) as client:
        assert [login(client, "alice", "wrong-password").status_code for _ in range(3)] == [
            401, 401, 429]
        assert client.get("/login").status_code == 200
    # The count lives in Redis: another web process (or a restarted one) refuses too.
    assert r.keys(f"{keys.RATE_LIMITS}:login_attempts:*")
    with TestClient(app=create_app(settings)) as client:
        assert login(client, "alice", "wrong-password").status_code == 429


def test_alert_text_is_escaped(client: TestClient[Any], users: dict, r: redis.Redis) -> None:
    add_alert(r, "alice", "<script>alert(1)</script>", sym="NSE:<b>X</b>")
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML).text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>alert(1)" not in page and "<b>X</b>" not in page
