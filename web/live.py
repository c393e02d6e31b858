"""The live stream behind ``/events``: new alerts the moment they are written, changed
quotes about once a second, and a heartbeat comment when the stream is otherwise quiet.

One ``QuoteBoard`` task polls ``sa:quotes`` for every connection; each connection tails
``sa:alerts`` itself with XREAD BLOCK from its own cursor, so a browser that reconnects with
``Last-Event-ID`` resumes exactly after the last entry it was told about.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import orjson
import redis
import redis.asyncio as aredis
from litestar.response import ServerSentEventMessage

from proto import keys
from proto.runtime import Stats
from web.alerts import Entry, read_after, visible_view
from web.views import User, quote_views

log = logging.getLogger("stormalert.web")

RETRY_MS = 2000  # how soon a browser reconnects after the stream drops
REDIS_RETRY_S = 1.0


class QuoteBoard:
    """The latest ``sa:quotes`` snapshot, refreshed by one task for all connections."""

    def __init__(self, ar: aredis.Redis, interval_s: float) -> None:
        self.quotes: dict[str, str] = {}
        self._ar = ar
        self._interval_s = interval_s

    async def run(self) -> None:
        """Poll until cancelled; a Redis outage is logged once and the last snapshot kept."""
        down = False
        while True:
            try:
                self.quotes = cast(dict[str, str], await self._ar.hgetall(keys.QUOTES))
                if down:
                    log.info("quotes: Redis reachable again")
                down = False
            except (redis.RedisError, OSError) as exc:
                if not down:
                    log.warning("quotes: cannot read from Redis: %s", exc)
                down = True
            await asyncio.sleep(self._interval_s)


class Drain:
    """Set when the server starts to stop: open streams end within a quotes interval, so
    the server's graceful shutdown need not cancel them (browsers reconnect and resume)."""

    def __init__(self) -> None:
        self.requested = False

    def start(self) -> None:
        # Called from a signal handler: only a plain attribute write.
        self.requested = True


@dataclass(frozen=True, slots=True)
class StreamTiming:
    quotes_interval_s: float
    heartbeat_interval_s: float


def _message(event: str, payload: object, entry_id: str | None = None) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=event, data=orjson.dumps(payload).decode(), id=entry_id)


class StreamState:
    """What one browser has been told; turns new quotes and alert entries into messages.
    Pure: no I/O, no clock."""

    def __init__(self, user: User, cursor: str,
                 symbols: frozenset[str] | None = None) -> None:
        self.user = user
        self.symbols = symbols  # the quotes this page shows; None: every symbol
        self.cursor = cursor  # the last alert entry read
        self.told_cursor = cursor  # the last entry id the browser holds as its Last-Event-ID
        self.sent_quotes: dict[str, str] = {}

    def quote_messages(self, quotes: dict[str, str]) -> list[ServerSentEventMessage]:
        messages = []
        if self.symbols is not None:
            quotes = {s: quotes[s] for s in self.symbols if s in quotes}
        changed = {s: q for s, q in quotes.items() if self.sent_quotes.get(s) != q}
        if changed:
            self.sent_quotes.update(changed)
            messages.append(_message("quotes", quote_views(changed)))
        if self.told_cursor != self.cursor:
            # Entries the user may not see still advance the browser's resume point.
            messages.append(ServerSentEventMessage(data=None, id=self.cursor))
            self.told_cursor = self.cursor
        return messages

    def alert_messages(self, entries: list[Entry]) -> list[ServerSentEventMessage]:
        messages = []
        for entry_id, fields in entries:
            self.cursor = entry_id
            view = visible_view(self.user, entry_id, fields)
            if view is not None:
                messages.append(_message("alert", view, entry_id))
                self.told_cursor = entry_id
        return messages


async def live_events(ar: aredis.Redis, board: QuoteBoard, user: User, cursor: str,
                      timing: StreamTiming, stats: Stats,
                      drain: Drain, symbols: frozenset[str] | None = None,
                      ) -> AsyncIterator[ServerSentEventMessage]:
    """Server-sent events for one browser, starting after alert entry ``cursor``; quotes of
    ``symbols`` only when given."""
    yield ServerSentEventMessage(data=None, comment="connected", retry=RETRY_MS)
    state = StreamState(user, cursor, symbols)
    redis_ok = True
    next_quotes = 0.0
    last_write = time.monotonic()
    stats.inc("sse_connects")
    stats.gauges["sse_open"] = stats.gauges.get("sse_open", 0) + 1
    try:
        while not drain.requested:
            wrote = False
            if time.monotonic() >= next_quotes:
                next_quotes = time.monotonic() + timing.quotes_interval_s
                for message in state.quote_messages(board.quotes):
                    yield message
                    wrote = True
            try:
                block_ms = max(1, int((next_quotes - time.monotonic()) * 1000))
                entries = await read_after(ar, state.cursor, block_ms=block_ms)
            except (redis.RedisError, OSError) as exc:
                entries = []
                if redis_ok:
                    log.warning("alerts: cannot read from Redis: %s", exc)
                    yield _message("status", {"redis": "down"})
                    wrote = True
                redis_ok = False
                await asyncio.sleep(REDIS_RETRY_S)
            else:
                if not redis_ok:
                    yield _message("status", {"redis": "ok"})
                    wrote = True
                redis_ok = True
            for message in state.alert_messages(entries):
                yield message
                wrote = True
                stats.inc("sse_alerts")
            if wrote:
                last_write = time.monotonic()
            elif time.monotonic() - last_write >= timing.heartbeat_interval_s:
                yield ServerSentEventMessage(data=None, comment="hb")
                last_write = time.monotonic()
    finally:
        stats.gauges["sse_open"] -= 1
