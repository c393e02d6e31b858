"""The Kite feed as a whole: the access token, the instrument master (loaded at start and
refreshed daily), the connections it plans from the configuration, and the feed's state.

A refresh stores the master in ``sa:instruments`` (dropping instruments that left it),
updates the token -> symbol map the decoders read (live, in place), and subscribes new
instruments that match the configuration on the running connections, opening another
connection when they are full and the limit allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import redis.asyncio as aredis
import requests

from ingest import instruments as master
from ingest.backoff import backoff_s
from ingest.errors import FatalIngestError
from ingest.feed_status import FeedStatus
from ingest.kite_feed import KiteConnection
from ingest.kite_plan import mode_for, rebalance
from ingest.master_refresh import refresh_daily
from ingest.settings import IngestSettings
from ingest.tokens import AccessTokens
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


class KiteFeed:
    def __init__(self, settings: IngestSettings, r: aredis.Redis, stats: Stats,
                 writer: TickWriter, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._r = r
        self._stats = stats
        self._writer = writer
        self._clock = clock
        self.status = FeedStatus(r, settings.feed, stats, clock)
        self._api_key, configured = settings.credentials()
        expiry = settings.kite_token_expiry if settings.feed == "kite" else None
        self.tokens = AccessTokens(r, configured, self.status, poll_s=settings.kite_token_poll_s,
                                   expiry=expiry, clock=clock)
        self._symbols: dict[int, str] = {}
        self._stored: set[str] = set()
        self._connections: list[KiteConnection] = []

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                await self.status.down("instruments", "loading the instrument master")
                await self.refresh(tg, first=True)
                s = self._settings
                tg.create_task(refresh_daily(
                    "kite", s.kite_instruments_refresh_at,
                    lambda: self.refresh(tg, first=False), self._stats,
                    s.instruments_retry_min_s, s.instruments_retry_max_s, self._clock),
                    name="kite-instruments-refresh")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.status.stopped())

    async def refresh(self, tg: asyncio.TaskGroup, *, first: bool) -> None:
        s = self._settings
        everything = await self._load()
        await master.store(self._r, everything)
        current = {i.symbol for i in everything}
        if self._stored - current:
            await master.remove(self._r, self._stored - current)
        self._stored = current
        self._symbols.update(master.token_map(everything))
        chosen, unknown = master.select(everything, s.kite_symbols, s.kite_exchanges)
        if unknown:
            log.warning("not in the instrument master, not subscribed: %s",
                        ", ".join(unknown[:20]))
        wanted = {i.token: mode_for(i.symbol, s.kite_modes, s.kite_mode) for i in chosen}
        slots, left_out = rebalance([c.subscriptions for c in self._connections], wanted,
                                    s.kite_tokens_per_connection, s.kite_max_connections)
        if left_out:
            log.warning("%d instruments exceed %d connections x %d tokens and are not "
                        "subscribed", left_out, s.kite_max_connections,
                        s.kite_tokens_per_connection)
        if first and not wanted:
            raise FatalIngestError("no instruments to subscribe")
        for n, slot in enumerate(slots):
            if n < len(self._connections):
                await self._connections[n].update(slot)
            else:
                conn = self._connection(f"kite-{n}", slot)
                await self.status.down(conn.name, "connecting")
                self._connections.append(conn)
                tg.create_task(conn.run(), name=conn.name)
        if first:
            await self.status.forget("instruments")
        self._stats.gauges["instruments"] = len(everything)
        self._stats.inc("master_loads")
        log.info("instrument master: %d instruments stored, %d subscribed on %d connection(s)",
                 len(everything), sum(map(len, slots)), len(slots))

    def _connection(self, name: str, subscriptions: dict[int, str]) -> KiteConnection:
        s = self._settings
        return KiteConnection(name, s.ws_url(), self._api_key, subscriptions, self._symbols,
                              self._writer, self._stats, self.tokens, self.status,
                              s.connection_policy())

    async def _load(self) -> list[master.Instrument]:
        """Fetch the dump; transport failures retry, a refused token waits for a new one."""
        s = self._settings
        attempt = 0
        while True:
            token = await self.tokens.usable()
            try:
                return await asyncio.to_thread(master.fetch_kite, s.api_url(), self._api_key,
                                               token.value)
            except master.TokenRefused as exc:
                await self.tokens.refuse(token, str(exc))
            except master.InstrumentsRejected as exc:
                raise FatalIngestError(str(exc)) from None
            except (requests.RequestException, OSError) as exc:
                attempt += 1
                self._stats.inc("master_retries")
                delay = backoff_s(attempt, s.reconnect_min_s, s.reconnect_max_s)
                log.warning("instruments from %s failed (%s); retrying in %.1f s",
                            s.api_url(), type(exc).__name__, delay)
                await asyncio.sleep(delay)
