"""Pacing: a token bucket per key (a Telegram chat, a bot, a sending phone number).

The core is pure: ``reserve`` books the next send on a bucket and says how long it must
wait; tokens may go negative, so concurrent callers queue in the order they booked.
``pause`` makes every later booking wait until a given moment (a 429's ``retry_after``).
``Pacer`` keeps the buckets of one process and sleeps on the event loop, so a burst for one
chat spreads out while sends on other keys go at once. Limits are per process: two notifiers
sending to one chat each keep their own pace. A paced send keeps its alert's slot in the
consumer loop (``notify_concurrency``) while it waits, so a burst to one chat longer than
the slots would hold up other alerts: storm control (``notify_max_per_minute``) keeps
bursts per user well below that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

# Buckets are forgotten when full again; the sweep runs when this many are held.
SWEEP_AT = 10_000


@dataclass(frozen=True, slots=True)
class Limit:
    key: str
    rate_per_s: float
    burst: float = 1.0  # bucket size: sends allowed at once after a quiet spell
    # Whether a 429 on a send under this limit holds the whole key: yes for a chat or a
    # sender number; not for a Telegram bot, whose other chats are not throttled with it.
    held_by_429: bool = True


@dataclass(frozen=True, slots=True)
class Bucket:
    tokens: float
    at_s: float


def refill(bucket: Bucket | None, now_s: float, limit: Limit) -> float:
    """Tokens in the bucket at ``now_s``."""
    if bucket is None:
        return limit.burst
    elapsed_s = max(now_s - bucket.at_s, 0.0)
    return min(limit.burst, bucket.tokens + elapsed_s * limit.rate_per_s)


def reserve(bucket: Bucket | None, now_s: float, limit: Limit) -> tuple[Bucket, float]:
    """Book one send at ``now_s``: the new bucket and the wait in seconds before sending."""
    tokens = refill(bucket, now_s, limit) - 1.0
    wait_s = 0.0 if tokens >= 0 else -tokens / limit.rate_per_s
    return Bucket(tokens, now_s), wait_s


def pause(bucket: Bucket | None, now_s: float, until_s: float, limit: Limit) -> Bucket:
    """The bucket such that the next booking made at ``now_s`` waits until ``until_s``
    (later bookings queue after it); never shortens a wait already booked."""
    ceiling = 1.0 - max(until_s - now_s, 0.0) * limit.rate_per_s
    return Bucket(min(refill(bucket, now_s, limit), ceiling), now_s)


def is_full(bucket: Bucket, now_s: float, limit: Limit) -> bool:
    return refill(bucket, now_s, limit) >= limit.burst


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._buckets: dict[str, tuple[Bucket, Limit]] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    async def wait(self, limits: Sequence[Limit]) -> float:
        """Wait for a slot on every limit; returns the seconds waited.

        Limits are taken one after the other, so the slot of a wide limit (the bot) is
        booked only once the narrow one (the chat) lets the send through, not wasted while
        the chat's queue drains.
        """
        waited_s = 0.0
        for limit in limits:
            now_s = self._clock()
            held = self._buckets.get(limit.key)
            bucket, wait_s = reserve(held[0] if held else None, now_s, limit)
            self._buckets[limit.key] = (bucket, limit)
            if wait_s > 0:
                await self._sleep(wait_s)
                waited_s += wait_s
        if len(self._buckets) >= SWEEP_AT:
            self._sweep()
        return waited_s

    def pause(self, limits: Sequence[Limit], seconds: float) -> None:
        """Hold every later send on these limits (those ``held_by_429``) for ``seconds``."""
        now_s = self._clock()
        for limit in (lim for lim in limits if lim.held_by_429):
            held = self._buckets.get(limit.key)
            self._buckets[limit.key] = (
                pause(held[0] if held else None, now_s, now_s + seconds, limit), limit)

    def _sweep(self) -> None:
        now_s = self._clock()
        self._buckets = {key: (bucket, limit) for key, (bucket, limit) in self._buckets.items()
                         if not is_full(bucket, now_s, limit)}
