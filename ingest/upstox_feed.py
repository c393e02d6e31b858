"""The Upstox Market Data Feed V3 connections: authorize over REST (on every connect: the URL
it returns works once), open that WebSocket URL, subscribe (JSON in binary frames), read
protobuf frames into the writer; HTTP 401 means ``needs_login`` until a new token. The
lifecycle (watchdog, reconnect with backoff, resubscribe) is ``ingest.feed_connection``'s.

Liveness: Upstox sends no application heartbeat, only WebSocket pings, and a quiet market
sends no data. So the connection ``PROBES``: when no frame came for half the silence window
it pings, and a socket is dead only when neither a frame nor a pong arrived for ``silence_s``.

Decoding is ``ingest.upstox.decode_frame``; this module only moves frames.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping, Sequence

import orjson
import redis
import redis.asyncio as aredis
import requests
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ingest import upstox
from ingest.backoff import ConnectionPolicy
from ingest.feed_connection import ConnectFailed, FeedConnection, TokenRefusal
from ingest.feed_status import FeedStatus
from ingest.tokens import AccessToken, AccessTokens
from ingest.writer import TickWriter
from proto import keys
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")

AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"
USER_AGENT = "stormalert-ingest"
KEYS_PER_REQUEST = 1000
# Keys one connection may carry per mode (Upstox V3 limits; full_d30 per its Plus plan).
MODE_LIMITS = {"ltpc": 5000, "option_greeks": 3000, "full": 2000, "full_d30": 50}


class TokenRefused(Exception):
    """Authorize answered HTTP 401: the access token is invalid or expired."""


class AuthorizeFailed(ConnectFailed):
    """Authorize failed in a way a later retry may not (HTTP error, unexpected body)."""


def plan_connections(instrument_keys: Sequence[str], mode: str,
                     connections: int) -> list[list[str]]:
    """Keys split evenly over at most ``connections`` sockets within the mode's limit.
    Raises ValueError with a message for the user when they do not fit."""
    limit = _check_fits(len(instrument_keys), mode, connections)
    count = min(connections, max(1, -(-len(instrument_keys) // limit)))
    return [list(instrument_keys[n::count]) for n in range(count) if instrument_keys[n::count]]


def rebalance_keys(current: Sequence[Sequence[str]], wanted: Sequence[str], mode: str,
                   connections: int) -> list[list[str]]:
    """The keys of each connection after the wanted set changed (a master refresh): keys stay
    on the connection they are on, keys no longer wanted leave, and new ones fill free room
    first on the existing connections, then on new ones. Raises ValueError as
    ``plan_connections`` does when they do not fit."""
    limit = _check_fits(len(set(wanted)), mode, connections)
    want = dict.fromkeys(wanted)
    slots = [[k for k in keys if k in want] for keys in current]
    placed = {k for slot in slots for k in slot}
    new = [k for k in want if k not in placed]
    for slot in slots:
        room = max(limit - len(slot), 0)
        slot.extend(new[:room])
        new = new[room:]
    slots.extend(new[start:start + limit] for start in range(0, len(new), limit))
    return slots


def _check_fits(count: int, mode: str, connections: int) -> int:
    """The mode's per-connection limit; ValueError when ``count`` keys exceed it in total."""
    limit = MODE_LIMITS[mode]
    if count > limit * connections:
        raise ValueError(
            f"{count} instruments exceed the Upstox limit for mode {mode!r}: "
            f"{limit} per connection x {connections} connection(s); narrow "
            f"STORMALERT_UPSTOX_INSTRUMENT_KEYS / STORMALERT_UPSTOX_EXCHANGES or pick a lighter "
            f"mode")
    return limit


def subscribe_messages(instrument_keys: Sequence[str], mode: str) -> list[bytes]:
    """The ``sub`` requests to send after (re)connecting, as binary frame payloads."""
    chunks = [list(instrument_keys[i:i + KEYS_PER_REQUEST])
              for i in range(0, len(instrument_keys), KEYS_PER_REQUEST)]
    return [orjson.dumps({"guid": uuid.uuid4().hex, "method": "sub",
                          "data": {"mode": mode, "instrumentKeys": chunk}}) for chunk in chunks]


def change_messages(old: Sequence[str], new: Sequence[str], mode: str) -> list[bytes]:
    """What a live connection sends to go from the keys ``old`` to ``new``."""
    kept, before = set(new), set(old)
    gone = [k for k in old if k not in kept]
    chunks = [gone[i:i + KEYS_PER_REQUEST] for i in range(0, len(gone), KEYS_PER_REQUEST)]
    return [orjson.dumps({"guid": uuid.uuid4().hex, "method": "unsub",
                          "data": {"instrumentKeys": chunk}}) for chunk in chunks] + \
        subscribe_messages([k for k in new if k not in before], mode)


def authorize(api_url: str, token: str, timeout_s: float) -> str:
    """The single-use feed URL (blocking: run it in a thread).

    Raises TokenRefused on 401, AuthorizeFailed on other HTTP errors or a body without the
    URL, and lets transport errors (``requests`` exceptions are ``OSError``) through.
    """
    resp = requests.get(api_url.rstrip("/") + AUTHORIZE_PATH, timeout=timeout_s,
                        headers={"Authorization": f"Bearer {token}",
                                 "Accept": "application/json", "User-Agent": USER_AGENT})
    if resp.status_code == 401:
        raise TokenRefused(_error_text(resp))
    if resp.status_code >= 400:
        raise AuthorizeFailed(f"authorize answered HTTP {resp.status_code}: {_error_text(resp)}")
    try:
        data = resp.json()["data"]
        url = data.get("authorized_redirect_uri") or data.get("authorizedRedirectUri")
    except (ValueError, KeyError, TypeError, AttributeError):
        url = None
    if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
        raise AuthorizeFailed(f"authorize answered without a WebSocket URL: {resp.text[:200]!r}")
    return url


def _error_text(resp: requests.Response) -> str:
    try:
        errors = resp.json().get("errors") or []
        return "; ".join(str(e.get("message")) for e in errors) or resp.reason
    except (ValueError, AttributeError):
        return resp.reason or f"HTTP {resp.status_code}"


class UpstoxConnection(FeedConnection):
    """One feed WebSocket; ``run`` keeps it up until cancelled."""

    PROBES = True  # no application heartbeat: a pong to our ping is the sign of life
    SILENCE_TEXT = "no data and no pong"

    def __init__(self, name: str, api_url: str, instrument_keys: Sequence[str], mode: str,
                 symbols: Mapping[str, str], writer: TickWriter, stats: Stats,
                 r: aredis.Redis, tokens: AccessTokens, status: FeedStatus,
                 policy: ConnectionPolicy) -> None:
        super().__init__(name, writer, stats, tokens, status, policy)
        self._api_url = api_url
        self._keys = list(instrument_keys)
        self._mode = mode
        self._symbols = symbols
        self._r = r

    @property
    def instrument_keys(self) -> list[str]:
        return list(self._keys)

    async def update(self, instrument_keys: Sequence[str]) -> None:
        """New keys: (un)subscribed at once when connected, else on the next connect."""
        if list(instrument_keys) == self._keys:
            return
        old, self._keys = self._keys, list(instrument_keys)
        await self._change(len(old), change_messages(old, self._keys, self._mode))
        log.info("%s: subscriptions updated, %d keys", self.name, len(self._keys))

    async def _connect(self, token: AccessToken) -> str:
        """Authorize (a fresh single-use URL each time), then the session on that URL."""
        timeout_s = self._policy.connect_timeout_s
        try:
            url = await asyncio.to_thread(authorize, self._api_url, token.value, timeout_s)
            async with connect(url, open_timeout=timeout_s, ping_interval=None,
                               max_size=2**24, close_timeout=2,
                               user_agent_header=USER_AGENT) as ws:
                await self._session(ws)
        except TokenRefused as exc:
            raise TokenRefusal(f"Upstox refused the access token (HTTP 401: {exc})") from None
        except InvalidStatus as exc:
            raise ConnectFailed(f"feed URL refused: HTTP {exc.response.status_code}") from None
        return "server closed the connection"

    def _subscribe_messages(self) -> list[bytes]:
        return subscribe_messages(self._keys, self._mode)

    def _subscribed(self) -> int:
        return len(self._keys)

    def _describe_subscriptions(self) -> str:
        return f"subscribed {len(self._keys)} keys in {self._mode} mode"

    async def _frame(self, message: bytes, recv_us: int) -> None:
        try:
            decoded = upstox.decode_frame(message, recv_us, self._symbols)
        except upstox.UpstoxDecodeError as exc:
            self._decode_error(len(message), exc)
            return
        if decoded.ticks:
            self._stats.inc("ticks", len(decoded.ticks))
            self._writer.offer(decoded.ticks)
        elif decoded.market_status:
            await self._market_status(decoded.market_status)

    async def _market_status(self, status: dict[str, str]) -> None:
        log.info("%s: market status %s", self.name,
                 ", ".join(f"{k}={v}" for k, v in sorted(status.items())))
        try:
            await self._r.hset(keys.MARKET_STATUS, mapping=status)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            log.warning("%s: could not store the market status: %s", self.name, exc)
