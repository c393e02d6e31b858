"""Reconnect delays: capped exponential backoff with jitter, and the connection policy both
feeds' connections share."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")


def backoff_s(attempt: int, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The delay before reconnect ``attempt`` (1 = first retry): ``min_s * 2**(attempt-1)``
    capped at ``max_s``, then scaled by a random factor in [0.5, 1] so that many clients
    dropped together do not return together."""
    base = min(max_s, min_s * 2 ** min(max(attempt - 1, 0), 30))
    return base * (rng or random).uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """How a feed connection watches and re-opens its socket."""

    silence_s: float  # no data (and, where the feed pings, no pong) this long: a dead socket
    reconnect_min_s: float
    reconnect_max_s: float
    connect_timeout_s: float

    async def pause(self, name: str, attempt: int, started: float, stats: Stats) -> int:
        """Count a reconnect and wait before it; returns this attempt's number. A connection
        that had stayed up longer than the backoff cap starts the count over."""
        attempt = 1 if time.monotonic() - started > self.reconnect_max_s else attempt + 1
        delay = backoff_s(attempt, self.reconnect_min_s, self.reconnect_max_s)
        stats.inc("reconnects")
        log.info("%s: reconnecting in %.2f s (attempt %d)", name, delay, attempt)
        await asyncio.sleep(delay)
        return attempt
