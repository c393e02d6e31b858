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
    api_key: str = ""  # the Kite app it was issued for, when the login said; else configured


def read_stored(raw: str | bytes | None) -> str:
    """The token in the Redis value: a plain string, or JSON with ``access_token``."""
    return read_stored_record(raw)[0]


def read_stored_record(raw: str | bytes | None) -> tuple[str, str]:
    """(token, api_key) from the Redis value: a plain string (no key), or JSON with
    ``access_token`` and, from the dashboard's Kite login, the ``api_key`` it was issued for."""
    text = (raw.decode() if isinstance(raw, bytes) else raw or "").strip()
    if not text.startswith("{"):
        return text, ""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(record, dict):
        return "", ""
    value, key = record.get("access_token", ""), record.get("api_key", "")
    return (value.strip() if isinstance(value, str) else "",
            key.strip() if isinstance(key, str) else "")


class AccessTokens:
    def __init__(self, r: aredis.Redis, configured: str, status: FeedStatus, *,
                 poll_s: float, expiry: time_of_day | None, feed: str = KITE,
                 clock: Callable[[], float] = time.time, app_key: str | None = None) -> None:
        """``app_key``: for a feed that connects as an app (Kite), the configured app key
        ("" when none is): a token with neither its own key nor this one is not usable."""
        self._r = r
        self._app_key = app_key
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
        stored, stored_key = await self._stored()
        now = self._clock()
        for value, source, api_key in ((stored, "redis", stored_key),
                                       (self._configured, "config", "")):
            if not value or value in self._refused:
                continue
            expires_at = None
            if self._expiry is not None:
                first = self._first_seen.setdefault(value, now)
                expires_at = next_daily(first, self._expiry)
                if expires_at <= now:
                    self._refused[value] = f"{source} token expired at {ist_text(expires_at)}"
                    continue
            if self._app_key is not None and not (api_key or self._app_key):
                self._refused[value] = (f"{source} token: no Kite API key to connect with "
                                        "(log in through the dashboard, which stores the "
                                        "app's key with the token, or set KITE_API_KEY)")
                continue
            return AccessToken(value, source, expires_at, api_key or self._app_key or "")
        await self._status.needs_login(self._why())
        return None

    def _why(self) -> str:
        """Why there is no usable token, from the most preferred candidate that failed."""
        for value in (self._last_stored, self._configured):
            if value in self._refused:
                return self._refused[value]
        return self._no_token

    async def _stored(self) -> tuple[str, str]:
        try:
            stored, api_key = read_stored_record(await self._r.get(self._key))
        except redis.RedisError as exc:
            log.warning("could not read the stored access token: %s", exc)
            return "", ""
        if stored:
            self._last_stored = stored
        return stored, api_key
