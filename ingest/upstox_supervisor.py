"""The Upstox feed as a whole: the instrument master (loaded at start and refreshed daily), the
connections planned within the per-mode limits, the access token they share, the feed's state.

A refresh stores the new master in ``sa:instruments`` (dropping our instruments that left it),
updates the instrument key -> symbol map the decoders read (live, in place), and moves the
running connections to what the configuration now selects: new keys are subscribed, keys
that left are unsubscribed, on the live sockets. Everything is worked out before anything
changes, so a refresh that fails leaves the old master in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aredis

from ingest import upstox
from ingest import upstox_master as master
from ingest.backoff import backoff_s
from ingest.errors import FatalIngestError
from ingest.feed_status import FeedStatus
from ingest.instruments import remove as remove_instruments
from ingest.master_refresh import refresh_daily
from ingest.settings import IngestSettings
from ingest.tokens import AccessTokens
from ingest.upstox_feed import UpstoxConnection, plan_connections, rebalance_keys
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


class UpstoxFeed:
    def __init__(self, settings: IngestSettings, r: aredis.Redis, stats: Stats,
                 writer: TickWriter, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._r = r
        self._stats = stats
        self._writer = writer
        self._clock = clock
        self.status = FeedStatus(r, "upstox", stats, clock)
        self.tokens = AccessTokens(r, settings.upstox_access_token.get_secret_value(),
                                   self.status, poll_s=settings.upstox_token_poll_s,
                                   expiry=None, feed="upstox")
        self._symbols: dict[str, str] = {}  # instrument key -> symbol, shared by connections
        self._stored: set[str] = set()  # our symbols in sa:instruments
        self._connections: list[UpstoxConnection] = []

    async def run(self) -> None:
        s = self._settings
        upstox.backend_is_fast()
        try:
            await self.status.down("instruments", "loading the instrument master")
            # Planned outside the task group: a configuration error surfaces as itself.
            everything, groups = await self._plan()
            async with asyncio.TaskGroup() as tg:
                await self._apply(tg, everything, groups)
                await self.status.forget("instruments")
                tg.create_task(refresh_daily(
                    "upstox", s.upstox_instruments_refresh_at, lambda: self.refresh(tg),
                    self._stats, s.instruments_retry_min_s, s.instruments_retry_max_s,
                    self._clock), name="upstox-instruments-refresh")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.status.stopped())

    async def refresh(self, tg: asyncio.TaskGroup) -> None:
        """Load the master again and apply it; raises FatalIngestError with nothing changed
        when the master is rejected or the configuration selects nothing or too much."""
        await self._apply(tg, *await self._plan())

    async def _plan(self) -> tuple[list[master.UpstoxInstrument], list[list[str]]]:
        """The master and the keys of each connection it implies."""
        s = self._settings
        everything = await self._load()
        chosen, unknown = master.select(everything, s.upstox_instrument_keys,
                                        s.upstox_exchanges)
        if unknown:
            log.warning("not in the Upstox instrument master, not subscribed: %s",
                        ", ".join(unknown[:20]))
        if not chosen:
            raise FatalIngestError("no Upstox instruments to subscribe")
        wanted = [i.key for i in chosen]
        try:
            if not self._connections:
                return everything, plan_connections(wanted, s.upstox_mode, s.upstox_connections)
            return everything, rebalance_keys([c.instrument_keys for c in self._connections],
                                              wanted, s.upstox_mode, s.upstox_connections)
        except ValueError as exc:
            raise FatalIngestError(str(exc)) from None

    async def _apply(self, tg: asyncio.TaskGroup, everything: list[master.UpstoxInstrument],
                     groups: list[list[str]]) -> None:
        await self._store(everything)
        for n, group in enumerate(groups):
            if n < len(self._connections):
                if group != self._connections[n].instrument_keys:
                    await self._connections[n].update(group)
            else:
                conn = self._connection(f"upstox-{n}", group)
                await self.status.down(conn.name, "connecting")
                self._connections.append(conn)
                tg.create_task(conn.run(), name=conn.name)
        self._stats.gauges["instruments"] = len(everything)
        self._stats.inc("master_loads")
        log.info("Upstox instrument master: %d instruments stored, %d subscribed in %s mode "
                 "on %d connection(s)", len(everything), sum(map(len, groups)),
                 self._settings.upstox_mode, len(groups))

    async def _store(self, everything: list[master.UpstoxInstrument]) -> None:
        """The master into Redis and into the live key -> symbol map."""
        await master.store(self._r, everything)
        current = {i.symbol for i in everything}
        if self._stored - current:
            await remove_instruments(self._r, self._stored - current)
        self._stored = current
        symbols = {i.key: i.symbol for i in everything}
        for key in self._symbols.keys() - symbols.keys():
            del self._symbols[key]
        self._symbols.update(symbols)

    def _connection(self, name: str, keys: list[str]) -> UpstoxConnection:
        s = self._settings
        return UpstoxConnection(name, s.upstox_api_url, keys, s.upstox_mode, self._symbols,
                                self._writer, self._stats, self._r, self.tokens, self.status,
                                s.connection_policy())

    async def _load(self) -> list[master.UpstoxInstrument]:
        """Fetch the master; transport failures and 5xx retry with backoff."""
        s = self._settings
        attempt = 0
        while True:
            try:
                return await asyncio.to_thread(master.fetch, s.upstox_instruments_url)
            except master.MasterRejected as exc:
                raise FatalIngestError(str(exc)) from None
            except OSError as exc:
                attempt += 1
                self._stats.inc("master_retries")
                delay = backoff_s(attempt, s.reconnect_min_s, s.reconnect_max_s)
                log.warning("Upstox instruments from %s failed (%s); retrying in %.1f s",
                            s.upstox_instruments_url, type(exc).__name__, delay)
                await asyncio.sleep(delay)
