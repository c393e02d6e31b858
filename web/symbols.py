"""The symbol page: live one-minute candles, the user's rule levels as price lines and the
user's alerts as markers; and ``/api/bars/{sym}`` behind it.

The page carries its first data as JSON in a data attribute (the CSP allows no inline
script), so the chart draws without another round trip; live candles come from the
open bar each quote carries over ``/events?syms=SYM``.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import orjson
import redis.asyncio as aredis
from litestar import MediaType, Request, get
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter
from litestar.response import Template
from pydantic import ValidationError

from proto import bars as barstore
from proto import keys
from proto.rules import SYMBOL_RE, Rule
from web.alerts import Entry, latest_id, visible_alert
from web.settings import WebSettings
from web.views import User, quote_view

PAGE_MINUTES = 375  # one NSE session
MAX_MARKERS = 200
_CHUNK = 500

# Which rule kinds draw which lines: kind -> (param, label) pairs.
LEVEL_PARAMS: dict[str, tuple[tuple[str, str], ...]] = {
    "cross_above": (("level", "cross above"),),
    "cross_below": (("level", "cross below"),),
    "above": (("level", "above"),),
    "below": (("level", "below"),),
    "channel": (("low", "channel low"), ("high", "channel high")),
}


def checked_symbol(sym: str) -> str:
    if len(sym) > 64 or not SYMBOL_RE.match(sym):
        raise NotFoundException(f"{sym[:64]!r} is not a symbol like NSE:INFY")
    return sym


def rule_levels(rules: list[Rule]) -> list[dict[str, Any]]:
    """Price lines for the rules that have levels, sorted by price. Pure."""
    lines = []
    for rule in rules:
        for param, label in LEVEL_PARAMS.get(rule.kind, ()):
            value = rule.params.get(param)
            if isinstance(value, int | float):
                lines.append({"price": float(value), "title": label, "rule": rule.id,
                              "kind": rule.kind, "active": rule.active})
    return sorted(lines, key=lambda line: (line["price"], line["rule"]))


async def user_rules_for(ar: aredis.Redis, user: str, sym: str) -> list[Rule]:
    ids = sorted(cast(set[str], await ar.smembers(keys.user_rules(user))))
    bodies = cast(list[str | None], await ar.hmget(keys.RULES, ids)) if ids else []
    rules = []
    for body in bodies:
        if not body:
            continue
        try:
            rule = Rule.model_validate_json(body)
        except ValidationError:
            continue  # the rules page reports unreadable rules; a chart just leaves them out
        if rule.symbol == sym:
            rules.append(rule)
    return rules


async def user_alerts_for(ar: aredis.Redis, user: User, sym: str,
                          scan: int) -> list[dict[str, Any]]:
    """Markers for the user's own alerts on ``sym`` among the newest ``scan`` alert entries,
    oldest first."""
    markers: list[dict[str, Any]] = []
    upper, scanned = "+", 0
    while scanned < scan and len(markers) < MAX_MARKERS:
        chunk = cast(list[Entry], await ar.xrevrange(
            keys.ALERTS, max=upper, min="-", count=max(1, min(_CHUNK, scan - scanned))))
        if not chunk:
            break
        for entry_id, fields in chunk:
            if fields.get("user") != user.name or fields.get("sym") != sym:
                continue
            alert = visible_alert(user, entry_id, fields)
            if alert is not None and len(markers) < MAX_MARKERS:
                markers.append({"ts": alert.ts, "kind": alert.kind, "ltp": alert.ltp,
                                "id": entry_id})
        scanned += len(chunk)
        upper = "(" + chunk[-1][0]
    return markers[::-1]


def bars_json(closed: list[barstore.Bar], quote: dict[str, Any] | None) -> dict[str, Any]:
    """Closed bars oldest first and the open one (from the quote) when it is newer."""
    open_bar = barstore.open_bar(quote.get("bar")) if quote else None
    if open_bar is not None and closed and open_bar.start <= closed[-1].start:
        open_bar = None
    return {"bars": [list(bar) for bar in closed],
            "open": list(open_bar) if open_bar is not None else None}


async def _quote(ar: aredis.Redis, sym: str) -> tuple[str | None, dict[str, Any] | None]:
    raw = cast(str | None, await ar.hget(keys.QUOTES, sym))
    try:
        doc = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        doc = None
    return raw, doc if isinstance(doc, dict) else None


async def _known(ar: aredis.Redis, sym: str) -> bool:
    """Listed in the instrument master, or (before one is loaded) has a quote or bars."""
    if await ar.hexists(keys.INSTRUMENTS, sym):
        return True
    if await ar.exists(keys.INSTRUMENTS):
        return False
    return bool(await ar.hexists(keys.QUOTES, sym) or await ar.exists(keys.bars(sym)))


@get("/symbols/{sym:str}")
async def symbol_page(
    request: Request[User, Any, Any],
    sym: FromPath[str],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
) -> Template:
    sym = checked_symbol(sym)
    if not await _known(ar, sym):
        raise NotFoundException(f"unknown symbol {sym!r}")
    raw, quote = await _quote(ar, sym)
    closed = await barstore.recent_bars(ar, sym, PAGE_MINUTES)
    rules = await user_rules_for(ar, request.user.name, sym)
    chart = {
        "symbol": sym,
        "user": request.user.name,
        **bars_json(closed, quote),
        "levels": rule_levels(rules),
        "markers": await user_alerts_for(ar, request.user, sym, settings.history_scan),
    }
    cursor = await latest_id(ar)
    return Template("symbol.html", media_type=MediaType.HTML, context={
        "user": request.user,
        "sym": sym,
        "quote": quote_view(sym, raw) if raw else None,
        "levels": chart["levels"],
        "chart_json": orjson.dumps(chart).decode(),
        "cursor": cursor,
    })


@get("/api/bars/{sym:str}")
async def api_bars(
    sym: FromPath[str],
    ar: NamedDependency[aredis.Redis],
    minutes: Annotated[int, QueryParameter(ge=1, le=keys.BARS_MAXLEN)] = PAGE_MINUTES,
) -> dict[str, Any]:
    """The symbol's last ``minutes`` closed one-minute bars, oldest first, as
    ``[start_ms, o, h, l, c, v]``, and the open bar (``open``, null when none)."""
    sym = checked_symbol(sym)
    if not await _known(ar, sym):
        raise NotFoundException(f"unknown symbol {sym!r}")
    _raw, quote = await _quote(ar, sym)
    closed = await barstore.recent_bars(ar, sym, minutes)
    return {"symbol": sym, **bars_json(closed, quote)}
