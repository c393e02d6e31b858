"""What the two feed supervisors (``KiteFeed``, ``UpstoxFeed``) share: the feed's state, the
instrument master's upkeep (loading it with retries, dropping instruments that left it, the
daily refresh) and the run: plan from the master, start the connections, refresh daily.

A feed supplies ``_plan`` (load the master and work out the subscriptions; raises
FatalIngestError, having changed nothing, when the master or the selection is unusable) and
``_apply`` (store the master, move or open the connections). The first plan is made outside
the task group, so that a configuration error ends the worker with its own message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from datetime import time
from typing import Any, Generic, Protocol, TypeVar

import redis
import redis.asyncio as aredis
import requests

from ingest.backoff import backoff_s
from ingest.clock import IST, ist_text, next_daily
from ingest.errors import FatalIngestError
from ingest.feed_status import FeedStatus
from ingest.instruments import remove
from ingest.settings import IngestSettings
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")

T = TypeVar("T")
Plan = TypeVar("Plan")
Slot = TypeVar("Slot", contravariant=True)


class Connection(Protocol[Slot]):
    """A feed connection as its supervisor moves it: what it carries can change live."""

    name: str

    async def run(self) -> None: ...

    async def update(self, slot: Slot, /) -> None: ...


class FeedSupervisor(ABC, Generic[Plan]):
    def __init__(self, feed: str, settings: IngestSettings, r: aredis.Redis, stats: Stats,
                 writer: TickWriter, clock: Callable[[], float], refresh_at: time) -> None:
        self.feed = feed
        self._refresh_at = refresh_at
        self._settings = settings
        self._r = r
        self._stats = stats
        self._writer = writer
        self._clock = clock
        self.status = FeedStatus(r, feed, stats, clock)
        self._stored: set[str] = set()  # this feed's symbols in sa:instruments
        self._connections: list[Connection[Any]] = []

    @abstractmethod
    async def _plan(self) -> Plan: ...

    @abstractmethod
    async def _apply(self, tg: asyncio.TaskGroup, plan: Plan) -> None: ...

    async def run(self) -> None:
        try:
            await self.status.down("instruments", "loading the instrument master")
            plan = await self._plan()
            async with asyncio.TaskGroup() as tg:
                await self._apply(tg, plan)
                await self.status.forget("instruments")
                s = self._settings
                tg.create_task(refresh_daily(
                    self.feed, self._refresh_at, lambda: self.refresh(tg), self._stats,
                    s.instruments_retry_min_s, s.instruments_retry_max_s, self._clock),
                    name=f"{self.feed}-instruments-refresh")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.status.stopped())

    async def refresh(self, tg: asyncio.TaskGroup) -> None:
        """Load the master again and apply it (nothing changes when it raises)."""
        await self._apply(tg, await self._plan())

    async def _place(self, tg: asyncio.TaskGroup, slots: list[T],
                     open_one: Callable[[int, T], Connection[T]]) -> None:
        """Move each running connection to its slot (what it carries); open a connection for
        each slot beyond them (its state shows ``connecting`` until it is up)."""
        for n, slot in enumerate(slots):
            if n < len(self._connections):
                await self._connections[n].update(slot)
                continue
            conn = open_one(n, slot)
            await self.status.down(conn.name, "connecting")
            self._connections.append(conn)
            tg.create_task(conn.run(), name=conn.name)

    async def _forget_left(self, symbols: set[str]) -> None:
        """Drop from ``sa:instruments`` this feed's instruments that left the master
        (expired contracts, delistings); another feed's entries stay."""
        if self._stored - symbols:
            await remove(self._r, self._stored - symbols)
        self._stored = symbols

    async def _retrying(self, fetch: Callable[[], Awaitable[T]], source: str) -> T:
        """``fetch()``, again after a capped backoff while it fails in transport (``requests``
        errors, ``OSError``, a 5xx); anything else it raises goes to the caller."""
        s = self._settings
        attempt = 0
        while True:
            try:
                return await fetch()
            except (requests.RequestException, OSError) as exc:
                attempt += 1
                self._stats.inc("master_retries")
                delay = backoff_s(attempt, s.reconnect_min_s, s.reconnect_max_s)
                log.warning("%s: instruments from %s failed (%s); retrying in %.1f s",
                            self.feed, source, type(exc).__name__, delay)
                await asyncio.sleep(delay)


async def refresh_daily(feed: str, at: time, refresh: Callable[[], Awaitable[None]],
                        stats: Stats, retry_min_s: float, retry_max_s: float,
                        clock: Callable[[], float]) -> None:
    """Run ``refresh`` every day at ``at`` (IST) until cancelled; after a failure keep the old
    master (``refresh`` changes nothing when it raises) and try again with capped backoff
    until one succeeds, then wait for the next day."""
    while True:
        due = next_daily(clock(), at, IST)
        log.info("%s: next instrument master refresh at %s", feed, ist_text(due))
        await asyncio.sleep(max(due - clock(), 0.0))
        attempt = 0
        while True:
            try:
                await refresh()
                break
            except (FatalIngestError, redis.RedisError) as exc:
                attempt += 1
                stats.inc("master_refresh_failures")
                delay = backoff_s(attempt, retry_min_s, retry_max_s)
                log.error("%s: instrument master refresh failed, keeping the old one; "
                          "retrying in %.1f s: %s", feed, delay, exc)
                await asyncio.sleep(delay)
