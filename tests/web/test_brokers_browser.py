"""The broker logins in a real browser: the admin's click goes to the broker's login page
(a loopback server playing Kite and Upstox), comes back to the callback, and the access token
is stored where ingest reads it, under the pages' real CSP."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from ingest.tokens import read_stored
from proto import keys
from tests.web import server as web_server
from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import csrf_token, login
from tests.web.server import WebServer, wait_for
from tests.web.test_brokers import (
    KITE_KEY,
    KITE_SECRET,
    SECRETS_KEY,
    UPSTOX_ID,
    UPSTOX_SECRET,
    Broker,
    running_broker,
)
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

LOCATION = "location.pathname + location.search"


@pytest.fixture
def broker() -> Iterator[Broker]:
    with running_broker() as server:
        yield server


def test_kite_and_upstox_logins_in_a_browser(
        redis_url: str, r: redis.Redis, users: dict[str, str], browser: Browser, broker: Broker,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"STORMALERT_SECRETS_KEY": SECRETS_KEY,
                        "STORMALERT_KITE_API_URL": broker.url,
                        "STORMALERT_KITE_LOGIN_URL": f"{broker.url}/connect/login",
                        "STORMALERT_UPSTOX_API_URL": broker.url}.items():
        monkeypatch.setitem(web_server.TEST_ENV, name, value)
    server = WebServer(redis_url, tmp_path).start()
    broker.kite_redirect_url = f"{server.url}/admin/brokers/kite/callback"
    try:
        with httpx.Client(base_url=server.url) as client:
            login(client, "root", users["root"])
            for feed, key, secret in (("kite", KITE_KEY, KITE_SECRET),
                                      ("upstox", UPSTOX_ID, UPSTOX_SECRET)):
                token = csrf_token(client.get("/admin/brokers").text)
                saved = client.post(f"/admin/brokers/{feed}/credentials",
                                    data={"key": key, "secret": secret, "_csrf_token": token})
                assert saved.status_code == 303, saved.text
            cookie = client.cookies[COOKIE]
        for n, feed in enumerate(("kite", "upstox"), start=1):
            browser.open(f"{server.url}/admin/brokers", {COOKIE: cookie})
            assert wait_for(lambda feed=feed: browser.evaluate(
                f"!!document.getElementById('{feed}-login')"))
            browser.evaluate(f"document.getElementById('{feed}-login').click()")
            done = f"/admin/brokers?done=connected&feed={feed}"
            assert wait_for(lambda done=done: browser.evaluate(LOCATION) == done, 10), (
                browser.evaluate(LOCATION))
            assert read_stored(r.get(keys.feed_token(feed))) == broker.issued[-1]
            assert len(broker.issued) == n
        assert browser.errors == []
    finally:
        server.kill()
