"""The live stream behind ``/events``: new alerts the moment they are written, changed
quotes about once a second, and a heartbeat comment when the stream is otherwise quiet.

One ``QuoteBoard`` task polls ``sa:quotes`` for every connection, and one ``AlertHub`` task
tails ``sa:alerts`` (XREAD BLOCK) for every connection: each connection takes the entries
after its own cursor from the hub's recent entries, so a browser that reconnects with
``Last-Event-ID`` resumes exactly after the last entry it was told about. A cursor older
than the hub's recent entries (a long disconnection) catches up by its own reads first.
Before the hub, every connection held a blocking read and a Redis connection of its own:
with 200 streams the pool ran out and streams waited for their turn (or gave up with 503).
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_right
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
import redis.asyncio as aredis
from litestar.response import ServerSentEventMessage

from proto import bus, keys, store
from proto.runtime import Stats, wait_event
from web.alerts import START_ID, Entry, entry_key, read_after, visible_view
from web.views import User, quote_views

log = logging.getLogger("stormalert.web")

RETRY_MS = 2000  # how soon a browser reconnects after the stream drops
REDIS_RETRY_S = 1.0


# How soon at most a stream ends after its user is disabled or their sessions are ended
# (sooner with a shorter heartbeat interval).
SESSION_CHECK_S = 5.0


async def _session_goes_on(ar: aredis.Redis, user: User, started_s: float) -> bool:
    """False once the user is gone or disabled, or their sessions were ended (a password
    reset) after this stream started; True when Redis cannot tell (an outage)."""
    try:
        record = cast(dict[str, str], await ar.hgetall(keys.user(user.name)))
    except (redis.RedisError, OSError):
        return True
    return bool(record) and store.session_valid(record, started_s)


class AlertHub:
    """The newest ``sa:alerts`` entries, read by one task for every connection.

    It holds every entry after ``base`` (the stream's last id when it started, later the
    last entry it dropped); a connection whose cursor is at or after ``base`` takes its
    entries from here and waits for the next ones on one shared wake-up.
    """

    READ_COUNT = 500

    def __init__(self, ar: aredis.Redis, keep: int = 2000, block_ms: int = 5000) -> None:
        self._ar = ar
        self._keep = keep
        self._block_ms = block_ms
        self.base: tuple[int, int] | None = None  # None: not started yet
        self.redis_ok = True
        self._entries: list[Entry] = []
        self._keys: list[tuple[int, int]] = []
        self._wake = asyncio.Event()

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def _set_ok(self, ok: bool) -> None:
        if ok != self.redis_ok:
            self.redis_ok = ok
            self._notify()

    async def run(self) -> None:
        """Tail the stream until cancelled; an outage is logged once and retried."""
        cursor: str | None = None
        while True:
            try:
                if cursor is None:
                    last: Any = await self._ar.xrevrange(keys.ALERTS, count=1)
                    cursor = last[0][0] if last else "0-0"
                    self.base = entry_key(cursor)
                reply = await self._ar.xread({keys.ALERTS: cursor}, count=self.READ_COUNT,
                                             block=self._block_ms)
            except (redis.RedisError, OSError) as exc:
                if self.redis_ok:
                    log.warning("alerts: cannot read from Redis: %s", exc)
                self._set_ok(False)
                await asyncio.sleep(REDIS_RETRY_S)
                continue
            self._set_ok(True)
            entries = bus.flatten(reply)  # type: ignore[arg-type]
            if not entries:
                continue
            cursor = entries[-1][0]
            self._entries.extend(entries)
            self._keys.extend(entry_key(e[0]) for e in entries)
            if len(self._entries) > 2 * self._keep:
                drop = len(self._entries) - self._keep
                self.base = self._keys[drop - 1]
                del self._entries[:drop], self._keys[:drop]
            self._notify()

    def covers(self, cursor: str) -> bool:
        """Whether every entry after ``cursor`` is (or will be) in the hub. Not the start of
        an empty stream: a stream deleted and made again (say by FLUSHALL) starts over, and
        the hub may still hold entries of the old one."""
        return (self.base is not None and cursor != START_ID
                and entry_key(cursor) >= self.base)

    def after(self, cursor: str) -> list[Entry]:
        """The hub's entries after ``cursor`` (which it covers)."""
        start = bisect_right(self._keys, entry_key(cursor))
        return self._entries[start:start + self.READ_COUNT]

    async def wait(self, timeout_s: float) -> None:
        """Until new entries or a change of Redis's state, or ``timeout_s``."""
        await wait_event(self._wake, timeout_s)


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


async def live_events(ar: aredis.Redis, board: QuoteBoard, hub: AlertHub, user: User,
                      cursor: str, timing: StreamTiming, stats: Stats,
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
    started_s = time.time()
    session_check_s = min(SESSION_CHECK_S, timing.heartbeat_interval_s)
    next_session_check = time.monotonic() + session_check_s
    try:
        while not drain.requested:
            wrote = False
            if time.monotonic() >= next_session_check:
                next_session_check = time.monotonic() + session_check_s
                if not await _session_goes_on(ar, user, started_s):
                    yield _message("status", {"session": "ended"})
                    return  # the browser reconnects, is refused and signs in again
            if time.monotonic() >= next_quotes:
                next_quotes = time.monotonic() + timing.quotes_interval_s
                for message in state.quote_messages(board.quotes):
                    yield message
                    wrote = True
            ok = hub.redis_ok
            entries: list[Entry] = []
            covered = hub.covers(state.cursor)
            if ok and not covered:  # behind the hub (or it has not started): catch up
                try:
                    entries = await read_after(ar, state.cursor, block_ms=None)
                except (redis.RedisError, OSError) as exc:
                    log.warning("alerts: cannot read from Redis: %s", exc)
                    ok = False
            if ok and not entries:
                entries = hub.after(state.cursor) if covered else []
                if not entries:
                    await hub.wait(max(0.001, next_quotes - time.monotonic()))
                    ok = hub.redis_ok
                    entries = hub.after(state.cursor) if ok and covered else []
            if ok != redis_ok:
                yield _message("status", {"redis": "ok" if ok else "down"})
                wrote = True
                redis_ok = ok
            if not ok:
                await asyncio.sleep(min(REDIS_RETRY_S, max(0.0, next_quotes - time.monotonic())))
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
