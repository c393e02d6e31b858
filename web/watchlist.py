"""A user's dashboard watchlist: the symbols stored under ``keys.user_watchlist(name)``,
their rows (price, change, sparkline of recent one-minute closes) and the add/remove forms.

The forms work without script (post, then back to the dashboard) and with htmx (the answer
is the watchlist section alone, swapped in place; a refused symbol answers 422 with the
message in the section).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any, cast
from urllib.parse import quote

import orjson
import redis.asyncio as aredis
from litestar import MediaType, Request, post
from litestar.di import NamedDependency
from litestar.enums import RequestEncodingType
from litestar.params import Body
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_422_UNPROCESSABLE_ENTITY
from redis.asyncio.client import Pipeline

from proto import bars as barstore
from proto import keys
from proto.rules import SYMBOL_RE
from web.settings import WebSettings
from web.views import User, quote_view

log = logging.getLogger("stormalert.web")

# A new user's list: the index and the names every feed (the simulator too) carries.
DEFAULT_WATCHLIST = ("NSE:NIFTY 50", "NSE:INFY", "NSE:RELIANCE", "NSE:TCS")
MAX_SYMBOLS = 50
SPARK_MINUTES = 60
SPARK_WIDTH, SPARK_HEIGHT = 100, 24
DEFAULT_EXCHANGE = "NSE"


class WatchlistError(ValueError):
    """A symbol the watchlist refuses; the message says why in one line."""


def normalise(text: str) -> str:
    """What a person types as a symbol: case and spacing ignored, ``NSE:`` when no exchange
    is given (``infy`` -> ``NSE:INFY``)."""
    sym = " ".join(text.split()).upper()
    if not sym:
        raise WatchlistError("enter a symbol, e.g. NSE:INFY")
    if ":" not in sym:
        sym = f"{DEFAULT_EXCHANGE}:{sym}"
    exchange, _, name = sym.partition(":")
    sym = f"{exchange.strip()}:{name.strip()}"
    if len(sym) > 64 or not SYMBOL_RE.match(sym):
        raise WatchlistError(f"{text.strip()[:64]!r} is not a symbol like NSE:INFY")
    return sym


def decode(raw: str | None) -> list[str]:
    """The stored list; the default when none is stored or it cannot be read."""
    if raw is None:
        return list(DEFAULT_WATCHLIST)
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        log.warning("unreadable watchlist, showing the default")
        return list(DEFAULT_WATCHLIST)
    return value


async def get_watchlist(ar: aredis.Redis, user: str) -> list[str]:
    return decode(cast(str | None, await ar.get(keys.user_watchlist(user))))


async def _change(ar: aredis.Redis, user: str, sym: str, add: bool) -> list[str]:
    """Add or remove one symbol; a concurrent change (another tab) retries on the new list."""
    key = keys.user_watchlist(user)
    result: list[str] = []

    async def update(pipe: Pipeline) -> None:
        nonlocal result
        current = decode(cast(str | None, await pipe.get(key)))
        if add and sym not in current and len(current) >= MAX_SYMBOLS:
            raise WatchlistError(f"the watchlist holds at most {MAX_SYMBOLS} symbols")
        result = ([*current, sym] if add and sym not in current
                  else [s for s in current if s != sym] if not add else current)
        pipe.multi()
        pipe.set(key, orjson.dumps(result))

    await ar.transaction(update, key)
    return result


async def add_symbol(ar: aredis.Redis, user: str, text: str) -> list[str]:
    sym = normalise(text)
    if not await ar.hexists(keys.INSTRUMENTS, sym):
        if not await ar.exists(keys.INSTRUMENTS):
            raise WatchlistError("no instrument list loaded yet: start the feed first")
        raise WatchlistError(f"unknown symbol {sym!r}")
    return await _change(ar, user, sym, add=True)


async def remove_symbol(ar: aredis.Redis, user: str, sym: str) -> list[str]:
    return await _change(ar, user, sym, add=False)


# Rows ------------------------------------------------------------------------------------


def spark_points(values: list[float]) -> str:
    """SVG polyline points drawing ``values`` across a SPARK_WIDTH x SPARK_HEIGHT box (the
    browser redraws with the same arithmetic in app.js)."""
    if len(values) < 2:
        return ""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    step = SPARK_WIDTH / (len(values) - 1)
    return " ".join(f"{i * step:.1f},{SPARK_HEIGHT - 1 - (v - low) / span * (SPARK_HEIGHT - 2):.1f}"
                    for i, v in enumerate(values))


def spark_series(closed: list[barstore.Bar],
                 quote: dict[str, Any] | None) -> tuple[list[float], int]:
    """The closes to draw (closed bars, then the open bar from the quote) and the start of
    the newest bar, so live updates know whether a quote extends it or starts a new one."""
    values = [bar.c for bar in closed]
    last_start = closed[-1].start if closed else 0
    open_bar = barstore.open_bar(quote.get("bar")) if quote else None
    if open_bar is not None and open_bar.start > last_start:
        values.append(open_bar.c)
        last_start = open_bar.start
    return values[-(SPARK_MINUTES + 1):], last_start


def symbol_href(sym: str) -> str:
    return "/symbols/" + quote(sym, safe=":")


def watch_row(sym: str, view: dict[str, Any] | None, quote_raw: str | None,
              closed: list[barstore.Bar]) -> dict[str, Any]:
    """One watchlist row; ``view`` is the symbol's ``quote_view`` (None: no price yet)."""
    try:
        quote_doc = orjson.loads(quote_raw) if quote_raw else None
    except orjson.JSONDecodeError:
        quote_doc = None
    values, last_start = spark_series(closed, quote_doc if isinstance(quote_doc, dict) else None)
    row: dict[str, Any] = dict(view) if view else {
        "sym": sym, "ltp": "\u2013", "chg_pct": "", "dir": "", "vol": "", "time": "", "bar": None}
    row.update(href=symbol_href(sym), spark=spark_points(values),
               spark_data=orjson.dumps(values).decode(), spark_start=last_start)
    return row


async def watch_rows(ar: aredis.Redis, watch: list[str], views: dict[str, dict[str, Any]],
                     quotes: dict[str, str]) -> list[dict[str, Any]]:
    """Rows in the user's order; ``views`` are the readable quote rows by symbol."""
    history = await barstore.recent_bars_many(ar, watch, SPARK_MINUTES)
    return [watch_row(sym, views.get(sym), quotes.get(sym), history[sym]) for sym in watch]


async def watched_quotes(ar: aredis.Redis, watch: list[str]) -> dict[str, str]:
    """The stored quotes of the watched symbols (only those with one)."""
    if not watch:
        return {}
    values = cast(list[str | None], await ar.hmget(keys.QUOTES, watch))
    return {sym: raw for sym, raw in zip(watch, values, strict=True) if raw is not None}


async def watchlist_context(ar: aredis.Redis, user: User) -> dict[str, Any]:
    """What ``_watchlist.html`` needs, for the htmx answers."""
    watch = await get_watchlist(ar, user.name)
    quotes = await watched_quotes(ar, watch)
    views = {sym: view for sym, raw in quotes.items() if (view := quote_view(sym, raw))}
    return {"watch": await watch_rows(ar, watch, views, quotes), "watch_syms": watch,
            "max_symbols": MAX_SYMBOLS}


# Routes ----------------------------------------------------------------------------------


@dataclass
class SymbolForm:
    symbol: str = ""


def _is_htmx(request: Request[Any, Any, Any]) -> bool:
    return request.headers.get("hx-request") == "true"


async def _answer(request: Request[User, Any, Any], ar: aredis.Redis, settings: WebSettings,
                  error: str | None, entered: str = "") -> Template | Redirect:
    if not _is_htmx(request):
        if error is None:
            return Redirect("/", status_code=303)
        # No script: the whole dashboard again, with the message by the form. (Imported
        # here: web.pages builds the dashboard from this module's rows.)
        from web.pages import dashboard_page
        return await dashboard_page(request, ar, settings, watch_error=error, entered=entered)
    context = await watchlist_context(ar, request.user)
    context.update(watch_error=error, entered=entered if error else "")
    status = HTTP_422_UNPROCESSABLE_ENTITY if error else 200
    return Template("_watchlist.html", media_type=MediaType.HTML, status_code=status,
                    context=context)


@post("/watchlist")
async def watchlist_add(
    request: Request[User, Any, Any],
    data: Annotated[SymbolForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
) -> Template | Redirect:
    try:
        await add_symbol(ar, request.user.name, data.symbol)
    except WatchlistError as exc:
        return await _answer(request, ar, settings, str(exc), data.symbol[:64])
    return await _answer(request, ar, settings, None)


@post("/watchlist/remove")
async def watchlist_remove(
    request: Request[User, Any, Any],
    data: Annotated[SymbolForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
) -> Template | Redirect:
    await remove_symbol(ar, request.user.name, data.symbol)
    return await _answer(request, ar, settings, None)
