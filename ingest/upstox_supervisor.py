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
import logging
import time
from collections.abc import Callable

import redis.asyncio as aredis

from ingest import upstox
from ingest import upstox_master as master
from ingest.errors import FatalIngestError
from ingest.feed_supervisor import FeedSupervisor
from ingest.settings import IngestSettings
from ingest.tokens import AccessTokens
from ingest.upstox_feed import UpstoxConnection, plan_connections, rebalance_keys
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


UpstoxPlan = tuple[list[master.UpstoxInstrument], list[list[str]]]  # the master, keys per socket


class UpstoxFeed(FeedSupervisor[UpstoxPlan]):
    def __init__(self, settings: IngestSettings, r: aredis.Redis, stats: Stats,
                 writer: TickWriter, clock: Callable[[], float] = time.time) -> None:
        super().__init__("upstox", settings, r, stats, writer, clock,
                         settings.upstox_instruments_refresh_at)
        self.tokens = AccessTokens(r, settings.upstox_access_token.get_secret_value(),
                                   self.status, poll_s=settings.upstox_token_poll_s,
                                   expiry=None, feed="upstox")
        self._symbols: dict[str, str] = {}  # instrument key -> symbol, shared by connections
        self._slots: list[list[str]] = []  # the keys of each connection

    async def run(self) -> None:
        upstox.backend_is_fast()
        await super().run()

    async def _plan(self) -> UpstoxPlan:
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
            if not self._slots:
                return everything, plan_connections(wanted, s.upstox_mode, s.upstox_connections)
            return everything, rebalance_keys(self._slots, wanted, s.upstox_mode,
                                              s.upstox_connections)
        except ValueError as exc:
            raise FatalIngestError(str(exc)) from None

    async def _apply(self, tg: asyncio.TaskGroup, plan: UpstoxPlan) -> None:
        everything, groups = plan
        await self._store(everything)
        await self._place(tg, groups, self._connection)
        self._slots = groups
        self._stats.gauges["instruments"] = len(everything)
        self._stats.inc("master_loads")
        log.info("Upstox instrument master: %d instruments stored, %d subscribed in %s mode "
                 "on %d connection(s)", len(everything), sum(map(len, groups)),
                 self._settings.upstox_mode, len(groups))

    async def _store(self, everything: list[master.UpstoxInstrument]) -> None:
        """The master into Redis and into the live key -> symbol map."""
        await master.store(self._r, everything)
        await self._forget_left({i.symbol for i in everything})
        symbols = {i.key: i.symbol for i in everything}
        for key in self._symbols.keys() - symbols.keys():
            del self._symbols[key]
        self._symbols.update(symbols)

    def _connection(self, n: int, keys: list[str]) -> UpstoxConnection:
        s = self._settings
        return UpstoxConnection(f"upstox-{n}", s.upstox_api_url, keys, s.upstox_mode,
                                self._symbols, self._writer, self._stats, self._r, self.tokens,
                                self.status, s.connection_policy())

    async def _load(self) -> list[master.UpstoxInstrument]:
        """Fetch the master; transport failures and 5xx retry with backoff."""
        url = self._settings.upstox_instruments_url

        async def fetch() -> list[master.UpstoxInstrument]:
            try:
                return await asyncio.to_thread(master.fetch, url)
            except master.MasterRejected as exc:
                raise FatalIngestError(str(exc)) from None

        return await self._retrying(fetch, url)
