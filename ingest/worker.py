"""The ingest worker: load the instrument master, open the feed connections, write ticks to
the shard streams, publish the heartbeat ``sa:hb:ingest-<feed>``, drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis
import redis.asyncio as aredis
import requests

from ingest import instruments as master
from ingest.backoff import backoff_s
from ingest.kite_feed import KiteConnection, socket_url
from ingest.settings import IngestSettings
from ingest.writer import TickWriter
from proto.runtime import Stats, heartbeat_loop

log = logging.getLogger("stormalert.ingest")


class FatalIngestError(RuntimeError):
    """A configuration the worker cannot run with; the message is one line for the user."""


def process_name(settings: IngestSettings) -> str:
    return f"ingest-{settings.feed}"


async def load_instruments(settings: IngestSettings, stats: Stats) -> list[master.Instrument]:
    """Fetch the dump, retrying transport failures (the feed may be starting too)."""
    key, token = settings.credentials()
    attempt = 0
    while True:
        try:
            return await asyncio.to_thread(master.fetch_kite, settings.api_url(), key, token)
        except master.InstrumentsRejected as exc:
            raise FatalIngestError(str(exc)) from None
        except (requests.RequestException, OSError) as exc:
            attempt += 1
            stats.inc("master_retries")
            delay = backoff_s(attempt, settings.reconnect_min_s, settings.reconnect_max_s)
            log.warning("instruments from %s failed (%s); retrying in %.1f s",
                        settings.api_url(), type(exc).__name__, delay)
            await asyncio.sleep(delay)


def plan_connections(tokens: list[int], per_connection: int,
                     max_connections: int) -> tuple[list[list[int]], int]:
    """Tokens split over connections, and how many did not fit within the limits."""
    fit = tokens[: per_connection * max_connections]
    groups = [fit[i:i + per_connection] for i in range(0, len(fit), per_connection)]
    return groups, len(tokens) - len(fit)


async def run(settings: IngestSettings, r: aredis.Redis) -> None:
    name = process_name(settings)
    stats = Stats(name)
    stats.gauges.update(connected=0, subscribed=0, feed=settings.feed, shards=settings.shards)
    for counter in ("frames", "ticks", "decode_errors", "drops", "reconnects"):
        stats.inc(counter, 0)
    writer = TickWriter(r, stats, shards=settings.shards, batch_max=settings.batch_max,
                        flush_ms=settings.flush_ms, queue_max=settings.queue_max)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(heartbeat_loop(name, r, stats, settings.stats_interval_s),
                           name="heartbeat")
            connections = await _start_feed(settings, r, stats, writer)
            tg.create_task(writer.run(), name="tick-writer")
            for conn in connections:
                tg.create_task(conn.run(), name=conn.name)
    finally:
        await _drain(writer, settings.drain_timeout_s)


async def _start_feed(settings: IngestSettings, r: aredis.Redis, stats: Stats,
                      writer: TickWriter) -> list[KiteConnection]:
    everything = await load_instruments(settings, stats)
    await master.store(r, everything)
    chosen, unknown = master.select(everything, settings.kite_symbols, settings.kite_exchanges)
    if unknown:
        log.warning("not in the instrument master, not subscribed: %s", ", ".join(unknown[:20]))
    groups, left_out = plan_connections([i.token for i in chosen],
                                        settings.kite_tokens_per_connection,
                                        settings.kite_max_connections)
    if left_out:
        log.warning("%d instruments exceed %d connections x %d tokens and are not subscribed",
                    left_out, settings.kite_max_connections, settings.kite_tokens_per_connection)
    if not groups:
        raise FatalIngestError("no instruments to subscribe")
    log.info("instrument master: %d instruments stored, %d subscribed on %d connection(s)",
             len(everything), sum(map(len, groups)), len(groups))
    symbols = master.token_map(everything)
    url = socket_url(settings.ws_url(), *settings.credentials())
    return [KiteConnection(f"kite-{n}", url, group, settings.kite_mode, symbols, writer, stats,
                           silence_s=settings.heartbeat_silence_s,
                           reconnect_min_s=settings.reconnect_min_s,
                           reconnect_max_s=settings.reconnect_max_s,
                           connect_timeout_s=settings.connect_timeout_s)
            for n, group in enumerate(groups)]


async def _drain(writer: TickWriter, timeout_s: float) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        try:
            async with asyncio.timeout(timeout_s):
                written = await writer.drain()
            log.info("drained %d queued ticks", written)
        except (TimeoutError, redis.RedisError) as exc:
            log.warning("drain incomplete: %s", exc or type(exc).__name__)
