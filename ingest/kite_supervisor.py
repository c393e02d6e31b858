"""The Kite feed as a whole: the access token, the instrument master (loaded at start and
refreshed daily), the connections it plans from the configuration, and the feed's state.

A refresh stores the master in ``sa:instruments`` (dropping instruments that left it),
updates the token -> symbol map the decoders read (live, in place), and subscribes new
instruments that match the configuration on the running connections, opening another
connection when they are full and the limit allows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import redis.asyncio as aredis

from ingest import instruments as master
from ingest.errors import FatalIngestError
from ingest.feed_supervisor import FeedSupervisor
from ingest.kite_feed import KiteConnection
from ingest.kite_plan import mode_for, rebalance
from ingest.settings import IngestSettings
from ingest.tokens import AccessTokens
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


KitePlan = tuple[list[master.Instrument], dict[int, str]]  # the master, token -> mode


class KiteFeed(FeedSupervisor[KitePlan]):
    def __init__(self, settings: IngestSettings, r: aredis.Redis, stats: Stats,
                 writer: TickWriter, clock: Callable[[], float] = time.time) -> None:
        super().__init__(settings.feed, settings, r, stats, writer, clock,
                         settings.kite_instruments_refresh_at)
        self._api_key, configured = settings.credentials()
        expiry = settings.kite_token_expiry if settings.feed == "kite" else None
        self.tokens = AccessTokens(r, configured, self.status, poll_s=settings.kite_token_poll_s,
                                   expiry=expiry, clock=clock, app_key=self._api_key)
        self._symbols: dict[int, str] = {}
        self._slots: list[dict[int, str]] = []  # token -> mode of each connection

    async def _plan(self) -> KitePlan:
        """The master and the mode of every instrument the configuration selects from it."""
        s = self._settings
        everything = await self._load()
        chosen, unknown = master.select(everything, s.kite_symbols, s.kite_exchanges)
        if unknown:
            log.warning("not in the instrument master, not subscribed: %s",
                        ", ".join(unknown[:20]))
        if not chosen:
            raise FatalIngestError("no instruments to subscribe")
        return everything, {i.token: mode_for(i.symbol, s.kite_modes, s.kite_mode)
                            for i in chosen}

    async def _apply(self, tg: asyncio.TaskGroup, plan: KitePlan) -> None:
        s = self._settings
        everything, wanted = plan
        await master.store(self._r, everything)
        await self._forget_left({i.symbol for i in everything})
        self._symbols.update(master.token_map(everything))
        slots, left_out = rebalance(self._slots, wanted, s.kite_tokens_per_connection,
                                    s.kite_max_connections)
        if left_out:
            log.warning("%d instruments exceed %d connections x %d tokens and are not "
                        "subscribed", left_out, s.kite_max_connections,
                        s.kite_tokens_per_connection)
        await self._place(tg, slots, self._connection)
        self._slots = slots
        self._stats.gauges["instruments"] = len(everything)
        self._stats.inc("master_loads")
        log.info("instrument master: %d instruments stored, %d subscribed on %d connection(s)",
                 len(everything), sum(map(len, slots)), len(slots))

    def _connection(self, n: int, subscriptions: dict[int, str]) -> KiteConnection:
        s = self._settings
        return KiteConnection(f"kite-{n}", s.ws_url(), subscriptions, self._symbols,
                              self._writer, self._stats, self.tokens, self.status,
                              s.connection_policy())

    async def _load(self) -> list[master.Instrument]:
        """Fetch the dump; transport failures retry, a refused token waits for a new one."""
        api_url = self._settings.api_url()

        async def fetch() -> list[master.Instrument]:
            while True:
                token = await self.tokens.usable()
                try:
                    return await asyncio.to_thread(master.fetch_kite, api_url, token.api_key,
                                                   token.value)
                except master.TokenRefused as exc:
                    await self.tokens.refuse(token, str(exc))
                except master.InstrumentsRejected as exc:
                    raise FatalIngestError(str(exc)) from None

        return await self._retrying(fetch, api_url)
