"""Fixtures for the web tests: users, alerts and quotes in a real Redis, an in-process
client for route tests, and helpers to sign in through the real login form."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from litestar.testing import TestClient

from proto import keys, store
from proto.events import Alert, Tick, quote_json

# The notifier as a real process and a loopback webhook, for the test-message button.
from tests.notify.conftest import notifier, webhook  # noqa: F401
from tests.web.browser import Browser, chromium
from tests.web.server import free_port
from web.app import create_app
from web.session import COOKIE
from web.settings import WebSettings

PASSWORDS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw", "root": "root-secret-pw"}
CSRF_FIELD = re.compile(r'name="_csrf_token" value="([^"]+)"')


@pytest.fixture(scope="session")
def user_records(redis_url: str) -> dict[str, dict[str, str]]:
    """The stored records of the test users, made once: argon2 hashing is slow on purpose."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        client.flushdb()
        for name, password in PASSWORDS.items():
            store.add_user(client, name, password, admin=name == "root")
        return {name: store.get_user(client, name) or {} for name in PASSWORDS}
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
def users(r: redis.Redis, user_records: dict[str, dict[str, str]]) -> dict[str, str]:
    """alice and bob (plain users) and root (admin), with their passwords."""
    for name, record in user_records.items():
        r.sadd(keys.USERS, name)
        r.hset(keys.user(name), mapping=record)
    return PASSWORDS


@pytest.fixture
def settings(redis_url: str) -> WebSettings:
    return WebSettings(redis_url=redis_url, stats_interval_s=3600)


@pytest.fixture
def client(settings: WebSettings, r: redis.Redis) -> Iterator[TestClient[Any]]:
    with TestClient(app=create_app(settings)) as test_client:
        yield test_client


def csrf_token(page: str) -> str:
    match = CSRF_FIELD.search(page)
    assert match, "no CSRF field in the form"
    return match.group(1)


def login(client: TestClient[Any] | httpx.Client, name: str, password: str,
          **extra: str) -> httpx.Response:
    """Sign in through the form exactly as a browser does: GET the form, POST it back."""
    page = client.get("/login")
    form = {"username": name, "password": password, "_csrf_token": csrf_token(page.text), **extra}
    return client.post("/login", data=form, follow_redirects=False)


def session_cookie(base_url: str, name: str, password: str) -> str:
    """Sign in on a running server through its form; the session cookie a browser would
    then hold."""
    with httpx.Client(base_url=base_url) as client:
        login(client, name, password)
        return client.cookies[COOKIE]


def add_alert(r: redis.Redis, user: str, msg: str, *, sym: str = "NSE:INFY",
              ltp: float = 1501.5) -> str:
    """XADD one alert as the engine writes it; returns the entry id."""
    now_us = time.time_ns() // 1000
    alert = Alert(id=f"r-{user}@{now_us}", rule=f"r-{user}", user=user, sym=sym,
                  kind="cross_above", ltp=ltp, ts=now_us // 1000, rx=now_us - 2500, at=now_us,
                  msg=msg)
    return str(r.xadd(keys.ALERTS, alert.to_fields()))


def set_quote(r: redis.Redis, sym: str, ltp: float, pc: float | None = None) -> None:
    tick = Tick(sym=sym, tok="1", src="sim", ltp=ltp, vol=1200, ts=int(time.time() * 1000),
                rx=time.time_ns() // 1000, pc=pc)
    r.hset(keys.QUOTES, sym, quote_json(tick))


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """Debian's chromium, headless, with a profile of its own (tests skip without it)."""
    with chromium(tmp_path / "profile", free_port()) as opened:
        yield opened
