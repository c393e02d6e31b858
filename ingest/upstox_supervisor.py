"""The Upstox feed as a whole: the instrument master, the connections planned within the
per-mode limits, the access token shared by the connections, and the feed's state."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aredis

from ingest import upstox
from ingest import upstox_master as master
from ingest.backoff import backoff_s
from ingest.errors import FatalIngestError
from ingest.feed_status import FeedStatus
from ingest.settings import IngestSettings
from ingest.tokens import AccessTokens
from ingest.upstox_feed import UpstoxConnection, plan_connections
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


class UpstoxFeed:
    def __init__(self, settings: IngestSettings, r: aredis.Redis, stats: Stats,
                 writer: TickWriter) -> None:
        self._settings = settings
        self._r = r
        self._stats = stats
        self._writer = writer
        self.status = FeedStatus(r, "upstox", stats)
        self.tokens = AccessTokens(r, settings.upstox_access_token.get_secret_value(),
                                   self.status, poll_s=settings.upstox_token_poll_s,
                                   expiry=None, feed="upstox")

    async def run(self) -> None:
        s = self._settings
        upstox.backend_is_fast()
        try:
            await self.status.down("instruments", "loading the instrument master")
            everything = await self._load()
            await master.store(self._r, everything)
            chosen, unknown = master.select(everything, s.upstox_instrument_keys,
                                            s.upstox_exchanges)
            if unknown:
                log.warning("not in the Upstox instrument master, not subscribed: %s",
                            ", ".join(unknown[:20]))
            if not chosen:
                raise FatalIngestError("no Upstox instruments to subscribe")
            try:
                groups = plan_connections([i.key for i in chosen], s.upstox_mode,
                                          s.upstox_connections)
            except ValueError as exc:
                raise FatalIngestError(str(exc)) from None
            symbols = {i.key: i.symbol for i in everything}
            self._stats.gauges["instruments"] = len(everything)
            log.info("Upstox instrument master: %d instruments stored, %d subscribed in %s "
                     "mode on %d connection(s)", len(everything), len(chosen), s.upstox_mode,
                     len(groups))
            async with asyncio.TaskGroup() as tg:
                for n, group in enumerate(groups):
                    conn = self._connection(f"upstox-{n}", group, symbols)
                    await self.status.down(conn.name, "connecting")
                    tg.create_task(conn.run(), name=conn.name)
                await self.status.forget("instruments")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.status.stopped())

    def _connection(self, name: str, keys: list[str],
                    symbols: dict[str, str]) -> UpstoxConnection:
        s = self._settings
        return UpstoxConnection(name, s.upstox_api_url, keys, s.upstox_mode, symbols,
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
