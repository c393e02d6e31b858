"""The ingest worker: load the instrument master, open the feed connections, write ticks to
the shard streams, publish the heartbeat ``sa:hb:ingest-<feed>``, drain on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis
import redis.asyncio as aredis

from ingest.errors import FatalIngestError
from ingest.kite_supervisor import KiteFeed
from ingest.settings import IngestSettings
from ingest.upstox_supervisor import UpstoxFeed
from ingest.writer import TickWriter
from proto.runtime import Stats, heartbeat_loop

log = logging.getLogger("stormalert.ingest")

__all__ = ["FatalIngestError", "process_name", "run"]


def process_name(settings: IngestSettings) -> str:
    return f"ingest-{settings.feed}"


async def run(settings: IngestSettings, r: aredis.Redis) -> None:
    name = process_name(settings)
    stats = Stats(name)
    stats.gauges.update(connected=0, subscribed=0, feed=settings.feed, shards=settings.shards)
    for counter in ("frames", "ticks", "decode_errors", "drops", "reconnects", "gaps",
                    "text_order", "text_error", "text_message"):
        stats.inc(counter, 0)
    writer = TickWriter(r, stats, shards=settings.shards, batch_max=settings.batch_max,
                        flush_ms=settings.flush_ms, queue_max_ticks=settings.queue_max_ticks)
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(heartbeat_loop(name, r, stats, settings.stats_interval_s),
                           name="heartbeat")
            tg.create_task(writer.run(), name="tick-writer")
            feed = (UpstoxFeed(settings, r, stats, writer) if settings.feed == "upstox"
                    else KiteFeed(settings, r, stats, writer))
            tg.create_task(feed.run(), name=f"{settings.feed}-feed")
    finally:
        await _drain(writer, settings.drain_timeout_s)


async def _drain(writer: TickWriter, timeout_s: float) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        try:
            async with asyncio.timeout(timeout_s):
                written = await writer.drain()
            log.info("drained %d queued ticks", written)
        except (TimeoutError, redis.RedisError) as exc:
            log.warning("drain incomplete: %s", exc or type(exc).__name__)
