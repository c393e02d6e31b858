"""In a real browser: sign in, open an alert's page from its link and press the test-message
button; a real notifier sends to a loopback webhook and the page shows the outcome.
(Debian's chromium over the DevTools protocol, like test_browser.py: ``playwright install``
cannot fetch a browser here; skipped when chromium is not installed.)"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from proto import keys, store
from proto.display import alert_path as alert_href
from tests.notify.conftest import NotifierProc, Webhook, make_alert
from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import session_cookie
from tests.web.server import WebServer, wait_for
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

STATE = "(document.getElementById('test-state') || {dataset: {}}).dataset.state || ''"


def test_alert_page_and_test_button(
        redis_url: str, r: redis.Redis, users: dict[str, str], browser: Browser,
        webhook: Webhook, notifier: Callable[..., NotifierProc], tmp_path: Path) -> None:
    cid = store.add_channel(r, "alice", webhook.url("/hook"))
    alert = make_alert("alice")
    r.xadd(keys.ALERTS, alert.to_fields())  # type: ignore[arg-type]
    notifier()
    server = WebServer(redis_url, tmp_path).start()
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])
        browser.open(f"{server.url}{alert_href(alert.id)}", {COOKIE: cookie})
        # htmx loaded too: a click before it submits the form and navigates away.
        assert wait_for(lambda: browser.evaluate(
            "(document.querySelector('h1 .sym') || {}).textContent") == alert.sym
            and browser.evaluate("!!window.htmx"))
        # The notifier is up (it delivered the alert) before the button is pressed.
        assert wait_for(lambda: len(webhook.at("/hook")) == 1, timeout_s=30)
        browser.evaluate("document.getElementById('test-message').click()")
        assert wait_for(lambda: browser.evaluate(STATE) == "done", timeout_s=30), (
            browser.evaluate(STATE))
        assert browser.evaluate("location.pathname").startswith("/test-message/")
        results = browser.evaluate("document.getElementById('test-results').innerText")
        assert f"json:{cid}" in results and "ok" in results
        assert "Test message for alice" in str(webhook.at("/hook")[-1].body.get("message"))
        assert browser.errors == []
    finally:
        server.kill()
