"""The symbol page and the dashboard in a real browser at a phone's size: the chart draws its
candles on a canvas with the user's rule levels and alert markers and stays live; the
dashboard shows the stale-feed banner and follows a symbol added through htmx. Nothing
breaks the CSP. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import base64
import os
import time
from pathlib import Path

import orjson
import pytest
import redis

from proto import keys
from proto.events import Tick, quote_json
from proto.rules import Rule
from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import add_alert, session_cookie, set_quote
from tests.web.server import WebServer, wait_for
from tests.web.test_symbols import market, store_rule  # noqa: F401 - the fixture
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

MINUTE = 60_000
CSP_RECORDER = ("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")
CANVASES = ("Array.from(document.querySelectorAll('#chart canvas'))"
            ".filter(c => c.width > 0 && c.height > 0).length")


def screenshot(browser: Browser, path: Path) -> None:
    shot = browser.call("Page.captureScreenshot", format="png")
    path.write_bytes(base64.b64decode(shot["data"]))


def open_as_phone(browser: Browser, url: str, cookie: str) -> None:
    browser.call("Emulation.setDeviceMetricsOverride", width=390, height=844,
                 deviceScaleFactor=1, mobile=True)
    browser.call("Page.enable")
    browser.call("Page.addScriptToEvaluateOnNewDocument", source=CSP_RECORDER)
    browser.open(url, {COOKIE: cookie})


def test_symbol_page_and_dashboard_in_a_browser(
        redis_url: str, r: redis.Redis, users: dict[str, str], browser: Browser,
        market: int, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    store_rule(r, Rule(id="lvl", user="alice", symbol="NSE:INFY", kind="cross_above",
                       params={"level": 1510}))
    store_rule(r, Rule(id="chn", user="alice", symbol="NSE:INFY", kind="channel",
                       params={"low": 1470, "high": 1530}))
    store_rule(r, Rule(id="far", user="alice", symbol="NSE:INFY", kind="cross_above",
                       params={"level": 3000}))
    add_alert(r, "alice", "crossed", sym="NSE:INFY")
    r.hset(keys.INSTRUMENTS, "NSE:SBIN", "{}")
    server = WebServer(redis_url, tmp_path).start()
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])

        open_as_phone(browser, f"{server.url}/symbols/NSE:INFY", cookie)
        assert wait_for(lambda: browser.evaluate(
            "document.getElementById('chart')?.dataset.ready") == "1"), browser.errors
        assert browser.evaluate(CANVASES) >= 1
        assert browser.evaluate(
            "window.stormChart.series.priceLines().map(l => l.options().price)") == [
            1470, 1510, 1530, 3000]
        # The scale stretches from the candles (1487-1502) to the levels near them, not to
        # the one twice the price away.
        shown = browser.evaluate("window.stormChart.chart.priceScale('right').getVisibleRange()")
        assert shown["from"] <= 1470 and 1530 <= shown["to"] < 2000, shown
        assert browser.evaluate("window.stormChart.markers.markers().length") == 1
        assert browser.evaluate("window.stormChart.series.data().length") == 4
        assert wait_for(lambda: browser.evaluate(
            "document.getElementById('status').textContent") == "live")

        # A new minute's bar arrives with the next quote: a fifth candle, drawn live.
        nxt = market + MINUTE
        tick = Tick(sym="NSE:INFY", tok="1", src="sim", ltp=1512.0, vol=6000, ts=nxt + 1000,
                    rx=0, pc=1480.0)
        r.hset(keys.QUOTES, "NSE:INFY", quote_json(tick, [nxt, 1501.0, 1512.0, 1500.0, 1512.0, 9]))
        assert wait_for(lambda: browser.evaluate("window.stormChart.series.data().length") == 5)
        assert browser.evaluate("document.getElementById('sym-ltp').textContent") == "1,512.00"
        add_alert(r, "alice", "again", sym="NSE:INFY")
        add_alert(r, "bob", "not alice's", sym="NSE:INFY")
        assert wait_for(lambda: browser.evaluate(
            "window.stormChart.markers.markers().length") == 2)
        time.sleep(0.5)  # let the chart paint before the picture
        screenshot(browser, tmp_path / "symbol.png")
        assert browser.evaluate("window.__csp") == []

        # The dashboard: ingest is alive but its feed has been reconnecting for a minute.
        r.set(keys.heartbeat("ingest-kite"), orjson.dumps({"at": time.time()}), ex=60)
        r.hset(keys.feed_state("kite"), mapping={
            "state": "reconnecting", "reason": "ws: closed by peer",
            "since": f"{time.time() - 60}"})
        open_as_phone(browser, f"{server.url}/", cookie)
        assert wait_for(lambda: browser.evaluate(
            "document.getElementById('status')?.textContent") == "live")
        banner = browser.evaluate(
            "(b => b && b.offsetHeight > 0 ? b.innerText : '')"
            "(document.querySelector('#feed-banner'))")
        assert "Kite feed is reconnecting" in banner and "prices may be stale" in banner

        # Add a symbol with the htmx form: the section is swapped and its quotes go live.
        browser.evaluate("document.getElementById('watch-symbol').value = 'sbin';"
                         "document.querySelector('form.watch-add').requestSubmit()")
        assert wait_for(lambda: browser.evaluate(
            "!!document.querySelector('#quotes tr[data-sym=\"NSE:SBIN\"]')"))
        assert browser.evaluate("location.pathname") == "/"  # swapped in place, no reload
        set_quote(r, "NSE:SBIN", 812.5, pc=800.0)
        assert wait_for(lambda: browser.evaluate(
            "document.querySelector('#quotes tr[data-sym=\"NSE:SBIN\"] .ltp').textContent")
            == "812.50")
        screenshot(browser, tmp_path / "dashboard.png")
        assert browser.evaluate("window.__csp") == []
        assert browser.errors == []
    finally:
        server.kill()
