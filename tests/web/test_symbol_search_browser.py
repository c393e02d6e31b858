"""Symbol suggestions in a real browser (Debian's chromium, as in test_browser.py): typing in
the rules form's symbol box, the watchlist's add box and the alert history's filter fills
each box's <datalist> from /symbol-options, over a master of 9000 instruments; instrument
names and an exchange alone are searched too, and each box offers the user's own rule symbols
before any typing and again once emptied. Skipped when chromium is not
installed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from proto import keys, store
from proto.rules import parse_rule
from tests.web.browser import CHROMIUM, Browser
from tests.web.conftest import session_cookie
from tests.web.server import WebServer, wait_for
from web.session import COOKIE

pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no chromium")

NAMED = {"NSE:INFY": "INFOSYS", "BSE:INFY": "INFOSYS", "NSE:INFIBEAM": "INFIBEAM AVENUES",
         "NSE:TCS": "TATA CONSULTANCY SERV LT", "NSE:NIFTY 50": "NIFTY 50",
         "NSE:NIFTY BANK": "NIFTY BANK", "NSE:RELIANCE": "RELIANCE INDUSTRIES",
         "NSE:SBIN": "STATE BANK OF INDIA", "NSE:TATAMOTORS": "TATA MOTORS LIMITED"}


def load_master(r: redis.Redis, size: int = 9000) -> None:
    """The named instruments among ``size`` made-up ones (several holding "INF" inside)."""
    records: dict[Any, Any] = {
        f"NSE:S{i:04d}{'INF' if i % 7 == 0 else ''}": orjson.dumps({"tok": str(i)})
        for i in range(size - len(NAMED))}
    for i, (sym, name) in enumerate(NAMED.items()):
        records[sym] = orjson.dumps({"tok": str(size + i), "src": "sim", "name": name})
    r.hset(keys.INSTRUMENTS, mapping=records)
    assert r.hlen(keys.INSTRUMENTS) == size


def options(datalist: str) -> str:
    return (f"Array.from(document.querySelectorAll('#{datalist} option'))"
            ".map(o => [o.value, o.textContent])")


def type_into(browser: Browser, box: str, text: str) -> None:
    """Key by key as a person types (each character an input event), into an empty box."""
    browser.evaluate(f"document.getElementById('{box}').value = ''")
    browser.evaluate(f"document.getElementById('{box}').focus()")
    for char in text:
        browser.call("Input.insertText", text=char)


def empty_box(browser: Browser, box: str) -> None:
    """As a person empties it: select all, then Backspace (one input event)."""
    browser.evaluate(f"document.getElementById('{box}').focus()")
    browser.evaluate(f"document.getElementById('{box}').select()")
    for kind in ("rawKeyDown", "keyUp"):
        browser.call("Input.dispatchKeyEvent", type=kind, key="Backspace", code="Backspace",
                     windowsVirtualKeyCode=8)
    assert browser.evaluate(f"document.getElementById('{box}').value") == ""


def open_page(browser: Browser, url: str, cookie: str, box: str) -> None:
    """Open a page signed in and wait for its symbol box and htmx."""
    browser.open(url, {COOKIE: cookie})
    assert wait_for(lambda: browser.evaluate(
        f"!!document.getElementById('{box}') && !!window.htmx"))


def offered(browser: Browser, datalist: str, symbol: str) -> bool:
    return any(value == symbol for value, _label in browser.evaluate(options(datalist)) or [])


def test_typing_offers_matching_symbols(redis_url: str, r: redis.Redis, users: dict[str, str],
                                        browser: Browser, tmp_path: Path) -> None:
    load_master(r)
    store.add_rule(r, parse_rule({"id": "a-tcs", "symbol": "NSE:TCS", "kind": "cross_above",
                                  "params": {"level": 1}}, user="alice"))
    own = [["NSE:TCS", ""]]
    server = WebServer(redis_url, tmp_path).start()
    try:
        cookie = session_cookie(server.url, "alice", users["alice"])

        # Before any typing each box offers the user's own rule symbols, as the alert
        # filter does.
        open_page(browser, f"{server.url}/rules/new", cookie, "symbol")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == own)
        type_into(browser, "symbol", "infy")
        assert wait_for(lambda: offered(browser, "symbol-options", "NSE:INFY"))
        assert browser.evaluate(options("symbol-options")) == [
            ["BSE:INFY", "INFOSYS"], ["NSE:INFY", "INFOSYS"]]
        assert browser.evaluate("document.getElementById('symbol').value") == "infy"
        # A query with the exchange, and one with a space (an index).
        type_into(browser, "symbol", "nse:inf")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == [
            ["NSE:INFY", "INFOSYS"], ["NSE:INFIBEAM", "INFIBEAM AVENUES"]])
        type_into(browser, "symbol", "nifty 5")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == [
            ["NSE:NIFTY 50", "NIFTY 50"]])
        # Names, and a name run together as a trading symbol.
        type_into(browser, "symbol", "infosys")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == [
            ["BSE:INFY", "INFOSYS"], ["NSE:INFY", "INFOSYS"]])
        type_into(browser, "symbol", "state bank")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == [
            ["NSE:SBIN", "STATE BANK OF INDIA"]])
        type_into(browser, "symbol", "tata motors")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == [
            ["NSE:TATAMOTORS", "TATA MOTORS LIMITED"]])
        # An exchange alone: its symbols, shortest first, ten of them (S0000INF and S0007INF
        # are longer).
        type_into(browser, "symbol", "bse:")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == [
            ["BSE:INFY", "INFOSYS"]])
        type_into(browser, "symbol", "nse:")
        assert wait_for(lambda: [v for v, _ in browser.evaluate(options("symbol-options"))] == [
            "NSE:TCS", "NSE:INFY", "NSE:SBIN", "NSE:S0001", "NSE:S0002", "NSE:S0003",
            "NSE:S0004", "NSE:S0005", "NSE:S0006", "NSE:S0008"])
        # Emptied, the box offers the user's own rule symbols, not the last search's.
        empty_box(browser, "symbol")
        assert wait_for(lambda: browser.evaluate(options("symbol-options")) == own)

        # The watchlist's box: the suggestions go to its datalist, the section stays.
        open_page(browser, f"{server.url}/", cookie, "watch-symbol")
        assert wait_for(lambda: browser.evaluate(options("watch-symbols")) == own)
        type_into(browser, "watch-symbol", "tc")
        assert wait_for(lambda: offered(browser, "watch-symbols", "NSE:TCS"))
        assert browser.evaluate("!!document.querySelector('#watchlist table.watch')")
        # Adding the offered symbol swaps the section in; its new box suggests as well.
        browser.evaluate("document.getElementById('watch-symbol').value = 'NSE:INFIBEAM'")
        browser.evaluate("document.querySelector('.watch-add button').click()")
        assert wait_for(lambda: browser.evaluate(
            "!!document.querySelector('#quotes tr[data-sym=\"NSE:INFIBEAM\"]')"))
        type_into(browser, "watch-symbol", "relia")
        assert wait_for(lambda: browser.evaluate(options("watch-symbols")) == [
            ["NSE:RELIANCE", "RELIANCE INDUSTRIES"]])
        empty_box(browser, "watch-symbol")
        assert wait_for(lambda: browser.evaluate(options("watch-symbols")) == own)

        # The alert history's filter.
        # The alert history's filter: it starts with the user's own rule symbols, a search
        # replaces them, and emptying the box brings them back (twice: no page reload).
        open_page(browser, f"{server.url}/alerts", cookie, "f-symbol")
        assert browser.evaluate(options("symbols")) == own
        for _ in range(2):
            type_into(browser, "f-symbol", "nifty")
            assert wait_for(lambda: offered(browser, "symbols", "NSE:NIFTY BANK"))
            assert not offered(browser, "symbols", "NSE:TCS")
            empty_box(browser, "f-symbol")
            assert wait_for(lambda: browser.evaluate(options("symbols")) == own)
        assert browser.errors == []
    finally:
        server.kill()
