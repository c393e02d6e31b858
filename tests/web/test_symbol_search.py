"""Symbol search: the ranking (pure), the web process's copy of the instrument master and
when it is reloaded (real Redis), ``GET /api/symbols`` and the ``<datalist>`` partial, and the
three symbol boxes wired to it."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
import redis
import redis.asyncio as aredis
from litestar.testing import TestClient

from proto import keys
from tests.web.conftest import login
from web.symbol_search import MAX_LIMIT, Catalogue, SymbolIndex, make_entry, options_html

HTML = {"accept": "text/html"}
HTMX = {"accept": "text/html", "hx-request": "true"}

MASTER = ["NSE:INFY", "BSE:INFY", "NSE:INFIBEAM", "NSE:NAUKRI", "NSE:TCS", "NSE:RELIANCE",
          "NSE:NIFTY 50", "NSE:NIFTY BANK", "NSE:NIFTY IT", "NFO:NIFTY24DECFUT",
          "NSE:LINFY", "NSE:BAJFINANCE", "NSE:M&M"]


def found(query: str, limit: int = 10, symbols: list[str] = MASTER) -> list[str]:
    return [e.symbol for e in Catalogue([make_entry(sym) for sym in symbols]).search(query, limit)]


# Ranking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["infy", "INFY", "Infy", "nse:inf", "NSE:INFY", " infy "])
def test_any_case_and_the_exchange_prefix_find_infy(query: str) -> None:
    assert "NSE:INFY" in found(query)


@pytest.mark.parametrize(("query", "expected"), [
    # Starts before inside (LINFY holds "infy"); then shorter; then alphabetical (BSE < NSE).
    ("infy", ["BSE:INFY", "NSE:INFY", "NSE:LINFY"]),
    ("inf", ["BSE:INFY", "NSE:INFY", "NSE:INFIBEAM", "NSE:LINFY"]),
    # With an exchange the whole symbol is searched.
    ("nse:inf", ["NSE:INFY", "NSE:INFIBEAM"]),
    ("bse:", ["BSE:INFY"]),
    ("e:inf", ["BSE:INFY", "NSE:INFY", "NSE:INFIBEAM"]),
    # Indices hold a space.
    ("nifty 5", ["NSE:NIFTY 50"]),
    ("NIFTY  b", ["NSE:NIFTY BANK"]),
    ("nifty", ["NSE:NIFTY 50", "NSE:NIFTY IT", "NSE:NIFTY BANK", "NFO:NIFTY24DECFUT"]),
    ("m&m", ["NSE:M&M"]),
    ("xyz", []),
])
def test_ranking(query: str, expected: list[str]) -> None:
    assert found(query) == expected


def test_the_exchange_alone_is_not_a_match_without_a_colon() -> None:
    """"nse" is looked for in trading symbols; it does not list every NSE symbol."""
    assert found("nse") == []


def test_a_start_match_beats_a_shorter_inside_match() -> None:
    assert found("tc", symbols=["NSE:ATC", "NSE:TCSLONGNAME"]) == ["NSE:TCSLONGNAME", "NSE:ATC"]


@pytest.mark.parametrize("query", ["", "   ", "\t"])
def test_an_empty_query_finds_nothing(query: str) -> None:
    assert found(query) == []


def test_limit_default_and_bounds() -> None:
    many = [f"NSE:A{i:04d}" for i in range(200)]
    assert len(found("a", symbols=many)) == 10
    assert found("a", 3, many) == ["NSE:A0000", "NSE:A0001", "NSE:A0002"]
    assert len(found("a", 500, many)) == MAX_LIMIT
    assert len(found("a", 0, many)) == 1


def test_the_limit_is_filled_from_inside_matches_in_rank_order() -> None:
    symbols = ["NSE:XBANKZZ", "NSE:BANKNIFTY", "NSE:ABANK", "NSE:BANKBARODA", "NSE:ZBANK"]
    assert found("bank", 3, symbols) == ["NSE:BANKNIFTY", "NSE:BANKBARODA", "NSE:ABANK"]
    assert found("bank", 10, symbols) == ["NSE:BANKNIFTY", "NSE:BANKBARODA", "NSE:ABANK",
                                          "NSE:ZBANK", "NSE:XBANKZZ"]


def test_the_same_as_a_plain_sort_over_a_large_master() -> None:
    """The bisection and the partial sorts agree with the rule written out naively."""
    symbols = [f"{ex}:{a}{b}{c}" for ex in ("NSE", "BSE") for a in "ABIN" for b in "FINY"
               for c in ("", "Y", "FY", "INFY", " 50")]
    for query in ("in", "infy", "nse:in", "fy", "y 5", "bse:n", "a"):
        q = query.lower()
        naive = []
        for sym in symbols:
            text = sym.lower() if ":" in q else sym.lower().split(":", 1)[1]
            if q in text:
                naive.append((not text.startswith(q), len(sym.split(":", 1)[1]), sym))
        assert found(query, 50, symbols) == [s for *_, s in sorted(naive)[:50]], query


def test_options_are_escaped_and_labelled_with_the_name() -> None:
    html = options_html([make_entry("NSE:M&M", "MAHINDRA & MAHINDRA"),
                         make_entry('NSE:"X"', ""), make_entry("NSE:TCS", "<b>TCS</b>")])
    assert html == ('<option value="NSE:M&amp;M">MAHINDRA &amp; MAHINDRA</option>'
                    '<option value="NSE:&#34;X&#34;"></option>'
                    '<option value="NSE:TCS">&lt;b&gt;TCS&lt;/b&gt;</option>')


def test_names_come_from_the_stored_records() -> None:
    catalogue = Catalogue.from_records({
        "NSE:INFY": orjson.dumps({"tok": "1", "src": "kite", "name": "INFOSYS"}).decode(),
        "NSE:TCS": "{}", "NSE:ODD": "not json", "NSE:LIST": "[1]"})
    assert [(e.symbol, e.name) for e in catalogue.search("s", 10)] == [
        ("NSE:TCS", ""), ("NSE:LIST", "")]
    assert catalogue.search("infy")[0].name == "INFOSYS"
    assert catalogue.search("odd")[0].name == ""


# The copy in the web process -------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def command_calls(r: redis.Redis) -> dict[str, int]:
    stats: Any = r.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def test_the_copy_is_reloaded_when_the_master_changes(redis_url: str, r: redis.Redis) -> None:
    r.hset(keys.INSTRUMENTS, mapping={"NSE:INFY": "{}", "NSE:TCS": "{}"})
    clock = Clock()
    index = SymbolIndex(reload_s=60, clock=clock)

    async def scenario() -> None:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            async def syms(query: str) -> list[str]:
                return [e.symbol for e in await index.search(ar, query)]

            assert await syms("infy") == ["NSE:INFY"]
            # Typing costs one HLEN a keystroke: the hash is never read again while unchanged.
            r.config_resetstat()
            clock.now += 5
            for typed in ("i", "in", "inf", "infy", "t", "tc", "tcs", "nse:t") * 5:
                await index.search(ar, typed)
            calls = command_calls(r)
            assert calls.get("hlen") == 40
            assert not {"hgetall", "hkeys", "hscan", "hvals"} & set(calls)
            assert await syms("") == []  # and an empty box asks nothing

            # A new symbol changes the length: found on the next keystroke.
            r.hset(keys.INSTRUMENTS, "NSE:INFIBEAM", "{}")
            assert await syms("inf") == ["NSE:INFY", "NSE:INFIBEAM"]
            # A listing replaced by another keeps the length: found at the periodic reload.
            clock.now += 5
            r.hdel(keys.INSTRUMENTS, "NSE:TCS")
            r.hset(keys.INSTRUMENTS, "NSE:TCSL", orjson.dumps({"name": "TCS LTD"}))
            assert await syms("tcs") == ["NSE:TCS"]
            clock.now += 60
            found_now = await index.search(ar, "tcs")
            assert [(e.symbol, e.name) for e in found_now] == [("NSE:TCSL", "TCS LTD")]
        finally:
            await ar.aclose()

    asyncio.run(scenario())


def test_a_burst_of_changes_reloads_at_most_once_a_second(redis_url: str,
                                                          r: redis.Redis) -> None:
    """While ingest stores the master chunk by chunk, keystrokes do not each re-read it."""
    r.hset(keys.INSTRUMENTS, "NSE:A0", "{}")
    clock = Clock()
    index = SymbolIndex(clock=clock)

    async def scenario() -> None:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            await index.search(ar, "a")
            r.config_resetstat()
            for i in range(1, 25):
                r.hset(keys.INSTRUMENTS, f"NSE:A{i}", "{}")
                clock.now = 1000.0 + i / 10
                await index.search(ar, "a")
            assert command_calls(r).get("hgetall") == 2  # at 1.0 s and 2.0 s
            clock.now += 1.0
            assert len(await index.search(ar, "a", 50)) == 25
        finally:
            await ar.aclose()

    asyncio.run(scenario())


def test_concurrent_searches_load_the_master_once(redis_url: str, r: redis.Redis) -> None:
    r.hset(keys.INSTRUMENTS, mapping={f"NSE:S{i}": "{}" for i in range(3000)})
    index = SymbolIndex()

    async def scenario() -> list[list[str]]:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        try:
            r.config_resetstat()
            results = await asyncio.gather(*(index.search(ar, "s1") for _ in range(20)))
            return [[e.symbol for e in found] for found in results]
        finally:
            await ar.aclose()

    results = asyncio.run(scenario())
    assert command_calls(r).get("hgetall") == 1
    assert all(found == results[0] for found in results)
    assert results[0][:3] == ["NSE:S1", "NSE:S10", "NSE:S11"]


def test_with_redis_down_the_loaded_copy_still_answers(redis_url: str, r: redis.Redis) -> None:
    r.hset(keys.INSTRUMENTS, "NSE:INFY", "{}")
    clock = Clock()
    index = SymbolIndex(clock=clock)

    async def scenario() -> None:
        ar = aredis.Redis.from_url(redis_url, decode_responses=True)
        down = aredis.Redis.from_url("redis://127.0.0.1:1/0", decode_responses=True)
        try:
            with pytest.raises(redis.ConnectionError):
                await SymbolIndex().search(down, "infy")  # nothing loaded yet: 503
            await index.search(ar, "infy")
            clock.now += 120
            assert [e.symbol for e in await index.search(down, "infy")] == ["NSE:INFY"]
        finally:
            await ar.aclose()
            await down.aclose()

    asyncio.run(scenario())


# Routes ----------------------------------------------------------------------------------


@pytest.fixture
def alice(client: TestClient[Any], r: redis.Redis, users: dict[str, str]) -> TestClient[Any]:
    r.hset(keys.INSTRUMENTS, mapping={
        sym: orjson.dumps({"tok": str(i), "src": "sim", "name": f"name of {sym}"})
        for i, sym in enumerate(MASTER, 1)})
    r.hset(keys.INSTRUMENTS, "NSE:ESC", orjson.dumps({"name": 'A "B" & <C>'}))
    assert login(client, "alice", users["alice"]).status_code == 303
    return client


@pytest.mark.parametrize(("query", "expected"), [
    ("infy", ["BSE:INFY", "NSE:INFY", "NSE:LINFY"]),
    ("INFY", ["BSE:INFY", "NSE:INFY", "NSE:LINFY"]),
    ("nse:inf", ["NSE:INFY", "NSE:INFIBEAM"]),
    ("nifty 5", ["NSE:NIFTY 50"]),
    ("", []),
    ("zzz", []),
])
def test_api_symbols(alice: TestClient[Any], query: str, expected: list[str]) -> None:
    response = alice.get("/api/symbols", params={"q": query})
    assert response.status_code == 200, response.text
    assert response.json() == expected


def test_api_symbols_without_q_and_with_a_limit(alice: TestClient[Any]) -> None:
    assert alice.get("/api/symbols").json() == []
    assert alice.get("/api/symbols", params={"q": "n", "limit": 2}).json() == [
        "NSE:NAUKRI", "NSE:NIFTY 50"]
    # 5 trading symbols start with N, 6 hold one (INFY twice, INFIBEAM, LINFY, BAJFINANCE,
    # RELIANCE).
    assert len(alice.get("/api/symbols", params={"q": "n", "limit": 50}).json()) == 11


@pytest.mark.parametrize(("params", "detail"), [
    ({"q": "x" * 65}, "q is 65 characters long; at most 64 allowed"),
    ({"q": "infy", "limit": 51}, "limit must be between 1 and 50"),
    ({"q": "infy", "limit": 0}, "limit must be between 1 and 50"),
])
def test_api_symbols_refuses_bad_input(alice: TestClient[Any], params: dict[str, Any],
                                       detail: str) -> None:
    response = alice.get("/api/symbols", params=params)
    assert response.status_code == 400
    assert response.json() == {"status": 400, "detail": detail}


def test_a_64_character_query_is_searched(alice: TestClient[Any]) -> None:
    assert alice.get("/api/symbols", params={"q": "x" * 64}).status_code == 200


def test_the_partial_offers_options_for_a_datalist(alice: TestClient[Any]) -> None:
    response = alice.get("/symbol-options", params={"symbol": "nse:inf"}, headers=HTMX)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == ('<option value="NSE:INFY">name of NSE:INFY</option>'
                             '<option value="NSE:INFIBEAM">name of NSE:INFIBEAM</option>')
    escaped = alice.get("/symbol-options", params={"symbol": "esc"}, headers=HTMX)
    assert escaped.text == '<option value="NSE:ESC">A &#34;B&#34; &amp; &lt;C&gt;</option>'
    for nothing in ({}, {"symbol": ""}, {"symbol": "x" * 65}):
        empty = alice.get("/symbol-options", params=nothing, headers=HTMX)
        assert (empty.status_code, empty.text) == (200, "")


def test_signed_out_partial_sends_htmx_to_the_login_page(client: TestClient[Any]) -> None:
    response = client.get("/symbol-options", params={"symbol": "infy"}, headers=HTMX)
    assert response.status_code == 401 and response.headers["hx-redirect"] == "/login"


@pytest.mark.parametrize(("path", "datalist"), [
    ("/rules/new", "symbol-options"), ("/", "watch-symbols"), ("/alerts", "symbols")])
def test_each_symbol_box_asks_for_suggestions(alice: TestClient[Any], path: str,
                                              datalist: str) -> None:
    page = alice.get(path, headers=HTML).text
    box = next(tag for tag in page.split("<input")[1:] if f'list="{datalist}"' in tag)
    for attribute in ('name="symbol"', 'hx-get="/symbol-options"',
                      'hx-trigger="input changed delay:150ms"', f'hx-target="#{datalist}"',
                      'hx-swap="innerHTML"'):
        assert attribute in box, (path, attribute)
    assert f'<datalist id="{datalist}">' in page
