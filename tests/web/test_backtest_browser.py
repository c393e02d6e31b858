"""In a real browser: a rule's test form posted by a click, the job's page waiting for a
worker, then (htmx polling the status part, no reload) the result once a real backtest
worker has run it. (Debian's chromium over the DevTools protocol; skipped without it.)"""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import orjson
import pytest
import redis

from proto import keys, store
from proto.rules import parse_rule
from tests.engine.test_backtest import replayed, walk, write_ticks
from tests.helpers import spawn, stop
from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import session_cookie
from tests.web.server import WebServer, wait_for
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

SYM = "NSE:INFY"
RULE = {"id": "a-cross", "symbol": SYM, "kind": "cross_above", "params": {"level": 1500}}
STATE = "(document.getElementById('backtest') || {dataset: {}}).dataset.state || ''"


def test_the_result_replaces_the_waiting_page(redis_url: str, r: redis.Redis,
                                              users: dict[str, str], browser: Browser,
                                              tmp_path: Path) -> None:
    r.hset(keys.INSTRUMENTS, SYM, orjson.dumps({"tok": "1", "src": "test"}))
    store.add_rule(r, parse_rule(RULE, user="alice"))
    ticks = walk(200, int(time.time() * 1000) - 600_000)
    write_ticks(r, ticks, keys.ticks(keys.shard_for(SYM, 2)))
    expected = replayed(RULE, [t for t in ticks if t.sym == SYM])
    server = WebServer(redis_url, tmp_path).start()
    worker = None
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])
        browser.open(f"{server.url}/rules/a-cross/test", {COOKIE: cookie})
        assert wait_for(lambda: browser.evaluate("!!document.getElementById('bt-run')"))
        browser.evaluate("document.getElementById('days').value = '1';"
                         "document.getElementById('bt-run').click()")
        assert wait_for(lambda: browser.evaluate(STATE) == "queued", timeout_s=10)
        assert browser.evaluate("location.pathname").startswith("/backtests/")
        browser.evaluate("window.notReloaded = true")
        worker = spawn(["engine.backtest", "--shards", "2"], redis_url,
                       tmp_path / "backtest.log", env={"STORMALERT_STATS_INTERVAL_S": "3600"})
        assert wait_for(lambda: browser.evaluate(STATE) == "done", timeout_s=30), (
            browser.evaluate(STATE))
        assert browser.evaluate("window.notReloaded === true")  # swapped in by htmx
        count = browser.evaluate("document.getElementById('bt-count').innerText")
        assert count.startswith(f"{len(expected)} firing")
        rows = browser.evaluate("document.querySelectorAll('#bt-firings tbody tr').length")
        assert rows == len(expected)
        shot = browser.call("Page.captureScreenshot", format="png")
        (tmp_path / "backtest.png").write_bytes(base64.b64decode(shot["data"]))
        assert browser.errors == []
    finally:
        server.kill()
        if worker is not None:
            assert stop(worker) == 0, (tmp_path / "backtest.log").read_text()
