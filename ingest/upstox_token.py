"""Where the Upstox access token comes from, and what happens when Upstox refuses it.

Candidates, in order: the token the dashboard's login flow stores in Redis
(``keys.feed_token("upstox")``: a plain string, or JSON with ``access_token``), then the
configured ``UPSTOX_ACCESS_TOKEN``. A token refused with HTTP 401 is never tried again by this
process; with no candidate left the feed is ``needs_login`` and ``usable()`` polls Redis until
a new token appears, so the feed resumes by itself. Token values never reach a log or a repr.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
import redis
import redis.asyncio as aredis

from ingest.feed_status import FeedStatus
from proto import keys

log = logging.getLogger("stormalert.ingest")

FEED = "upstox"
NO_TOKEN_REASON = "no Upstox access token: log in to Upstox through the dashboard"


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


class UpstoxTokens:
    def __init__(self, r: aredis.Redis, configured: str, status: FeedStatus, *,
                 poll_s: float) -> None:
        self._r = r
        self._configured = configured
        self._status = status
        self._poll_s = poll_s
        self._refused: set[str] = set()
        self._refusal = ""
        self._lock = asyncio.Lock()

    async def usable(self) -> str:
        """A token to authorize with; waits in ``needs_login`` while there is none."""
        async with self._lock:
            while True:
                stored = await self._stored()
                for token in (stored, self._configured):
                    if token and token not in self._refused:
                        return token  # needs_login holds until a connection is up with it
                await self._status.needs_login(self._refusal or NO_TOKEN_REASON)
                await asyncio.sleep(self._poll_s)

    async def refuse(self, token: str, reason: str) -> None:
        """Upstox answered 401 for this token: never use it again."""
        if token not in self._refused:
            self._refused.add(token)
            self._refusal = f"Upstox refused the access token (HTTP 401: {reason}): log in again"
            log.warning("Upstox refused an access token: %s", reason)

    async def _stored(self) -> str:
        try:
            return read_stored(await self._r.get(keys.feed_token(FEED)))
        except redis.RedisError as exc:
            log.warning("could not read the stored Upstox access token: %s", exc)
            return ""
