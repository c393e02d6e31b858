"""A trader's first minutes, in a real browser (Debian's chromium, as in test_browser.py)
against real processes: sign in through the login form, create a rule through the rules
form, and watch its alert appear live on the dashboard when a real engine shard sees the
price cross the level in the tick stream. Saves a screenshot. Skipped without chromium."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import orjson
import pytest
import redis

from proto import keys
from proto.events import Tick, encode_tick_batch
from tests.helpers import spawn, stop
from tests.web.browser import CHROMIUM, Browser
from tests.web.rulehelp import load_instruments
from tests.web.server import WebServer, wait_for

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

STATUS = "document.getElementById('status').textContent"
ALERT_MESSAGES = "Array.from(document.querySelectorAll('#alerts li .msg')).map(e => e.textContent)"


def js(expression: str) -> str:
    return f"(() => {{ {expression} }})()"


def engine_rules(r: redis.Redis) -> int:
    """How many rules shard 0 says it has armed (its heartbeat); -1 before it beats."""
    raw = r.get(keys.heartbeat("engine-0"))
    return int(orjson.loads(raw).get("rules", -1)) if raw else -1


def tick(ltp: float) -> dict[str, str]:
    now_us = time.time_ns() // 1000
    return encode_tick_batch([Tick(sym="NSE:INFY", tok="408065", src="kite", ltp=ltp, vol=10,
                                   ts=now_us // 1000, rx=now_us)])


def test_sign_in_create_a_rule_and_see_its_alert_live(
        redis_url: str, r: redis.Redis, users: dict[str, str], browser: Browser,
        tmp_path: Path) -> None:
    load_instruments(r)
    engine = spawn(["engine", "--shard", "0", "--shards", "1"], redis_url,
                   tmp_path / "engine.log")
    server = WebServer(redis_url, tmp_path).start()
    try:
        assert wait_for(lambda: engine_rules(r) == 0, timeout_s=30), "the shard did not start"

        # Sign in through the form, as a person does.
        browser.open(f"{server.url}/login", {})
        assert wait_for(lambda: browser.evaluate("!!document.getElementById('username')"))
        browser.evaluate(js(f"""
            document.getElementById('username').value = 'alice';
            document.getElementById('password').value = {orjson.dumps(users['alice']).decode()};
            document.querySelector('form[action="/login"] button[type=submit]').click();"""))
        assert wait_for(lambda: browser.evaluate("location.pathname") == "/")

        # A rule through the form: INFY crossing above 1510.
        browser.evaluate(f"location.href = '{server.url}/rules/new'")
        assert wait_for(lambda: browser.evaluate(
            "!!document.querySelector('[name=\"params.level\"]')"))
        browser.evaluate(js("""
            document.getElementById('symbol').value = 'NSE:INFY';
            document.querySelector('[name="params.level"]').value = '1510';
            document.getElementById('save').click();"""))
        assert wait_for(lambda: browser.evaluate("location.pathname") == "/rules")
        assert wait_for(lambda: "NSE:INFY" in (browser.evaluate(
            "(document.querySelector('#rules tbody tr') || {}).innerText") or ""))
        # The shard arms it without a restart (hot reload: its heartbeat says so within one
        # beat, every 2 s).
        assert wait_for(lambda: engine_rules(r) == 1, timeout_s=6), engine_rules(r)

        browser.evaluate(f"location.href = '{server.url}/'")
        assert wait_for(lambda: browser.evaluate(STATUS) == "live"), browser.evaluate(STATUS)
        assert browser.evaluate(ALERT_MESSAGES) == []
        browser.evaluate("window.__same_page = true")  # gone if the page were reloaded

        # The price crosses the level in the tick stream, as ingest would write it.
        r.xadd(keys.ticks(0), tick(1505.0))
        r.xadd(keys.ticks(0), tick(1512.5))
        assert wait_for(lambda: len(browser.evaluate(ALERT_MESSAGES) or []) == 1, timeout_s=10), \
            (tmp_path / "engine.log").read_text()[-2000:]
        [message] = browser.evaluate(ALERT_MESSAGES)
        assert "NSE:INFY crossed above 1510" in message, message
        assert browser.evaluate("window.__same_page") is True
        [(_id, alert)] = r.xrange(keys.ALERTS)
        assert alert["user"] == "alice" and alert["kind"] == "cross_above"

        shot = browser.call("Page.captureScreenshot", format="png")
        (tmp_path / "journey.png").write_bytes(base64.b64decode(shot["data"]))
        assert (tmp_path / "journey.png").stat().st_size > 1000
        assert browser.errors == []
    finally:
        server.kill()
        assert stop(engine) == 0
