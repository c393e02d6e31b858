"""The symbol page and /api/bars: the engine's stored bars and the open one, the user's own
rule levels and alert markers, unknown and malformed symbols."""

from __future__ import annotations

import html
import time
from typing import Any

import orjson
import pytest
import redis
from litestar.testing import TestClient

from proto import keys
from proto.events import Tick, quote_json
from proto.rules import Rule
from tests.web.conftest import add_alert, login
from web.symbols import rule_levels

HTML = {"accept": "text/html"}
MINUTE = 60_000


@pytest.fixture
def market(r: redis.Redis) -> int:
    """NSE:INFY and NSE:NIFTY 50 listed; three closed INFY bars and an open one in its quote.
    Returns the open bar's start."""
    r.hset(keys.INSTRUMENTS, mapping={"NSE:INFY": "{}", "NSE:NIFTY 50": "{}", "NSE:TCS": "{}"})
    open_start = int(time.time() * 1000) // MINUTE * MINUTE
    for i, close in enumerate([1490.0, 1495.0, 1499.0]):
        start = open_start - (3 - i) * MINUTE
        r.xadd(keys.bars("NSE:INFY"), {"o": close - 2, "h": close + 1, "l": close - 3,
                                       "c": close, "v": 100 + i}, id=f"{start}-0")
    tick = Tick(sym="NSE:INFY", tok="1", src="sim", ltp=1501.0, vol=5000,
                ts=open_start + 5000, rx=0, pc=1480.0)
    r.hset(keys.QUOTES, "NSE:INFY",
           quote_json(tick, [open_start, 1499.0, 1502.0, 1498.5, 1501.0, 40]))
    return open_start


def store_rule(r: redis.Redis, rule: Rule) -> None:
    r.hset(keys.RULES, rule.id, rule.to_json())
    r.sadd(keys.user_rules(rule.user), rule.id)


def chart_data(page: str) -> dict[str, Any]:
    raw = page.split('data-chart="', 1)[1].split('"', 1)[0]
    return dict(orjson.loads(html.unescape(raw)))


def test_rule_levels() -> None:
    rules = [
        Rule(id="a", user="u", symbol="NSE:INFY", kind="cross_above", params={"level": 1510}),
        Rule(id="b", user="u", symbol="NSE:INFY", kind="channel",
             params={"low": 1480, "high": 1520}, active=False),
        Rule(id="c", user="u", symbol="NSE:INFY", kind="window_pct",
             params={"pct": 1, "window_s": 60}),
    ]
    assert [(line["price"], line["title"], line["rule"], line["active"])
            for line in rule_levels(rules)] == [
        (1480.0, "channel low", "b", False), (1510.0, "cross above", "a", True),
        (1520.0, "channel high", "b", False)]


def test_api_bars(client: TestClient[Any], users: dict, market: int) -> None:
    assert client.get("/api/bars/NSE:INFY").status_code == 401
    login(client, "alice", users["alice"])
    body = client.get("/api/bars/NSE:INFY", params={"minutes": 2}).json()
    assert body["symbol"] == "NSE:INFY"
    assert body["bars"] == [[market - 2 * MINUTE, 1493.0, 1496.0, 1492.0, 1495.0, 101],
                            [market - MINUTE, 1497.0, 1500.0, 1496.0, 1499.0, 102]]
    assert body["open"] == [market, 1499.0, 1502.0, 1498.5, 1501.0, 40]
    assert len(client.get("/api/bars/NSE:INFY").json()["bars"]) == 3
    empty = client.get("/api/bars/NSE:NIFTY%2050").json()
    assert empty == {"symbol": "NSE:NIFTY 50", "bars": [], "open": None}


@pytest.mark.parametrize(("path", "status"), [
    ("/api/bars/NSE:INFY?minutes=0", 400),
    (f"/api/bars/NSE:INFY?minutes={keys.BARS_MAXLEN + 1}", 400),
    ("/api/bars/NSE:INFY?minutes=x", 400),
    ("/api/bars/NSE:NOPE", 404),
    ("/api/bars/not-a-symbol", 404),
    ("/symbols/NSE:NOPE", 404),
    ("/symbols/%3Cscript%3E", 404),
])
def test_bad_requests_get_a_clear_error(client: TestClient[Any], users: dict, market: int,
                                        path: str, status: int) -> None:
    login(client, "alice", users["alice"])
    response = client.get(path, headers=HTML)  # a browser's error page: nothing unescaped
    assert response.status_code == status
    assert "<script>" not in response.text
    assert client.get(path).json()["status"] == status  # scripts get JSON


def test_page_draws_own_levels_and_alerts(client: TestClient[Any], users: dict,
                                          r: redis.Redis, market: int) -> None:
    store_rule(r, Rule(id="a1", user="alice", symbol="NSE:INFY", kind="above",
                       params={"level": 1510}))
    store_rule(r, Rule(id="a2", user="alice", symbol="NSE:TCS", kind="above",
                       params={"level": 3900}))
    store_rule(r, Rule(id="b1", user="bob", symbol="NSE:INFY", kind="below",
                       params={"level": 1400}))
    add_alert(r, "alice", "mine", sym="NSE:INFY")
    add_alert(r, "alice", "other symbol", sym="NSE:TCS")
    add_alert(r, "bob", "not mine", sym="NSE:INFY")
    login(client, "alice", users["alice"])
    page = client.get("/symbols/NSE:INFY", headers=HTML)
    assert page.status_code == 200
    assert "lightweight-charts.standalone.production.js" in page.text
    assert "tradingview.com" in page.text  # the licence's attribution
    data = chart_data(page.text)
    assert data["symbol"] == "NSE:INFY" and data["user"] == "alice"
    assert [line["price"] for line in data["levels"]] == [1510.0]
    assert [m["kind"] for m in data["markers"]] == ["cross_above"] and len(data["markers"]) == 1
    assert len(data["bars"]) == 3 and data["open"][0] == market
    assert "1,501.00" in page.text and "+1.42%" in page.text
    assert "syms=NSE%3AINFY" in page.text


def test_symbol_with_a_space_and_no_data(client: TestClient[Any], users: dict,
                                         market: int) -> None:
    login(client, "alice", users["alice"])
    page = client.get("/symbols/NSE:NIFTY%2050", headers=HTML)
    assert page.status_code == 200 and "<h1>NSE:NIFTY 50</h1>" in page.text
    data = chart_data(page.text)
    assert data["bars"] == [] and data["open"] is None and data["levels"] == []
