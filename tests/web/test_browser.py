"""The dashboard in a real browser: its script renders live alerts and quotes, and after
the server restarts it resumes the feed exactly where it stopped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import redis

from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import add_alert, session_cookie, set_quote
from tests.web.server import WebServer, wait_for
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

ALERT_MESSAGES = "Array.from(document.querySelectorAll('#alerts li .msg')).map(e => e.textContent)"
STATUS = "document.getElementById('status').textContent"


def quote_row(sym: str) -> str:
    return (f"(document.querySelector('#quotes tr[data-sym=\"{sym}\"]') || {{}}).innerText"
            " || ''")


def test_dashboard_goes_live_and_resumes_after_a_restart(
        redis_url: str, r: redis.Redis, users: dict[str, str], browser: Browser,
        tmp_path: Path) -> None:
    set_quote(r, "NSE:INFY", 1500.0, pc=1480.0)
    add_alert(r, "alice", "history")
    server = WebServer(redis_url, tmp_path).start()
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])
        browser.open(f"{server.url}/", {COOKIE: cookie})
        assert wait_for(lambda: browser.evaluate(STATUS) == "live"), browser.evaluate(STATUS)
        assert browser.evaluate(ALERT_MESSAGES) == ["history"]

        add_alert(r, "bob", "not for alice")
        add_alert(r, "alice", "live one")
        set_quote(r, "NSE:TCS", 3999.0)
        assert wait_for(lambda: browser.evaluate(ALERT_MESSAGES) == ["live one", "history"])
        assert wait_for(lambda: "3,999.00" in browser.evaluate(quote_row("NSE:TCS")))

        assert server.terminate() == 0
        add_alert(r, "alice", "while the server was down")
        server = WebServer(redis_url, tmp_path, port=server.port).start()
        assert wait_for(lambda: len(browser.evaluate(ALERT_MESSAGES)) == 3, timeout_s=10)
        assert browser.evaluate(ALERT_MESSAGES) == [
            "while the server was down", "live one", "history"]
        assert browser.errors == []
    finally:
        server.kill()
