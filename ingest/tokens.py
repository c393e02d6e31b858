"""Where a broker access token comes from, and what happens when the broker refuses it.

Candidates, in order: the token the dashboard's login flow stores in Redis
(``keys.feed_token(feed)``: a plain string, or JSON with ``access_token``), then the
configured one. A token the broker refused (Kite: HTTP 403 / TokenException; Upstox: HTTP
401) or one past the daily expiry (Kite: 06:00 IST) is never tried again by this process.
When no candidate is left the feed is ``needs_login`` and ``usable()`` polls Redis every few
seconds until a new token appears. Token values never reach a log line, a state or a repr.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time as time_of_day

import orjson
import redis
import redis.asyncio as aredis

from ingest.clock import ist_text, next_daily
from ingest.feed_status import FeedStatus
from proto import keys

log = logging.getLogger("stormalert.ingest")

KITE = "kite"  # the sim speaks Kite's protocol and its login issues Kite-style tokens


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    source: str  # "redis" or "config"
    expires_at: float | None  # epoch s, None when this feed has no daily expiry


def read_stored(raw: str | bytes | None) -> str:
    """The token in the Redis value: a plain string, or JSON with ``access_token``."""
    text = (raw.decode() if isinstance(raw, bytes) else raw or "").strip()
    if text.startswith("{"):
        try:
            value = orjson.loads(text).get("access_token", "")
        except (orjson.JSONDecodeError, AttributeError):
            return ""
        return value.strip() if isinstance(value, str) else ""
    return text


class AccessTokens:
    def __init__(self, r: aredis.Redis, configured: str, status: FeedStatus, *,
                 poll_s: float, expiry: time_of_day | None, feed: str = KITE,
                 clock: Callable[[], float] = time.time) -> None:
        self._r = r
        self._key = keys.feed_token(feed)
        self._no_token = f"no access token: log in to {feed.capitalize()} through the dashboard"
        self._configured = configured
        self._status = status
        self._poll_s = poll_s
        self._expiry = expiry
        self._clock = clock
        self._refused: dict[str, str] = {}  # token -> why; kept only in memory
        self._last_stored = ""
        self._first_seen: dict[str, float] = {}
        self._lock = asyncio.Lock()

    async def usable(self) -> AccessToken:
        """A token to connect with; waits in ``needs_login`` while there is none."""
        async with self._lock:
            while True:
                token = await self._pick()
                if token is not None:
                    return token  # needs_login stays until a connection is up with it
                await asyncio.sleep(self._poll_s)

    async def refuse(self, token: AccessToken, reason: str) -> None:
        """Kite refused this token: never use it again; needs_login unless another is ready."""
        if token.value not in self._refused:
            self._refused[token.value] = f"{token.source} token: {reason}"
            log.warning("access token from %s refused: %s", token.source, reason)
        await self._status.needs_login(self._why())

    async def expire(self, token: AccessToken) -> None:
        when = ist_text(token.expires_at) if token.expires_at else "now"
        await self.refuse(token, f"access token expired at {when} (daily expiry)")

    async def _pick(self) -> AccessToken | None:
        stored = await self._stored()
        now = self._clock()
        for value, source in ((stored, "redis"), (self._configured, "config")):
            if not value or value in self._refused:
                continue
            expires_at = None
            if self._expiry is not None:
                first = self._first_seen.setdefault(value, now)
                expires_at = next_daily(first, self._expiry)
                if expires_at <= now:
                    self._refused[value] = f"{source} token expired at {ist_text(expires_at)}"
                    continue
            return AccessToken(value, source, expires_at)
        await self._status.needs_login(self._why())
        return None

    def _why(self) -> str:
        """Why there is no usable token, from the most preferred candidate that failed."""
        for value in (self._last_stored, self._configured):
            if value in self._refused:
                return self._refused[value]
        return self._no_token

    async def _stored(self) -> str:
        try:
            stored = read_stored(await self._r.get(self._key))
        except redis.RedisError as exc:
            log.warning("could not read the stored access token: %s", exc)
            return ""
        if stored:
            self._last_stored = stored
        return stored
