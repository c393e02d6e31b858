"""A feed's state as status and the dashboard read it: the hash ``keys.feed_state(feed)``
(``state``, ``reason``, ``since``) and the same three values in the heartbeat's gauges.

States: ``connected`` (every connection is up), ``reconnecting`` (one is down; the reason
says which and why), ``needs_login`` (the broker refused or expired the access token: nothing
reconnects until a new token is stored), ``stopped`` (the worker shut down).
Only changes are written, each with the time it happened.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import redis
import redis.asyncio as aredis

from proto import keys
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")

CONNECTED = "connected"
RECONNECTING = "reconnecting"
NEEDS_LOGIN = "needs_login"
STOPPED = "stopped"
STARTING_REASON = "starting"


class FeedStatus:
    def __init__(self, r: aredis.Redis, feed: str, stats: Stats,
                 clock: Callable[[], float] = time.time) -> None:
        self._r = r
        self._key = keys.feed_state(feed)
        self._stats = stats
        self._clock = clock
        self._up: set[str] = set()
        self._down: dict[str, str] = {}
        self._login_reason: str | None = None
        self._shown: tuple[str, str] | None = None

    @property
    def state(self) -> str:
        return self._shown[0] if self._shown else RECONNECTING

    async def up(self, connection: str) -> None:
        self._login_reason = None  # a connection is up: whatever token it used is good
        self._down.pop(connection, None)
        self._up.add(connection)
        await self._publish()

    async def down(self, connection: str, reason: str) -> None:
        self._up.discard(connection)
        self._down[connection] = reason
        await self._publish()

    async def forget(self, part: str) -> None:
        """A part that no longer counts (a startup step that finished)."""
        self._up.discard(part)
        self._down.pop(part, None)
        await self._publish()

    async def needs_login(self, reason: str) -> None:
        self._login_reason = reason
        await self._publish()

    async def stopped(self) -> None:
        await self._write(STOPPED, "ingest stopped")

    async def _publish(self) -> None:
        if self._login_reason is not None:
            await self._write(NEEDS_LOGIN, self._login_reason)
        elif self._down:
            name, reason = next(reversed(self._down.items()))
            await self._write(RECONNECTING, f"{name}: {reason}")
        elif self._up:
            await self._write(CONNECTED, f"{len(self._up)} connection(s) up")
        else:
            await self._write(RECONNECTING, STARTING_REASON)

    async def _write(self, state: str, reason: str) -> None:
        if self._shown == (state, reason):
            return
        self._shown = (state, reason)
        since = self._clock()
        self._stats.gauges.update(feed_state=state, feed_reason=reason, feed_since=since)
        (log.warning if state == NEEDS_LOGIN else log.info)("feed state %s: %s", state, reason)
        try:
            await self._r.hset(self._key, mapping={"state": state, "reason": reason,
                                                   "since": f"{since:.3f}"})
        except redis.RedisError as exc:
            log.warning("could not store the feed state: %s", exc)
