"""In a real browser (Debian's chromium, as in test_browser.py): sign in, create a rule
through the form (htmx swaps in the chosen kind's fields), see it listed, and pause it
from its row. Skipped when chromium is not installed."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import redis

from proto import keys
from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import session_cookie
from tests.web.rulehelp import load_instruments, stored
from tests.web.server import WebServer, wait_for
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

ROW = "document.querySelector('#rules tbody tr')"


def js(expression: str) -> str:
    return f"(() => {{ {expression} }})()"


def test_create_a_rule_through_the_form(redis_url: str, r: redis.Redis, users: dict[str, str],
                                        browser: Browser, tmp_path: Path) -> None:
    load_instruments(r)
    server = WebServer(redis_url, tmp_path).start()
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])
        browser.open(f"{server.url}/rules/new", {COOKIE: cookie})
        assert wait_for(lambda: browser.evaluate(
            "!!document.querySelector('[name=\"params.level\"]') && !!window.htmx"))

        browser.evaluate(js("""
            document.getElementById('symbol').value = 'nse:infy';
            const kind = document.getElementById('kind');
            kind.value = 'window_pct';
            kind.dispatchEvent(new Event('change', {bubbles: true}));"""))
        # htmx fetched the kind's fields and swapped them in place of cross_above's.
        assert wait_for(lambda: browser.evaluate(
            "!!document.querySelector('[name=\"params.window_s\"]')"))
        assert browser.evaluate("document.querySelector('[name=\"params.level\"]')") is None
        browser.evaluate(js("""
            document.querySelector('[name="params.pct"]').value = '1.5';
            document.querySelector('[name="params.window_s"]').value = '300';
            document.getElementById('cooldown_s').value = '60';
            document.getElementById('save').click();"""))
        assert wait_for(lambda: browser.evaluate("location.pathname") == "/rules")
        assert wait_for(lambda: browser.evaluate(f"!!{ROW}"))
        row = browser.evaluate(f"{ROW}.innerText")
        assert "NSE:INFY" in row and "window_pct" in row and "pct 1.5, window_s 300" in row
        assert "cooldown 60 s" in row and "active" in row
        rule_id = browser.evaluate(f"{ROW}.dataset.id")
        rule = stored(r, rule_id)
        assert rule is not None and rule["user"] == "alice"
        assert rule["params"] == {"pct": 1.5, "window_s": 300.0, "direction": "either"}

        # Pause from the row: htmx swaps the row in place (the page is not reloaded).
        browser.evaluate("window.__same_page = true")
        browser.evaluate(f"{ROW}.querySelector('button.pause').click()")
        assert wait_for(lambda: "paused" in (browser.evaluate(f"{ROW}.innerText") or ""))
        assert browser.evaluate("window.__same_page") is True
        assert stored(r, rule_id)["active"] is False  # type: ignore[index]
        assert r.xlen(keys.RULE_CHANGES) == 2

        shot = browser.call("Page.captureScreenshot", format="png")
        (tmp_path / "rules.png").write_bytes(base64.b64decode(shot["data"]))
        assert browser.errors == []
    finally:
        server.kill()
