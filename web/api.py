"""Machine-facing routes: health, the small JSON API and the server-sent event stream."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any

import orjson
import redis
import redis.asyncio as aredis
from litestar import Request, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, HeaderParameter, QueryParameter
from litestar.response import ServerSentEvent
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_503_SERVICE_UNAVAILABLE,
)

from proto import keys
from proto.runtime import Stats
from web import history
from web.alerts import latest_id, valid_entry_id
from web.live import AlertHub, Drain, QuoteBoard, StreamTiming, live_events
from web.settings import WebSettings
from web.views import User

HEALTH_TIMEOUT_S = 2.0
MAX_SYMS_PARAM = 4000  # a watchlist of 50 long symbol names


@get("/healthz", exclude_from_auth=True)
async def healthz(ar: NamedDependency[aredis.Redis]) -> Response[dict[str, str]]:
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            await ar.ping()
    except (redis.RedisError, OSError, TimeoutError):
        return Response({"redis": "down"}, status_code=HTTP_503_SERVICE_UNAVAILABLE)
    return Response({"redis": "ok"}, status_code=HTTP_200_OK)


@get("/api/quotes")
async def api_quotes(ar: NamedDependency[aredis.Redis]) -> dict[str, Any]:
    """The latest quote of every symbol, as stored (``proto.events.quote_json``)."""
    raw = await ar.hgetall(keys.QUOTES)
    quotes = {}
    for sym, value in sorted(raw.items()):
        try:
            quotes[sym] = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
    return {"quotes": quotes}


@get("/api/alerts")
async def api_alerts(
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    settings: NamedDependency[WebSettings],
    limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 50,
    symbol: history.SymbolParam = None,
    rule: history.RuleParam = None,
    date_from: history.FromParam = None,
    date_to: history.ToParam = None,
    before: history.BeforeParam = None,
) -> Response[dict[str, Any]]:
    """The caller's alerts, newest first, filtered as the alert history page filters them,
    each with its delivery per channel; ``next`` is the ``before`` of the next (older) page
    (null at the end) and ``cursor`` the entry id to follow ``/events`` from."""
    try:
        query = history.AlertQuery.parse(symbol=symbol, rule=rule, date_from=date_from,
                                         date_to=date_to, before=before, limit=limit)
    except history.QueryError as exc:
        return history.query_refused(request, exc)
    page = await history.find_alerts(ar, request.user, query, scan=settings.history_scan)
    logs = await history.delivery_logs(ar, page.alerts)
    alerts = [{"entry_id": entry_id, **dataclasses.asdict(alert), **logs[alert.id]}
              for entry_id, alert in page.alerts]
    return Response({"alerts": alerts, "cursor": page.cursor, "next": page.next_before})


@get("/events")
async def events(
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    board: NamedDependency[QuoteBoard],
    hub: NamedDependency[AlertHub],
    stats: NamedDependency[Stats],
    settings: NamedDependency[WebSettings],
    drain: NamedDependency[Drain],
    since: FromQuery[str | None] = None,
    syms: Annotated[str | None, QueryParameter(max_length=MAX_SYMS_PARAM)] = None,
    last_event_id: Annotated[str | None, HeaderParameter(name="last-event-id")] = None,
) -> ServerSentEvent:
    """Live alerts and quotes. A reconnecting browser sends ``Last-Event-ID`` and resumes
    right after it; the first connection starts from the cursor the page was rendered with.
    ``syms`` (comma-separated) limits quotes to the symbols the page shows."""
    cursor = (valid_entry_id(last_event_id)
              or valid_entry_id(since) or await latest_id(ar))
    timing = StreamTiming(settings.quotes_interval_s, settings.heartbeat_interval_s)
    symbols = None if syms is None else frozenset(s.strip() for s in syms.split(",") if s.strip())
    return ServerSentEvent(live_events(ar, board, hub, request.user, cursor, timing, stats, drain,
                                       symbols))
