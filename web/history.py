"""Alert history: the user's alerts filtered by symbol, rule and time, newest first, a page
at a time, each with its delivery per channel (status and latency, from the notifier's
records as ``proto.delivery`` reads them). ``GET /api/alerts`` answers the same query.

A page is read backwards through ``sa:alerts`` from a cursor (``before``, an entry id), so
paging costs the same at any depth; a request looks at most ``history_scan`` entries, and
when that ends the page early its "older" link goes on from where the search stopped. The
time range applies to when the alert was raised (its entry id), in IST for plain dates.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Annotated, Any, cast
from urllib.parse import urlencode

import redis
import redis.asyncio as aredis
from litestar import MediaType, Request, Response, get
from litestar.background_tasks import BackgroundTask
from litestar.concurrency import sync_to_thread
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Stream, Template
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_429_TOO_MANY_REQUESTS

from proto import delivery, keys, store
from proto.display import IST, alert_path, format_ist
from proto.events import Alert
from web import export
from web.alerts import (
    START_ID,
    Entry,
    entry_key,
    latest_id,
    valid_entry_id,
    visible_alert,
)
from web.errors import error_response, wants_html
from web.settings import WebSettings
from web.views import User, price

PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_CHUNK = 500
_DAY_MS = 86_400_000
_DIGITS_RE = re.compile(r"^\d{1,15}$")
_MAX_ID_PART = 2**64 - 2  # a stream id's parts are 64-bit; one is added to the live cursor
EXPORT_MAX_ROWS = 100_000
# Entries an export reads at most, matching or not: sa:alerts holds every user's alerts, and
# parsing them runs on the event loop, so a filter that matches little must not read it all.
EXPORT_MAX_SCAN = 1_000_000
EXPORT_MAX_RUNNING = 2  # exports streaming at once per process; one more is answered 429
EXPORT_RETRY_AFTER_S = 10
CSV_MEDIA_TYPE = "text/csv"  # Litestar adds "; charset=utf-8"

# Query parameters shared by the page and the API.
SymbolParam = Annotated[str | None, QueryParameter(max_length=64, description=(
    "Only alerts of this symbol (EXCHANGE:TRADINGSYMBOL)"))]
RuleParam = Annotated[str | None, QueryParameter(max_length=64, description=(
    "Only alerts of this rule id"))]
FromParam = Annotated[str | None, QueryParameter(name="from", max_length=40, description=(
    "Alerts raised at or after: a date (YYYY-MM-DD, from 00:00 IST), ISO-8601 with an "
    "offset, or epoch ms"))]
ToParam = Annotated[str | None, QueryParameter(name="to", max_length=40, description=(
    "Alerts raised before: a date (YYYY-MM-DD, that whole day IST included), ISO-8601 with "
    "an offset, or epoch ms"))]
BeforeParam = Annotated[str | None, QueryParameter(max_length=42, description=(
    "Page cursor: only alerts older than this sa:alerts entry id (the previous page's next)"))]


class QueryError(ValueError):
    """A filter that cannot be read; ``field`` is the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_time(text: str, field: str, *, end: bool) -> int:
    """Epoch ms of a filter bound. A date is an IST day: its start, or for the ``end`` bound
    the start of the next day, so ``to=2026-11-30`` includes the 30th."""
    text = text.strip()
    if _DIGITS_RE.match(text):
        return int(text)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            start = datetime(day.year, day.month, day.day, tzinfo=IST)
            return max(0, int((start + timedelta(days=1 if end else 0)).timestamp() * 1000))
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        raise QueryError(field, "expected a date (YYYY-MM-DD), ISO-8601 with an offset "
                                "or epoch ms") from None
    if moment.tzinfo is None:
        raise QueryError(field, "a time needs a UTC offset, e.g. 2026-11-30T09:15+05:30")
    return max(0, int(moment.timestamp() * 1000))


@dataclass(frozen=True, slots=True)
class AlertQuery:
    symbol: str | None = None
    rule: str | None = None
    start_ms: int | None = None  # raised at or after
    end_ms: int | None = None  # raised before
    before: str | None = None  # entry id: only older entries
    limit: int = PAGE_SIZE

    @classmethod
    def parse(cls, *, symbol: str | None = None, rule: str | None = None,
              date_from: str | None = None, date_to: str | None = None,
              before: str | None = None, limit: int = PAGE_SIZE) -> AlertQuery:
        """The query from request parameters (blank ones ignored); QueryError on the first
        one that cannot be read."""
        start = parse_time(date_from, "from", end=False) if date_from and date_from.strip() \
            else None
        end = parse_time(date_to, "to", end=True) if date_to and date_to.strip() else None
        if start is not None and end is not None and end <= start:
            raise QueryError("to", "must be after from")
        cursor = None
        if before and before.strip():
            cursor = valid_entry_id(before)
            if cursor is None or max(entry_key(cursor)) > _MAX_ID_PART:
                raise QueryError("before", "not a page cursor (an entry id like 1700000000000-0)")
        return cls(symbol=(symbol or "").strip().upper() or None,
                   rule=(rule or "").strip() or None, start_ms=start, end_ms=end,
                   before=cursor, limit=limit)

    def matches(self, alert: Alert) -> bool:
        return ((self.symbol is None or alert.sym == self.symbol)
                and (self.rule is None or alert.rule == self.rule))


def upper_bound(query: AlertQuery, newest: str) -> str:
    """The XREVRANGE ``max`` of the query: before its cursor, its end and past ``newest``
    (the live cursor handed out with the page: nothing newer may be on it)."""
    ms, seq = entry_key(newest)
    bounds = [(ms, seq + 1)]  # exclusive bounds: up to and including ``newest``
    if query.before is not None:
        bounds.append(entry_key(query.before))
    if query.end_ms is not None:
        bounds.append((query.end_ms, 0))
    ms, seq = min(bounds)
    return f"({ms}-{seq}"


@dataclass(frozen=True, slots=True)
class HistoryPage:
    alerts: list[tuple[str, Alert]]
    cursor: str  # the stream's newest entry id when read: /events goes on from it
    next_before: str | None  # the next (older) page's cursor; None at the end
    searched_to_ms: int | None  # the scan budget ran out here (the page may be short)


async def find_alerts(ar: aredis.Redis, user: User, query: AlertQuery, *,
                      scan: int) -> HistoryPage:
    """One page of the alerts ``user`` may see that match ``query``, newest first."""
    cursor = await latest_id(ar)
    if cursor == START_ID:
        return HistoryPage([], cursor, None, None)
    upper = upper_bound(query, cursor)
    if upper == "(0-0":  # before the first possible entry
        return HistoryPage([], cursor, None, None)
    lower = f"{query.start_ms}-0" if query.start_ms is not None else "-"
    found: list[tuple[str, Alert]] = []
    scanned = 0
    while True:
        count = max(1, min(_CHUNK, scan - scanned))
        chunk = cast(list[Entry], await ar.xrevrange(keys.ALERTS, max=upper, min=lower,
                                                     count=count))
        for entry_id, fields in chunk:
            alert = visible_alert(user, entry_id, fields)
            if alert is not None and query.matches(alert):
                found.append((entry_id, alert))
                if len(found) >= query.limit:
                    return HistoryPage(found, cursor, entry_id, None)
        scanned += len(chunk)
        if len(chunk) < count:
            return HistoryPage(found, cursor, None, None)
        last = chunk[-1][0]
        if scanned >= scan:
            return HistoryPage(found, cursor, last, entry_key(last)[0])
        upper = "(" + last


async def delivery_logs(ar: aredis.Redis,
                        alerts: list[tuple[str, Alert]]) -> dict[str, dict[str, Any]]:
    """Alert id -> ``folded_into`` (a digest id or None) and ``deliveries`` (one row per
    channel, ``proto.delivery.delivery_rows``), read in one round trip."""
    users = sorted({alert.user for _eid, alert in alerts})
    async with ar.pipeline(transaction=False) as pipe:
        for _eid, alert in alerts:
            pipe.hgetall(keys.delivery(alert.id))
        for name in users:
            pipe.hgetall(keys.user_channels(name))
        replies: list[dict[str, str]] = await pipe.execute()
    channels = dict(zip(users, replies[len(alerts):], strict=True))
    logs = {}
    for (_eid, alert), raw in zip(alerts, replies[:len(alerts)], strict=False):
        folded, records = delivery.delivery_log(raw)
        logs[alert.id] = {"folded_into": folded or None,
                          "deliveries": delivery.delivery_rows(records, channels[alert.user])}
    return logs


@dataclass(slots=True)
class ExportScan:
    """How an export went: ``truncated`` says why it stopped before the last match."""

    truncated: str | None = None


async def _more_entries(ar: aredis.Redis, upper: str, lower: str) -> bool:
    return bool(await ar.xrevrange(keys.ALERTS, max=upper, min=lower, count=1))


async def all_matching(ar: aredis.Redis, user: User, query: AlertQuery, *, max_rows: int,
                       max_scan: int, scan: ExportScan,
                       ) -> AsyncIterator[list[tuple[str, Alert]]]:
    """Every alert ``user`` may see that matches ``query``, newest first, a chunk at a time,
    up to ``max_rows`` of them and ``max_scan`` entries read; when either ends it early,
    ``scan.truncated`` says which. It reads back from the stream's newest entry when it
    starts: alerts raised meanwhile are left out, so the rows are one consistent moment's."""
    newest = await latest_id(ar)
    upper = upper_bound(query, newest)
    if newest == START_ID or upper == "(0-0":
        return
    lower = f"{query.start_ms}-0" if query.start_ms is not None else "-"
    left = max_rows
    scanned = 0
    while True:
        count = min(_CHUNK, max_scan - scanned)
        if count <= 0:
            if await _more_entries(ar, upper, lower):
                searched_to = format_ist(entry_key(upper[1:])[0])
                scan.truncated = (f"the scan limit of {max_scan} alerts, searched back to "
                                  f"{searched_to}; narrow the dates")
            return
        chunk = cast(list[Entry], await ar.xrevrange(keys.ALERTS, max=upper, min=lower,
                                                     count=count))
        scanned += len(chunk)
        found: list[tuple[str, Alert]] = []
        for entry_id, fields in chunk:
            alert = visible_alert(user, entry_id, fields)
            if alert is None or not query.matches(alert):
                continue
            if left == 0:  # a match past the cap: the file is short of it
                scan.truncated = f"the {max_rows}-row cap; narrow the filters"
                break
            found.append((entry_id, alert))
            left -= 1
        if found:
            yield found
        if scan.truncated is not None or len(chunk) < count:
            return
        upper = "(" + chunk[-1][0]


def export_slots(request: Request[User, Any, Any]) -> asyncio.Semaphore:
    """The exports streaming in this process (one app a process), made on first use."""
    state = request.app.state
    if "export_slots" not in state:
        state.export_slots = asyncio.Semaphore(EXPORT_MAX_RUNNING)
    return cast(asyncio.Semaphore, state.export_slots)


async def alerts_csv_body(ar: aredis.Redis, user: User, query: AlertQuery,
                          slots: asyncio.Semaphore, *, max_rows: int,
                          max_scan: int) -> AsyncGenerator[bytes, None]:
    """The CSV file: its header, the rows of each chunk with its delivery records, and a
    last ``# truncated: ...`` row when the export stopped early. It holds one of ``slots``
    while it runs; the ``async with`` gives it back when the client goes away mid-file too
    (Litestar then cancels the stream and stops iterating it)."""
    async with slots:
        yield export.csv_header().encode()
        scan = ExportScan()
        async for chunk in all_matching(ar, user, query, max_rows=max_rows,
                                        max_scan=max_scan, scan=scan):
            logs = await delivery_logs(ar, chunk)
            yield export.csv_text(export.alert_row(alert, logs[alert.id])
                                  for _eid, alert in chunk).encode()
        if scan.truncated is not None:
            yield export.truncated_row(scan.truncated).encode()


def _latency(ms: Any) -> str:
    return "" if ms is None else f"{float(ms):,.0f} ms"


def history_row(entry_id: str, alert: Alert, log: dict[str, Any]) -> dict[str, Any]:
    folded = log["folded_into"]
    return {
        "entry_id": entry_id, "id": alert.id, "href": alert_path(alert.id), "user": alert.user,
        "sym": alert.sym, "kind": alert.kind, "rule": alert.rule, "ltp": price(alert.ltp),
        "msg": alert.msg, "time": format_ist(alert.ts),
        "latency_ms": f"{alert.latency_us() / 1000:.2f}",
        "folded_into": None if not folded else {"id": folded, "href": alert_path(folded)},
        "deliveries": [{"channel": d["channel"], "tag": d["tag"], "status": d["status"],
                        "attempts": d["attempts"], "error": d["error"],
                        "latency": _latency(d["latency_ms"])} for d in log["deliveries"]],
    }


def _rule_choices(r: redis.Redis, user: User) -> list[dict[str, str]]:
    return [{"id": rule.id, "label": f"{rule.symbol} {rule.kind}", "symbol": rule.symbol}
            for rule in store.list_rules(r, user.name)]


@get("/alerts")
async def alerts_page(
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    r: NamedDependency[redis.Redis],
    settings: NamedDependency[WebSettings],
    symbol: SymbolParam = None,
    rule: RuleParam = None,
    date_from: FromParam = None,
    date_to: ToParam = None,
    before: BeforeParam = None,
) -> Template:
    user = request.user
    filters = {"symbol": symbol or "", "rule": rule or "", "from": date_from or "",
               "to": date_to or ""}
    error = None
    try:
        query = AlertQuery.parse(symbol=symbol, rule=rule, date_from=date_from,
                                 date_to=date_to, before=before)
    except QueryError as exc:
        error, query = exc, None
    rows: list[dict[str, Any]] = []
    older = None
    searched_to = None
    kept = {k: v for k, v in filters.items() if v}
    if query is not None:
        page = await find_alerts(ar, user, query, scan=settings.history_scan)
        logs = await delivery_logs(ar, page.alerts)
        rows = [history_row(eid, alert, logs[alert.id]) for eid, alert in page.alerts]
        if page.next_before is not None:
            older = "/alerts?" + urlencode({**kept, "before": page.next_before})
        if page.searched_to_ms is not None:
            searched_to = format_ist(page.searched_to_ms)
    choices = await sync_to_thread(_rule_choices, r, user)
    return Template("alerts.html", media_type=MediaType.HTML, context={
        "user": user, "rows": rows, "filters": filters, "older": older,
        "paged": query is not None and query.before is not None,
        "newest": "/alerts?" + urlencode(kept) if kept else "/alerts",
        "csv_href": csv_query(kept), "csv_max_rows": EXPORT_MAX_ROWS,
        "csv_max_scan": EXPORT_MAX_SCAN,
        "searched_to": searched_to,
        "errors": {} if error is None else {error.field: error.message},
        "rules": choices, "symbols": sorted({c["symbol"] for c in choices}),
    })


def csv_query(kept: dict[str, str]) -> str:
    """The CSV download of the filters a page shows (all pages of them, not its cursor)."""
    return "/alerts.csv?" + urlencode(kept) if kept else "/alerts.csv"


async def _close(body: AsyncGenerator[bytes, None]) -> None:
    # A coroutine function: BackgroundTask runs anything else in a thread, where
    # ``body.aclose()`` would only make a coroutine and never run it.
    await body.aclose()


def query_refused(request: Request[User, Any, Any], exc: QueryError) -> Response[Any]:
    """A filter refused: the error page for a browser, else JSON naming the field."""
    if wants_html(request):
        return error_response(request, HTTP_400_BAD_REQUEST, str(exc))
    return Response({"status": HTTP_400_BAD_REQUEST, "detail": str(exc),
                     "errors": {exc.field: exc.message}},
                    status_code=HTTP_400_BAD_REQUEST, media_type=MediaType.JSON)


async def csv_download(request: Request[User, Any, Any], ar: aredis.Redis,
                       symbol: str | None, rule: str | None, date_from: str | None,
                       date_to: str | None) -> Response[Any]:
    try:
        query = AlertQuery.parse(symbol=symbol, rule=rule, date_from=date_from, date_to=date_to)
    except QueryError as exc:
        return query_refused(request, exc)
    slots = export_slots(request)
    if slots.locked():
        return error_response(
            request, HTTP_429_TOO_MANY_REQUESTS,
            f"{EXPORT_MAX_RUNNING} alert exports are already running on this server; "
            f"try again in {EXPORT_RETRY_AFTER_S} seconds",
            headers={"Retry-After": str(EXPORT_RETRY_AFTER_S)})
    body = alerts_csv_body(ar, request.user, query, slots, max_rows=EXPORT_MAX_ROWS,
                           max_scan=EXPORT_MAX_SCAN)
    # A client that hangs up while the stream waits to send leaves the body suspended at a
    # yield: Litestar cancels the send but does not close the body, so its slot would wait
    # for the garbage collector. Closing it after the response (a no-op once it has ended)
    # gives the slot back at once.
    return Stream(body, background=BackgroundTask(_close, body),
                  media_type=CSV_MEDIA_TYPE,
                  headers=export.attachment(export.filename("alerts", "csv")))


@get("/alerts.csv")
async def alerts_csv(
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    symbol: SymbolParam = None,
    rule: RuleParam = None,
    date_from: FromParam = None,
    date_to: ToParam = None,
) -> Response[Any]:
    """The history page's "Download CSV": every alert its filters match."""
    return await csv_download(request, ar, symbol, rule, date_from, date_to)


@get("/api/alerts.csv", media_type=CSV_MEDIA_TYPE,
     response_description="The alerts as CSV (UTF-8 with a byte-order mark)")
async def api_alerts_csv(
    request: Request[User, Any, Any],
    ar: NamedDependency[aredis.Redis],
    symbol: SymbolParam = None,
    rule: RuleParam = None,
    date_from: FromParam = None,
    date_to: ToParam = None,
) -> Response[Any]:
    """The caller's alerts that the filters of ``GET /api/alerts`` match, all of them (up to
    100,000, newest first) as a CSV file: time_ist (ISO-8601, +05:30), time_ms (the firing
    tick's epoch ms), symbol, rule_id, kind, price, message, ref (the reference values as
    JSON), user, alert_id, tick_to_alert_ms, delivery (per channel), folded_into (a digest).
    Text that starts like a spreadsheet formula gets a leading apostrophe. An export reads at
    most 1,000,000 alerts of the stream (everyone's); one cut short by that or by the row
    cap ends with a row whose first cell is ``# truncated: <reason>``. At most 2 exports run
    at once: another is answered 429 with Retry-After."""
    return await csv_download(request, ar, symbol, rule, date_from, date_to)


ROUTES = [alerts_page, alerts_csv, api_alerts_csv]
