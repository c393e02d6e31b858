"""API tokens: made and revoked on /settings, shown once, stored as a hash, accepted as
``Authorization: Bearer`` on /api/ routes only, exempt from CSRF only when they authenticated
the request, never logged, and a flood of wrong tokens slowed down."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from tests.web.conftest import add_alert, csrf_token, login
from web import tokens
from web.session import COOKIE

HTML = {"Accept": "text/html,application/xhtml+xml"}
TOKEN = re.compile(r'<code id="new-token">(sat_[A-Za-z0-9_-]{43})</code>')
HOOK = "json://127.0.0.1:9/hook"


def make_token(client: TestClient[Any], name: str = "trading bot") -> str:
    """Create a token through the settings form, as a person does; returns it."""
    page = client.get("/settings", headers=HTML)
    response = client.post("/settings/tokens", headers=HTML,
                           data={"name": name, "_csrf_token": csrf_token(page.text)})
    assert response.status_code == 200, response.text
    match = TOKEN.search(response.text)
    assert match, response.text
    return match.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


@pytest.fixture
def alice(client: TestClient[Any], users: dict[str, str]) -> TestClient[Any]:
    assert login(client, "alice", users["alice"]).status_code == 303
    return client


def test_token_is_shown_once_and_stored_only_as_a_hash(alice: TestClient[Any],
                                                       r: redis.Redis) -> None:
    token = make_token(alice)
    again = alice.get("/settings", headers=HTML).text
    assert token not in again and "trading bot" in again
    dump = {key: r.dump(key) for key in r.scan_iter("*")}
    assert not any(token.encode() in (value or b"") for value in dump.values())
    [token_id] = r.smembers(keys.user_token_ids("alice"))
    assert r.get(keys.api_token(tokens.token_hash(token))) == f"alice:{token_id}"
    assert tokens.token_hash(token) in r.get(keys.user_token("alice", token_id))


def test_bearer_token_authenticates_api_routes_as_its_owner(
        alice: TestClient[Any], r: redis.Redis, settings: Any) -> None:
    token = make_token(alice)
    mine = add_alert(r, "alice", "alice's alert")
    add_alert(r, "bob", "bob's alert")
    alice.cookies.clear()
    body = alice.get("/api/alerts", headers=bearer(token))
    assert body.status_code == 200, body.text
    assert [a["entry_id"] for a in body.json()["alerts"]] == [mine]
    assert alice.get("/api/quotes", headers=bearer(token)).status_code == 200


def test_bearer_token_does_not_open_pages(alice: TestClient[Any]) -> None:
    token = make_token(alice)
    alice.cookies.clear()
    for path in ("/", "/settings"):
        page = alice.get(path, headers={**HTML, "Authorization": f"Bearer {token}"},
                         follow_redirects=False)
        assert page.status_code in (302, 303) and page.headers["location"].startswith("/login")
    assert alice.get("/events", headers=bearer(token)).status_code == 401


def test_bearer_requests_skip_csrf_and_cookie_requests_do_not(alice: TestClient[Any],
                                                             r: redis.Redis) -> None:
    token = make_token(alice)
    refused = alice.post("/api/channels", json={"url": HOOK, "tag": "bots"})
    assert refused.status_code == 403  # the session cookie alone: CSRF applies
    assert store.list_channels(r, "alice") == []
    # A bearer header on a page is ignored, so it does not lift the page's CSRF check either.
    page = alice.post("/settings/channels", data={"url": HOOK, "tag": "x"},
                      headers={"Authorization": f"Bearer {token}"}, follow_redirects=False)
    assert page.status_code == 403
    alice.cookies.clear()
    added = alice.post("/api/channels", json={"url": HOOK, "tag": "bots"}, headers=bearer(token))
    assert added.status_code == 201, added.text
    assert added.json()["tag"] == "bots" and "127.0.0.1" not in added.text
    assert [c["tag"] for c in store.list_channels(r, "alice")] == ["bots"]


@pytest.mark.parametrize("header", [
    "Bearer sat_" + "A" * 43,  # well-formed, unknown
    "Bearer not-a-token",
    "bearer ",
])
def test_unknown_tokens_are_refused(client: TestClient[Any], users: dict[str, str],
                                    header: str) -> None:
    response = client.get("/api/alerts", headers={"Authorization": header})
    assert response.status_code == 401


def test_session_jwt_is_not_a_bearer_token(alice: TestClient[Any]) -> None:
    jwt = alice.cookies[COOKIE]
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(jwt)).status_code == 401


def test_other_authorization_schemes_leave_the_cookie_in_charge(alice: TestClient[Any]) -> None:
    # e.g. a proxy in front that uses Basic authentication
    response = alice.get("/api/alerts", headers={"Authorization": "Basic dTpw"})
    assert response.status_code == 200


def test_revoked_token_stops_working(alice: TestClient[Any], r: redis.Redis) -> None:
    token = make_token(alice)
    keep = make_token(alice, "second")
    token_id = r.get(keys.api_token(tokens.token_hash(token))).partition(":")[2]
    page = alice.get("/settings", headers=HTML)
    revoked = alice.post(f"/settings/tokens/{token_id}/delete", follow_redirects=False,
                         data={"_csrf_token": csrf_token(page.text)})
    assert revoked.status_code == 303
    assert r.get(keys.api_token(tokens.token_hash(token))) is None
    assert not r.exists(keys.user_token("alice", token_id))
    assert token_id not in r.smembers(keys.user_token_ids("alice"))
    assert alice.get("/settings", headers=HTML).text.count('data-token="') == 1
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 401
    assert alice.get("/api/alerts", headers=bearer(keep)).status_code == 200


def test_token_of_a_deleted_or_disabled_user_is_refused(alice: TestClient[Any],
                                                       r: redis.Redis) -> None:
    token = make_token(alice)
    alice.cookies.clear()
    r.hset(keys.user("alice"), "disabled", "1")
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 401
    r.hset(keys.user("alice"), "disabled", "0")
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 200
    r.delete(keys.user("alice"))
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 401


def test_a_half_written_index_entry_is_not_a_token(client: TestClient[Any],
                                                   users: dict[str, str], r: redis.Redis) -> None:
    token = "sat_" + "B" * 43
    r.set(keys.api_token(tokens.token_hash(token)), "alice:0123456789ab")  # no record
    r.hset(keys.API_TOKENS, tokens.token_hash(token), "alice:0123456789ab")  # nor before
    assert client.get("/api/alerts", headers=bearer(token)).status_code == 401


def test_token_names_are_checked(alice: TestClient[Any]) -> None:
    page = alice.get("/settings", headers=HTML)
    for name, problem in (("", "1-64 characters"), ("<script>", "1-64 characters"),
                          ("x" * 65, "1-64 characters")):
        response = alice.post("/settings/tokens", headers=HTML,
                              data={"name": name, "_csrf_token": csrf_token(page.text)})
        assert response.status_code == 422 and problem in response.text
        assert 'id="new-token"' not in response.text
    make_token(alice, "bot")
    duplicate = alice.post("/settings/tokens", headers=HTML,
                           data={"name": "bot", "_csrf_token": csrf_token(page.text)})
    assert duplicate.status_code == 422 and "already have a token named" in duplicate.text


def test_wrong_tokens_are_rate_limited_per_client(client: TestClient[Any],
                                                  users: dict[str, str]) -> None:
    wrong = bearer("sat_" + "C" * 43)
    statuses = [client.get("/api/alerts", headers=wrong).status_code
                for _ in range(tokens.FAILURES_PER_MINUTE + 2)]
    assert statuses[:tokens.FAILURES_PER_MINUTE] == [401] * tokens.FAILURES_PER_MINUTE
    assert statuses[-2:] == [429, 429]


def test_tokens_are_never_logged(alice: TestClient[Any], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = make_token(alice)
    alice.cookies.clear()
    alice.get("/api/alerts", headers=bearer(token))
    alice.get("/api/alerts", headers=bearer(token[:-1] + "x"))
    assert "created by alice" in caplog.text
    assert token not in caplog.text and token[4:20] not in caplog.text
