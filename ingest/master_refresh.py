"""The daily instrument master refresh both feeds run: wait for the configured IST time, refresh,
and after a failure keep the old master and try again with capped backoff until one succeeds
(then wait for the next day)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import time

import redis

from ingest.backoff import backoff_s
from ingest.clock import IST, ist_text, next_daily
from ingest.errors import FatalIngestError
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


async def refresh_daily(feed: str, at: time, refresh: Callable[[], Awaitable[None]],
                        stats: Stats, retry_min_s: float, retry_max_s: float,
                        clock: Callable[[], float]) -> None:
    """Run ``refresh`` every day at ``at`` (IST) until cancelled. ``refresh`` changes nothing
    when it raises (a rejected master, a configuration the new master breaks, Redis down),
    so the feed goes on with the old one meanwhile."""
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
