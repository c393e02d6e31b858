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

from proto import keys, store
from proto.rules import parse_rule
from tests.web.conftest import login
from web.symbol_search import MAX_LIMIT, Catalogue, SymbolIndex, make_entry, options_html

HTML = {"accept": "text/html"}
HTMX = {"accept": "text/html", "hx-request": "true"}

MASTER = ["NSE:INFY", "BSE:INFY", "NSE:INFIBEAM", "NSE:NAUKRI", "NSE:TCS", "NSE:RELIANCE",
          "NSE:NIFTY 50", "NSE:NIFTY BANK", "NSE:NIFTY IT", "NFO:NIFTY24DECFUT",
          "NSE:LINFY", "NSE:BAJFINANCE", "NSE:M&M"]
# Names as the master has them (NSE:LINFY is made up and has none).
NAMES = {"NSE:INFY": "INFOSYS", "BSE:INFY": "INFOSYS", "NSE:INFIBEAM": "INFIBEAM AVENUES",
         "NSE:NAUKRI": "INFO EDGE (INDIA)", "NSE:TCS": "TATA CONSULTANCY SERV LT",
         "NSE:RELIANCE": "RELIANCE INDUSTRIES", "NSE:NIFTY 50": "NIFTY 50",
         "NSE:NIFTY BANK": "NIFTY BANK", "NSE:NIFTY IT": "NIFTY IT", "NFO:NIFTY24DECFUT": "NIFTY",
         "NSE:BAJFINANCE": "BAJAJ FINANCE", "NSE:M&M": "MAHINDRA & MAHINDRA"}
# Names matter here: several banks, a trading symbol that is a name run together.
BANKS = {"NSE:INFY": "INFOSYS LIMITED", "BSE:INFY": "INFOSYS LIMITED",
         "NSE:SBIN": "STATE BANK OF INDIA", "NSE:TATAMOTORS": "TATA MOTORS LIMITED",
         "NSE:TATAMTRDVR": "TATA MOTORS DVR", "NSE:TCS": "TATA CONSULTANCY SERV LT",
         "NSE:BANKBARODA": "BANK OF BARODA", "NSE:HDFCBANK": "HDFC BANK LTD",
         "NSE:PNB": "PUNJAB NATIONAL BANK", "NSE:UNIONBANK": "UNION BANK OF INDIA",
         "NSE:IOB": "INDIAN OVERSEAS BANK", "NSE:KARURVYSYA": "KARUR VYSYA BANK",
         "NSE:LT": "LARSEN & TOUBRO LTD.", "NSE:BAJAJ-AUTO": "BAJAJ AUTO", "NSE:BSE": "BSE"}


def found(query: str, limit: int = 10, symbols: list[str] = MASTER) -> list[str]:
    return [e.symbol for e in Catalogue([make_entry(sym) for sym in symbols]).search(query, limit)]


def named(query: str, limit: int = 10, names: dict[str, str] = BANKS) -> list[str]:
    catalogue = Catalogue([make_entry(sym, name) for sym, name in names.items()])
    return [e.symbol for e in catalogue.search(query, limit)]


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


# An exchange alone lists its symbols, best ranked first (shorter, then alphabetical).
NSE_RANKED = ["NSE:M&M", "NSE:TCS", "NSE:INFY", "NSE:LINFY", "NSE:NAUKRI", "NSE:INFIBEAM",
              "NSE:NIFTY 50", "NSE:NIFTY IT", "NSE:RELIANCE", "NSE:BAJFINANCE", "NSE:NIFTY BANK"]


@pytest.mark.parametrize("query", ["nse:", "NSE:", " Nse: ", "NSE :", "nse"])
def test_an_exchange_alone_lists_its_symbols_best_first(query: str) -> None:
    assert found(query, 50) == NSE_RANKED
    assert found(query, 3) == NSE_RANKED[:3]


@pytest.mark.parametrize(("query", "expected"), [
    ("bse:", ["BSE:INFY"]), ("bse", ["BSE:INFY"]), ("nfo", ["NFO:NIFTY24DECFUT"]),
    ("mcx:", []), ("mcx", []), (":", []),
    # No exchange before the colon: the whole symbol holds ":infy".
    (":infy", ["BSE:INFY", "NSE:INFY"]),
])
def test_other_exchanges_alone(query: str, expected: list[str]) -> None:
    assert found(query) == expected


def test_a_bare_exchange_held_by_a_trading_symbol_finds_that_symbol() -> None:
    """BSE Ltd trades on NSE as NSE:BSE: "bse" finds it, "bse:" lists the BSE exchange."""
    symbols = [*MASTER, "NSE:BSE"]
    assert found("bse", symbols=symbols) == ["NSE:BSE"]
    assert found("bse:", symbols=symbols) == ["BSE:INFY"]


def test_spaces_around_the_colon_are_dropped() -> None:
    assert found("nse : inf") == ["NSE:INFY", "NSE:INFIBEAM"]


# Names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("infosys", ["BSE:INFY", "NSE:INFY"]),
    ("InfoSys Lim", ["BSE:INFY", "NSE:INFY"]),
    ("state bank", ["NSE:SBIN"]),
    ("STATE  BANK OF", ["NSE:SBIN"]),
    # The trading symbol with the query's spaces removed, then the other name (no twice).
    ("tata motors", ["NSE:TATAMOTORS", "NSE:TATAMTRDVR"]),
    ("tata", ["NSE:TATAMOTORS", "NSE:TATAMTRDVR", "NSE:TCS"]),
    # Trading symbols (at the start, then inside) before names, however short; BANKBARODA's
    # name starts with "bank" too but it comes once. Names: a word starting with "bank".
    ("bank", ["NSE:BANKBARODA", "NSE:HDFCBANK", "NSE:UNIONBANK",
              "NSE:IOB", "NSE:PNB", "NSE:SBIN", "NSE:KARURVYSYA"]),
    # A name's start and a later word's start rank alike.
    ("india", ["NSE:IOB", "NSE:SBIN", "NSE:UNIONBANK"]),
    ("bank of india", ["NSE:SBIN", "NSE:UNIONBANK"]),
    # Words follow punctuation too.
    ("toubro", ["NSE:LT"]),
    ("auto", ["NSE:BAJAJ-AUTO"]),
    # Inside a name.
    ("osys", ["BSE:INFY", "NSE:INFY"]),
    # With the exchange, that exchange's names only.
    ("nse:infosys", ["NSE:INFY"]),
    ("bse:infosys", ["BSE:INFY"]),
    ("bse:state bank", []),
    (":infosys", ["BSE:INFY", "NSE:INFY"]),  # an empty exchange: any
    ("nse:bank of", ["NSE:SBIN", "NSE:UNIONBANK", "NSE:BANKBARODA"]),
    ("reliance", []),
])
def test_names_are_searched_after_symbols(query: str, expected: list[str]) -> None:
    assert named(query) == expected


def test_a_word_start_beats_a_shorter_match_inside_a_name() -> None:
    names = {"NSE:AA": "URBAN COMPANY", "NSE:ZZZZZ": "THE BANARAS BEADS"}
    assert named("ban", names=names) == ["NSE:ZZZZZ", "NSE:AA"]


def test_the_limit_is_filled_across_symbols_and_names() -> None:
    assert named("bank", 2) == ["NSE:BANKBARODA", "NSE:HDFCBANK"]
    assert named("bank", 4) == ["NSE:BANKBARODA", "NSE:HDFCBANK", "NSE:UNIONBANK", "NSE:IOB"]


def test_names_match_the_same_as_a_plain_sort_over_a_large_master() -> None:
    """The bisections, the joined texts and the tiers agree with the rule written out
    naively, names included."""
    words = ["TATA", "STATE", "BANK", "OF", "INDIA", "MOTORS", "IN", "FIN"]
    names = {f"{ex}:{a[:3]}{b[:2]}{i}": f"{a} {b}" if i % 3 else f"{b}-{a}"
             for i, (ex, a, b) in enumerate((ex, a, b) for ex in ("NSE", "BSE")
                                            for a in words for b in words)}
    for query in ("ta", "bank", "in", "of in", "tata ba", "nse:in", "bse:bank", "a", "ia"):
        q = query.lower()
        naive = []
        for sym, name in names.items():
            exchange, _, trading = sym.lower().partition(":")
            if ":" in q:
                text, name_q = sym.lower(), q.partition(":")[2]
                same = exchange == q.partition(":")[0]
            else:
                text, name_q, same = trading, q, True
            spaceless = q.replace(" ", "")
            lowered = name.lower()
            at_word = [lowered[i:] for i in range(len(lowered))
                       if lowered[i].isalnum() and (i == 0 or not lowered[i - 1].isalnum())]
            if text.startswith(q):
                tier = 0
            elif ":" not in q and text.startswith(spaceless):
                tier = 1
            elif q in text:
                tier = 2
            elif ":" not in q and spaceless in text:
                tier = 3
            elif same and any(tail.startswith(name_q) for tail in at_word):
                tier = 4
            elif same and name_q in lowered:
                tier = 5
            else:
                continue
            naive.append((tier, len(trading), sym))
        assert named(query, 50, names) == [s for *_, s in sorted(naive)[:50]], query


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
        ("NSE:TCS", ""), ("NSE:LIST", ""), ("NSE:INFY", "INFOSYS")]
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
            # The periodic reload of an unchanged master re-reads it but builds nothing.
            built = await index.catalogue(ar)
            r.config_resetstat()
            clock.now += 60
            assert await index.catalogue(ar) is built
            assert command_calls(r).get("hgetall") == 1
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
        sym: orjson.dumps({"tok": str(i), "src": "sim", "name": NAMES.get(sym, "")})
        for i, sym in enumerate(MASTER, 1)})
    r.hset(keys.INSTRUMENTS, "NSE:ESC", orjson.dumps({"name": 'A "B" & <C>'}))
    assert login(client, "alice", users["alice"]).status_code == 303
    return client


@pytest.mark.parametrize(("query", "expected"), [
    ("infy", ["BSE:INFY", "NSE:INFY", "NSE:LINFY"]),
    ("INFY", ["BSE:INFY", "NSE:INFY", "NSE:LINFY"]),
    # NAUKRI's name, INFO EDGE (INDIA), has a word starting with "inf".
    ("nse:inf", ["NSE:INFY", "NSE:INFIBEAM", "NSE:NAUKRI"]),
    ("nifty 5", ["NSE:NIFTY 50"]),
    ("infosys", ["BSE:INFY", "NSE:INFY"]),
    ("nse:", ["NSE:ESC", *NSE_RANKED[:9]]),
    ("nfo", ["NFO:NIFTY24DECFUT"]),
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
    # RELIANCE); then names: TCS's and M&M's hold one.
    assert alice.get("/api/symbols", params={"q": "n", "limit": 50}).json()[11:] == [
        "NSE:M&M", "NSE:TCS"]


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
    assert response.text == ('<option value="NSE:INFY">INFOSYS</option>'
                             '<option value="NSE:INFIBEAM">INFIBEAM AVENUES</option>'
                             '<option value="NSE:NAUKRI">INFO EDGE (INDIA)</option>')
    escaped = alice.get("/symbol-options", params={"symbol": "esc"}, headers=HTMX)
    assert escaped.text == '<option value="NSE:ESC">A &#34;B&#34; &amp; &lt;C&gt;</option>'
    for nothing in ({}, {"symbol": ""}, {"symbol": "  "}, {"symbol": "x" * 65}):
        empty = alice.get("/symbol-options", params=nothing, headers=HTMX)
        assert (empty.status_code, empty.text) == (200, "")  # alice has no rules yet


def test_an_emptied_box_gets_the_own_rule_symbols_back(alice: TestClient[Any],
                                                       r: redis.Redis) -> None:
    """The alert filter starts with the symbols of the user's rules; emptying the box after
    a search offers them again (not the last search's, nor nothing)."""
    for rule_id, sym, user in (("a1", "NSE:TCS", "alice"), ("a2", "NSE:INFY", "alice"),
                               ("a3", "NSE:TCS", "alice"), ("b1", "NSE:M&M", "bob")):
        store.add_rule(r, parse_rule({"id": rule_id, "symbol": sym, "kind": "cross_above",
                                      "params": {"level": 1}}, user=user))
    page = alice.get("/alerts", headers=HTML).text
    first = page.split('<datalist id="symbols">')[1].split("</datalist>")[0]
    assert first == '<option value="NSE:INFY"><option value="NSE:TCS">'
    for emptied in ({"symbol": ""}, {"symbol": " "}, {}):
        response = alice.get("/symbol-options", params=emptied, headers=HTMX)
        assert response.text == ('<option value="NSE:INFY"></option>'
                                 '<option value="NSE:TCS"></option>'), emptied
    assert alice.get("/symbol-options", params={"symbol": "x" * 65}, headers=HTMX).text == ""


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
    assert f'<datalist id="{datalist}"' in page
