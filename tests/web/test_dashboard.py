"""The dashboard: each user's watchlist (add, remove, validation, with and without htmx),
prices with sparklines from the engine's bars, the feed banner, and live quotes limited to
the watched symbols on a real server's event stream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from litestar.testing import TestClient

from proto import keys
from tests.web.conftest import csrf_token, login, set_quote
from tests.web.server import WebServer
from tests.web.sse import next_event, stream
from web.feeds import Problem, feed_problems
from web.watchlist import DEFAULT_WATCHLIST, MAX_SYMBOLS, WatchlistError, normalise, spark_points

HTML = {"accept": "text/html"}
HTMX = {"hx-request": "true", "accept": "text/html"}
INSTRUMENTS = ("NSE:INFY", "NSE:TCS", "NSE:RELIANCE", "NSE:NIFTY 50", "NSE:SBIN", "BSE:SBIN")


@pytest.fixture
def instruments(r: redis.Redis) -> None:
    r.hset(keys.INSTRUMENTS, mapping={sym: '{"tok": "1", "src": "sim"}' for sym in INSTRUMENTS})


def add_bar(r: redis.Redis, sym: str, start_ms: int, close: float) -> None:
    r.xadd(keys.bars(sym), {"o": close, "h": close + 1, "l": close - 1, "c": close, "v": 10},
           id=f"{start_ms}-0")


def form(client: TestClient[Any], path: str, symbol: str,
         headers: dict[str, str] | None = None) -> httpx.Response:
    token = csrf_token(client.get("/", headers=HTML).text)
    return client.post(path, data={"symbol": symbol, "_csrf_token": token},
                       headers=headers or HTML, follow_redirects=False)


def watched(page: str) -> list[str]:
    section = page[page.index('id="watchlist"'):]
    section = section[:section.index("</section>")]
    return [chunk.split('"', 1)[0] for chunk in section.split('<tr data-sym="')[1:]]


@pytest.mark.parametrize(("typed", "sym"), [
    ("NSE:INFY", "NSE:INFY"), (" infy ", "NSE:INFY"), ("bse:sbin", "BSE:SBIN"),
    ("nse:nifty  50", "NSE:NIFTY 50"), ("NSE : TCS", "NSE:TCS"),
])
def test_symbols_are_normalised(typed: str, sym: str) -> None:
    assert normalise(typed) == sym


@pytest.mark.parametrize("typed", ["", "   ", "NSE:", ":INFY", "1NSE:X", "A:B:C", "X" * 70])
def test_non_symbols_are_refused(typed: str) -> None:
    with pytest.raises(WatchlistError):
        normalise(typed)


def test_spark_points_span_the_box() -> None:
    assert spark_points([5.0]) == ""
    assert spark_points([1.0, 3.0, 2.0]) == "0.0,23.0 50.0,1.0 100.0,12.0"
    assert spark_points([2.0, 2.0]) == "0.0,23.0 100.0,23.0"


def test_new_users_see_the_default_list_with_prices_and_sparklines(
        client: TestClient[Any], users: dict, r: redis.Redis) -> None:
    now_min = int(time.time()) // 60 * 60_000
    for i, close in enumerate([1490.0, 1495.0, 1499.0]):
        add_bar(r, "NSE:INFY", now_min - (3 - i) * 60_000, close)
    set_quote(r, "NSE:INFY", 1502.25, pc=1480.0)
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML).text
    assert watched(page) == list(DEFAULT_WATCHLIST)
    row = page[page.index('<tr data-sym="NSE:INFY"'):]
    row = row[:row.index("</tr>")]
    assert "1,502.25" in row and "+1.50%" in row and 'href="/symbols/NSE:INFY"' in row
    assert 'data-spark="[1490.0,1495.0,1499.0]"' in row.replace("&#34;", '"')
    assert '<polyline points="0.0,23.0 50.0,10.8 100.0,1.0"/>' in row
    # A watched symbol with no price yet still has its row.
    assert 'data-sym="NSE:TCS"' in page


def test_add_and_remove_without_script(client: TestClient[Any], users: dict, r: redis.Redis,
                                       instruments: None) -> None:
    login(client, "alice", users["alice"])
    added = form(client, "/watchlist", "sbin")
    assert added.status_code == 303 and added.headers["location"] == "/"
    assert orjson.loads(r.get(keys.user_watchlist("alice"))) == [*DEFAULT_WATCHLIST, "NSE:SBIN"]
    assert form(client, "/watchlist", "NSE:SBIN").status_code == 303  # already there: no change
    assert watched(client.get("/", headers=HTML).text) == [*DEFAULT_WATCHLIST, "NSE:SBIN"]

    for sym in [*DEFAULT_WATCHLIST, "NSE:SBIN"]:
        assert form(client, "/watchlist/remove", sym).status_code == 303
    assert r.get(keys.user_watchlist("alice")) == "[]"  # emptied, not back to the default
    page = client.get("/", headers=HTML).text
    assert watched(page) == [] and "Your watchlist is empty" in page


def test_refused_symbol_shows_the_reason(client: TestClient[Any], users: dict, r: redis.Redis,
                                         instruments: None) -> None:
    login(client, "alice", users["alice"])
    refused = form(client, "/watchlist", "NSE:NOPE")
    assert refused.status_code == 422
    assert "unknown symbol &#39;NSE:NOPE&#39;" in refused.text
    assert 'value="NSE:NOPE"' in refused.text
    assert "Alerts" in refused.text  # the whole dashboard, for a browser without script
    assert not r.exists(keys.user_watchlist("alice"))
    bad = form(client, "/watchlist", "<script>", headers=HTMX)
    assert bad.status_code == 422 and "&lt;script&gt;" in bad.text and "<script>" not in bad.text


def test_htmx_gets_the_section_alone(client: TestClient[Any], users: dict, r: redis.Redis,
                                     instruments: None) -> None:
    login(client, "alice", users["alice"])
    added = form(client, "/watchlist", "NSE:SBIN", headers=HTMX)
    assert added.status_code == 200
    assert added.text.lstrip().startswith('<section class="card" id="watchlist"')
    assert "<html" not in added.text and watched(added.text)[-1] == "NSE:SBIN"
    refused = form(client, "/watchlist", "NSE:NOPE", headers=HTMX)
    assert refused.status_code == 422 and 'role="alert"' in refused.text
    assert watched(refused.text)[-1] == "NSE:SBIN"


def test_watchlists_are_per_user_and_bounded(client: TestClient[Any], users: dict,
                                             r: redis.Redis, instruments: None) -> None:
    r.set(keys.user_watchlist("bob"), orjson.dumps([f"NSE:S{i}" for i in range(MAX_SYMBOLS)]))
    login(client, "alice", users["alice"])
    assert form(client, "/watchlist", "NSE:SBIN").status_code == 303
    assert not r.exists(keys.user_watchlist("root"))
    assert "NSE:SBIN" not in orjson.loads(r.get(keys.user_watchlist("bob")))

    client.cookies.clear()
    login(client, "bob", users["bob"])
    full = form(client, "/watchlist", "NSE:SBIN", headers=HTMX)
    assert full.status_code == 422 and f"at most {MAX_SYMBOLS} symbols" in full.text


def test_watchlist_forms_need_sign_in_and_csrf(client: TestClient[Any], users: dict,
                                               instruments: None) -> None:
    assert client.post("/watchlist", data={"symbol": "NSE:SBIN"}, headers=HTML,
                       follow_redirects=False).status_code in (302, 303, 401, 403)
    login(client, "alice", users["alice"])
    no_token = client.post("/watchlist", data={"symbol": "NSE:SBIN"}, headers=HTML,
                           follow_redirects=False)
    assert no_token.status_code == 403


def test_no_instrument_master_is_explained(client: TestClient[Any], users: dict) -> None:
    login(client, "alice", users["alice"])
    refused = form(client, "/watchlist", "NSE:INFY", headers=HTMX)
    assert refused.status_code == 422 and "no instrument list loaded yet" in refused.text


# Feed banner ------------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("states", "beats", "expected"), [
    ({}, {}, [("stale", "")]),
    ({"kite": {"state": "stopped", "since": str(NOW - 99)}}, {}, [("stale", "")]),
    ({"kite": {"state": "connected", "since": str(NOW - 99)}}, {"kite": NOW - 1}, []),
    ({"kite": {"state": "reconnecting", "since": str(NOW - 3)}}, {"kite": NOW - 1}, []),
    ({"kite": {"state": "reconnecting", "since": str(NOW - 30), "reason": "ws: timeout"}},
     {"kite": NOW - 1}, [("stale", "kite")]),
    ({"kite": {"state": "connected"}}, {"kite": NOW - 60}, [("stale", "kite")]),
    ({"kite": {"state": "needs_login", "reason": "TokenException"}}, {"kite": NOW - 1},
     [("login", "kite")]),
    ({"kite": {"state": "needs_login"}}, {}, [("login", "kite")]),
    # An old feed's leftover state does not matter while another feed is live.
    ({"sim": {"state": "stopped"}, "upstox": {"state": "connected"}}, {"upstox": NOW - 1}, []),
])
def test_feed_problems(states: dict, beats: dict, expected: list[tuple[str, str]]) -> None:
    problems = feed_problems(states, beats, NOW)
    assert [(p.level, p.feed) for p in problems] == expected
    assert all(isinstance(p, Problem) and p.text for p in problems)


def test_banner_on_the_dashboard_and_alone(client: TestClient[Any], users: dict,
                                           r: redis.Redis) -> None:
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML).text
    assert 'data-level="stale"' in page and "No market feed is running" in page

    r.set(keys.heartbeat("ingest-kite"), orjson.dumps({"at": time.time()}), ex=15)
    r.hset(keys.feed_state("kite"), mapping={"state": "needs_login", "since": f"{time.time()}",
                                             "reason": "kite: token expired"})
    banner = client.get("/feeds/banner", headers=HTMX)
    assert banner.status_code == 200 and 'data-level="login"' in banner.text
    assert "Kite needs the daily broker login" in banner.text and "token expired" in banner.text

    r.hset(keys.feed_state("kite"), mapping={"state": "connected", "reason": "2 connection(s) up"})
    assert 'data-level="ok"' in client.get("/", headers=HTML).text


def test_pages_load_htmx_under_the_csp(client: TestClient[Any], users: dict) -> None:
    login(client, "alice", users["alice"])
    page = client.get("/", headers=HTML)
    assert "/static/vendor/htmx/htmx.min.js" in page.text
    assert '"includeIndicatorStyles":false' in page.text  # no injected <style> for the CSP
    assert "x-csrftoken" in page.text
    csp = page.headers["content-security-policy"]
    assert "'unsafe-inline'" not in csp and "'unsafe-eval'" not in csp
    assert "<script>" not in page.text  # no inline script


# Live quotes of the watched symbols only ---------------------------------------------------


def test_stream_sends_only_the_quotes_asked_for(redis_url: str, r: redis.Redis, users: dict,
                                                tmp_path: Path) -> None:
    set_quote(r, "NSE:INFY", 1500.0, pc=1490.0)
    set_quote(r, "NSE:TCS", 3900.0)
    server = WebServer(redis_url, tmp_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=5) as alice:
            login(alice, "alice", users["alice"])
            with stream(alice, params={"syms": "NSE:INFY,NSE:NIFTY 50"}) as events:
                first = orjson.loads(next_event(events, "quotes").data)
                assert [q["sym"] for q in first] == ["NSE:INFY"]
                set_quote(r, "NSE:TCS", 3901.0)
                r.hset(keys.QUOTES, "NSE:NIFTY 50", orjson.dumps(
                    {"ltp": 22000.0, "ts": 1, "vol": 0, "bar": [60_000, 1.0, 2.0, 0.5, 1.5, 7]}))
                second = orjson.loads(next_event(events, "quotes").data)
                assert [q["sym"] for q in second] == ["NSE:NIFTY 50"]
                assert second[0]["bar"] == [60_000, 1.0, 2.0, 0.5, 1.5, 7]
    finally:
        server.kill()
