"""The Upstox Market Data Feed V3 connections: authorize over REST, open the single-use
WebSocket URL it returns, subscribe (JSON in binary frames), read protobuf frames into the
writer, watch for silence, reconnect with capped backoff and jitter (each time with a fresh
authorize: the URL works once), and stop in ``needs_login`` on HTTP 401 until a new token.

Liveness: Upstox sends no application heartbeat, only WebSocket pings, and a quiet market
sends no data. So when no frame came for half the silence window we send a ping of our own;
a socket is dead only when neither a data frame nor a pong arrived for ``silence_s``.

Decoding is ``ingest.upstox.decode_frame``; this module only moves frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence

import orjson
import redis
import redis.asyncio as aredis
import requests
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ingest import upstox
from ingest.backoff import ConnectionPolicy
from ingest.feed_status import FeedStatus
from ingest.tokens import AccessTokens
from ingest.writer import TickWriter
from proto import keys
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")

AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"
USER_AGENT = "stormalert-ingest"
MAX_LOGGED_DECODE_ERRORS = 20
KEYS_PER_REQUEST = 1000
# Keys one connection may carry per mode (Upstox V3 limits; full_d30 per its Plus plan).
MODE_LIMITS = {"ltpc": 5000, "option_greeks": 3000, "full": 2000, "full_d30": 50}


class TokenRefused(Exception):
    """Authorize answered HTTP 401: the access token is invalid or expired."""


class AuthorizeFailed(Exception):
    """Authorize failed in a way a later retry may not (HTTP error, unexpected body)."""


class FeedSilence(Exception):
    """Neither data nor a pong for longer than the watchdog allows."""


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


class UpstoxConnection:
    """One feed WebSocket; ``run`` keeps it up until cancelled."""

    def __init__(self, name: str, api_url: str, instrument_keys: Sequence[str], mode: str,
                 symbols: Mapping[str, str], writer: TickWriter, stats: Stats,
                 r: aredis.Redis, tokens: AccessTokens, status: FeedStatus,
                 policy: ConnectionPolicy) -> None:
        self.name = name
        self._api_url = api_url
        self._keys = list(instrument_keys)
        self._mode = mode
        self._symbols = symbols
        self._writer = writer
        self._stats = stats
        self._r = r
        self._tokens = tokens
        self._status = status
        self._policy = policy
        self._alive_at = 0.0
        self._ws: ClientConnection | None = None
        self._last_frame: float | None = None  # monotonic time of the last data frame

    @property
    def instrument_keys(self) -> list[str]:
        return list(self._keys)

    async def update(self, instrument_keys: Sequence[str]) -> None:
        """New keys: (un)subscribed at once when connected, else on the next connect."""
        old, self._keys = self._keys, list(instrument_keys)
        ws = self._ws
        if ws is None:
            return
        self._gauge("subscribed", len(self._keys) - len(old))
        try:
            for message in change_messages(old, self._keys, self._mode):
                await ws.send(message)
        except ConnectionClosed:
            pass  # the reconnect subscribes everything anyway
        log.info("%s: subscriptions updated, %d keys", self.name, len(self._keys))

    async def run(self) -> None:
        attempt = 0
        while True:
            token = await self._tokens.usable()
            started = time.monotonic()
            try:
                url = await asyncio.to_thread(authorize, self._api_url, token.value,
                                              self._policy.connect_timeout_s)
                async with connect(url, open_timeout=self._policy.connect_timeout_s,
                                   ping_interval=None, max_size=2**24, close_timeout=2,
                                   user_agent_header=USER_AGENT) as ws:
                    await self._session(ws)
                reason = "server closed the connection"
            except TokenRefused as exc:
                await self._tokens.refuse(
                    token, f"Upstox refused the access token (HTTP 401: {exc})")
                attempt = 0
                continue
            except InvalidStatus as exc:
                reason = f"feed URL refused: HTTP {exc.response.status_code}"
            except FeedSilence:
                self._stats.inc("silences")
                reason = f"no data and no pong for {self._policy.silence_s:.1f} s"
            except AuthorizeFailed as exc:
                reason = str(exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                reason = str(exc) or type(exc).__name__
            log.warning("%s: %s", self.name, reason)
            await self._status.down(self.name, reason)
            attempt = await self._policy.pause(self.name, attempt, started, self._stats)

    async def _session(self, ws: ClientConnection) -> None:
        # Published before subscribing: an update() meanwhile sends its change on this socket.
        self._ws = ws
        self._gauge("connected", 1)
        self._gauge("subscribed", len(self._keys))
        try:
            for message in subscribe_messages(self._keys, self._mode):
                await ws.send(message)
            await self._status.up(self.name)
            log.info("%s: connected, subscribed %d keys in %s mode", self.name,
                     len(self._keys), self._mode)
            await self._read(ws)
        finally:
            self._ws = None
            self._gauge("connected", -1)
            self._gauge("subscribed", -len(self._keys))

    async def _read(self, ws: ClientConnection) -> None:
        stats, writer, symbols = self._stats, self._writer, self._symbols
        self._alive_at = time.monotonic()
        first = True
        while True:
            try:
                async with asyncio.timeout(self._policy.silence_s / 2):
                    message = await ws.recv()
            except TimeoutError:
                if time.monotonic() - self._alive_at > self._policy.silence_s:
                    ws.transport.abort()  # dead: no close handshake to wait for
                    raise FeedSilence from None
                await self._probe(ws)
                continue
            recv_us = time.time_ns() // 1000
            if first:
                first = False
                self._count_gap()
            self._alive_at = self._last_frame = time.monotonic()
            if isinstance(message, str):
                message = message.encode()  # Upstox sends none; decode whatever it is
            stats.inc("frames")
            try:
                decoded = upstox.decode_frame(message, recv_us, symbols)
            except upstox.UpstoxDecodeError as exc:
                stats.inc("decode_errors")
                if stats.counters["decode_errors"] <= MAX_LOGGED_DECODE_ERRORS:
                    log.warning("%s: dropped a %d-byte frame: %s", self.name, len(message), exc)
                continue
            if decoded.ticks:
                stats.inc("ticks", len(decoded.ticks))
                writer.offer(decoded.ticks)
            elif decoded.market_status:
                await self._market_status(decoded.market_status)

    def _count_gap(self) -> None:
        """After a reconnect: how long the feed was without data."""
        if self._last_frame is None:
            return
        gap_ms = round((time.monotonic() - self._last_frame) * 1000)
        self._stats.inc("gaps")
        self._stats.inc("gap_ms", gap_ms)
        gauges = self._stats.gauges
        gauges["last_gap_ms"] = gap_ms
        gauges["max_gap_ms"] = max(gauges.get("max_gap_ms", 0), gap_ms)
        log.info("%s: data again after a %d ms gap", self.name, gap_ms)

    async def _probe(self, ws: ClientConnection) -> None:
        """Ping; a pong counts as life. A dead socket never answers and the watchdog fires."""
        pong = await ws.ping()
        pong.add_done_callback(self._on_pong)  # type: ignore[attr-defined]

    def _on_pong(self, future: asyncio.Future[float]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._alive_at = time.monotonic()

    async def _market_status(self, status: dict[str, str]) -> None:
        log.info("%s: market status %s", self.name,
                 ", ".join(f"{k}={v}" for k, v in sorted(status.items())))
        try:
            await self._r.hset(keys.MARKET_STATUS, mapping=status)  # type: ignore[arg-type]
        except redis.RedisError as exc:
            log.warning("%s: could not store the market status: %s", self.name, exc)

    def _gauge(self, name: str, delta: int) -> None:
        gauges = self._stats.gauges
        gauges[name] = gauges.get(name, 0) + delta
