"""API tokens an operator can audit and that expire: the last use (time and address, written
at most once a minute, never failing the request), the lifetime chosen at creation (refused
with "token expired" after it, listed as expired, removed by a Redis TTL some days later),
the settings page's columns, and tokens made before expiry existed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis
from litestar.testing import TestClient

from proto import keys
from tests.web.conftest import csrf_token, login
from tests.web.test_tokens import HTML, TOKEN, bearer
from web import tokens
from web.settings_page import created_text

DAY_S = 24 * 3600
CLIENT = "testclient"  # the client address TestClient gives every request


@pytest.fixture
def alice(client: TestClient[Any], users: dict[str, str]) -> TestClient[Any]:
    assert login(client, "alice", users["alice"]).status_code == 303
    return client


def make(client: TestClient[Any], name: str, expires: str | None = None) -> str:
    """A token made through the settings form (``expires`` left out: the form's default)."""
    page = client.get("/settings", headers=HTML)
    form = {"name": name, "_csrf_token": csrf_token(page.text)}
    if expires is not None:
        form["expires"] = expires
    response = client.post("/settings/tokens", headers=HTML, data=form)
    assert response.status_code == 200, response.text
    match = TOKEN.search(response.text)
    assert match, response.text
    return match.group(1)


def record_key(r: redis.Redis, token: str) -> str:
    owner = r.get(keys.api_token(tokens.token_hash(token)))
    assert owner, "no index entry"
    user, _, token_id = owner.partition(":")
    return keys.user_token(user, token_id)


def record(r: redis.Redis, token: str) -> dict[str, Any]:
    raw = r.get(record_key(r, token))
    assert raw is not None
    value: dict[str, Any] = orjson.loads(raw)
    return value


def rewrite(r: redis.Redis, token: str, **fields: Any) -> None:
    """Change a stored record as time would have (keeping its TTL)."""
    assert r.set(record_key(r, token), orjson.dumps({**record(r, token), **fields}),
                 keepttl=True, xx=True)


def row(page: str, name: str) -> str:
    start = page.index(f'<th scope="row">{name}</th>')
    return page[start:page.index("</tr>", start)]


def test_last_use_is_recorded_at_most_once_a_minute(alice: TestClient[Any],
                                                    r: redis.Redis) -> None:
    token = make(alice, "bot")
    assert "used_ms" not in record(r, token)
    alice.cookies.clear()
    before_ms = int(time.time() * 1000)
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 200
    first = record(r, token)
    assert before_ms <= first["used_ms"] <= int(time.time() * 1000)
    assert first["used_from"] == CLIENT
    assert alice.get("/api/quotes", headers=bearer(token)).status_code == 200
    assert record(r, token) == first  # within the minute: not written again
    # A minute later the next request writes again, and the record keeps its TTL.
    rewrite(r, token, used_ms=first["used_ms"] - tokens.LAST_USE_EVERY_MS, used_from="10.0.0.9")
    ttl_s = r.ttl(record_key(r, token))
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 200
    later = record(r, token)
    assert later["used_ms"] >= first["used_ms"] and later["used_from"] == CLIENT
    assert 0 < ttl_s - 5 <= r.ttl(record_key(r, token)) <= ttl_s


def test_a_redis_error_on_the_last_use_write_does_not_fail_the_request(
        alice: TestClient[Any], r: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    token = make(alice, "bot")
    alice.cookies.clear()
    stored = r.get(record_key(r, token))
    policy, limit = (r.config_get(name)[name] for name in ("maxmemory-policy", "maxmemory"))
    caplog.set_level(logging.DEBUG)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", "1")  # reads still answer; every write is refused (OOM)
    try:
        response = alice.get("/api/alerts", headers=bearer(token))
    finally:
        r.config_set("maxmemory", limit)
        r.config_set("maxmemory-policy", policy)
    assert response.status_code == 200, response.text
    assert r.get(record_key(r, token)) == stored
    assert "last use not recorded" in caplog.text and "maxmemory" in caplog.text
    assert token not in caplog.text and token[4:20] not in caplog.text


def test_a_revoked_token_is_not_written_back_by_its_last_use(alice: TestClient[Any],
                                                             r: redis.Redis,
                                                             redis_url: str) -> None:
    token = make(alice, "bot")

    async def authenticate_then_revoke_then_write() -> None:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            found = await tokens.find_token(ar, token, "10.1.2.3")
            assert found is not None and found[0].last_use is not None
            assert await tokens.revoke_token(ar, "alice", found[0].id)
            await tokens.record_use(ar, found[0])
        finally:
            await ar.aclose()

    key = record_key(r, token)
    asyncio.run(authenticate_then_revoke_then_write())
    assert not r.exists(key) and r.smembers(keys.user_token_ids("alice")) == set()


def test_an_expired_token_is_refused_with_the_reason_and_stays_listed(
        alice: TestClient[Any], r: redis.Redis) -> None:
    token = make(alice, "monthly", "30")
    stored = record(r, token)
    assert stored["expires"] == stored["created"] + 30 * DAY_S
    kept_s = 30 * DAY_S + keys.API_TOKEN_KEPT_S
    for key in (record_key(r, token), keys.api_token(tokens.token_hash(token))):
        assert kept_s - 60 <= r.ttl(key) <= kept_s
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 200
    rewrite(r, token, expires=int(time.time()) - 1)
    refused = alice.get("/api/alerts", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.json() == {"status": 401, "detail": "token expired"}
    unknown = alice.get("/api/alerts", headers=bearer("sat_" + "D" * 43))
    assert unknown.status_code == 401 and unknown.json()["detail"] == "authentication required"
    assert r.get(keys.token_failures(CLIENT)) == "1"  # only the unknown one counts as a guess
    r.hset(keys.user("alice"), "disabled", "1")  # a disabled user's token tells nothing more
    gone = alice.get("/api/alerts", headers=bearer(token))
    assert gone.status_code == 401 and gone.json()["detail"] == "authentication required"
    r.hset(keys.user("alice"), "disabled", "0")
    assert login(alice, "alice", "alice-secret-pw").status_code == 303
    page = alice.get("/settings", headers=HTML).text
    assert "expired" in row(page, "monthly") and 'class="expired"' in page


def test_a_token_that_never_expires(alice: TestClient[Any], r: redis.Redis) -> None:
    token = make(alice, "forever", "never")
    assert record(r, token)["expires"] is None
    assert r.ttl(record_key(r, token)) == -1
    assert r.ttl(keys.api_token(tokens.token_hash(token))) == -1
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 200
    assert r.ttl(record_key(r, token)) == -1  # the last-use write adds no TTL


def test_the_lifetime_defaults_to_90_days_and_is_checked(alice: TestClient[Any],
                                                         r: redis.Redis) -> None:
    token = make(alice, "default")
    stored = record(r, token)
    assert stored["expires"] == stored["created"] + 90 * DAY_S
    page = alice.get("/settings", headers=HTML)
    refused = alice.post("/settings/tokens", headers=HTML, data={
        "name": "weekly", "expires": "7", "_csrf_token": csrf_token(page.text)})
    assert refused.status_code == 422 and "30, 90 or 365 days, or never" in refused.text
    assert 'id="new-token"' not in refused.text
    assert len(r.smembers(keys.user_token_ids("alice"))) == 1


def test_the_settings_page_lists_expiry_and_last_use(alice: TestClient[Any],
                                                     r: redis.Redis) -> None:
    yearly = make(alice, "yearly", "365")
    make(alice, "forever", "never")
    page = alice.get("/settings", headers=HTML).text
    for column in ("Name", "Created", "Expires", "Last used"):
        assert f'<th scope="col">{column}</th>' in page
    stored = record(r, yearly)
    assert created_text(stored["created"]) in row(page, "yearly")
    assert created_text(stored["expires"]) in row(page, "yearly")
    assert "never used" in row(page, "yearly")
    assert ">never<" in row(page, "forever") and "never used" in row(page, "forever")
    assert 'action="/settings/tokens/' in row(page, "yearly")  # the revoke button
    session = dict(alice.cookies)
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(yearly)).status_code == 200
    alice.cookies.update(session)
    page = alice.get("/settings", headers=HTML).text
    used = row(page, "yearly")
    assert created_text(record(r, yearly)["used_ms"] / 1000) in used and "IST" in used
    assert f"from <code>{CLIENT}</code>" in used and "never used" not in used


def test_records_go_when_their_ttl_ends(alice: TestClient[Any], r: redis.Redis) -> None:
    token = make(alice, "short", "30")
    key = record_key(r, token)
    r.delete(key)  # as its TTL would
    assert "short" not in alice.get("/settings", headers=HTML).text
    assert r.smembers(keys.user_token_ids("alice")) == set()
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(token)).status_code == 401


@pytest.fixture
def old_token(r: redis.Redis, users: dict[str, str]) -> Iterator[str]:
    """A token stored the way tokens were before they could expire."""
    token = "sat_" + "E" * 43
    digest = tokens.token_hash(token)
    r.hset(keys.user_tokens("alice"), "0123456789ab",
           orjson.dumps({"name": "old bot", "hash": digest, "created": 1_700_000_000}))
    r.hset(keys.API_TOKENS, digest, "alice:0123456789ab")
    yield token


def test_a_token_made_before_expiry_keeps_working_and_never_expires(
        client: TestClient[Any], r: redis.Redis, old_token: str) -> None:
    assert client.get("/api/alerts", headers=bearer(old_token)).status_code == 200
    assert not r.exists(keys.user_tokens("alice"))
    assert r.hget(keys.API_TOKENS, tokens.token_hash(old_token)) is None
    moved = record(r, old_token)
    assert (moved["name"], moved["created"], moved["expires"]) == ("old bot", 1_700_000_000, None)
    assert moved["used_from"] == CLIENT
    assert client.get("/api/alerts", headers=bearer(old_token)).status_code == 200


def test_a_token_made_before_expiry_is_listed_and_revoked(
        alice: TestClient[Any], r: redis.Redis, old_token: str) -> None:
    page = alice.get("/settings", headers=HTML)
    assert ">never<" in row(page.text, "old bot")
    revoked = alice.post("/settings/tokens/0123456789ab/delete", follow_redirects=False,
                         data={"_csrf_token": csrf_token(page.text)})
    assert revoked.status_code == 303
    alice.cookies.clear()
    assert alice.get("/api/alerts", headers=bearer(old_token)).status_code == 401
    assert not [key for key in r.scan_iter("sa:*token*") if "fail" not in key]
