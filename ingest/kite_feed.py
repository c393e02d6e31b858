"""The Kite ticker connection lifecycle: connect with the current access token, subscribe per
mode group, read frames into the writer, watch for heartbeat silence, reconnect with capped
exponential backoff and jitter, and resubscribe.

A 403 on the handshake means Kite refused the access token: the connection hands the token
back to ``AccessTokens`` (the feed becomes ``needs_login``) and waits for a new one instead of
retrying. The token's daily expiry ends a session the same way. Decoding is
``ingest.kite.decode``; this module only moves frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from urllib.parse import urlencode

import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ingest import kite
from ingest.backoff import ConnectionPolicy
from ingest.feed_status import FeedStatus
from ingest.kite_plan import change_messages, subscribe_messages
from ingest.kite_text import KiteTextError, describe_order, parse_text
from ingest.tokens import AccessToken, AccessTokens
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")
# websockets logs the request line, access token included, at DEBUG: keep it above that.
ws_log = logging.getLogger("stormalert.ingest.ws")
ws_log.setLevel(logging.INFO)

USER_AGENT = "stormalert-ingest"
MAX_LOGGED_DECODE_ERRORS = 20
TOKEN_REFUSED = 403
MAX_REASON = 200


class HeartbeatSilence(Exception):
    """No frame, not even a heartbeat, for longer than the watchdog allows."""


def socket_url(ws_url: str, api_key: str, access_token: str) -> str:
    sep = "&" if "?" in ws_url else "?"
    return f"{ws_url}{sep}{urlencode({'api_key': api_key, 'access_token': access_token})}"


class KiteConnection:
    """One ticker WebSocket carrying up to 3000 tokens; ``run`` keeps it up until cancelled."""

    def __init__(self, name: str, ws_url: str, api_key: str, subscriptions: Mapping[int, str],
                 symbols: Mapping[int, str], writer: TickWriter, stats: Stats,
                 tokens: AccessTokens, status: FeedStatus, policy: ConnectionPolicy) -> None:
        self.name = name
        self._url = ws_url
        self._api_key = api_key
        self._subs = dict(subscriptions)
        self._symbols = symbols
        self._writer = writer
        self._stats = stats
        self._tokens = tokens
        self._status = status
        self._policy = policy
        self._ws: ClientConnection | None = None
        self._last_frame: float | None = None  # monotonic time of the last binary frame

    @property
    def subscriptions(self) -> dict[int, str]:
        return dict(self._subs)

    async def update(self, subscriptions: Mapping[int, str]) -> None:
        """New subscriptions: sent at once when connected, else on the next connect."""
        old, self._subs = self._subs, dict(subscriptions)
        ws = self._ws
        if ws is None:
            return
        self._gauge("subscribed", len(self._subs) - len(old))
        try:
            for message in change_messages(old, self._subs):
                await ws.send(message)
        except ConnectionClosed:
            pass  # the reconnect subscribes everything anyway

    async def run(self) -> None:
        attempt = 0
        while True:
            token = await self._tokens.usable()
            started = time.monotonic()
            try:
                failure = await self._connect(token)
            except InvalidStatus as exc:
                if exc.response.status_code == TOKEN_REFUSED:
                    await self._tokens.refuse(token, f"ticker refused the access token: HTTP "
                                                     f"403 {refusal_text(exc)}".rstrip())
                    attempt = 0
                    continue
                failure = f"server refused the connection: HTTP {exc.response.status_code}"
            except HeartbeatSilence:
                self._stats.inc("silences")
                failure = f"no data for {self._policy.silence_s:g} s"
            except (OSError, TimeoutError, WebSocketException) as exc:
                failure = f"connection lost: {describe(exc)}"
            if failure is None:  # the token reached its daily expiry
                await self._tokens.expire(token)
                attempt = 0
                continue
            log.warning("%s: %s", self.name, failure)
            await self._status.down(self.name, failure)
            attempt = await self._policy.pause(self.name, attempt, started, self._stats)

    async def _connect(self, token: AccessToken) -> str | None:
        """One session; returns None when the token's expiry ended it (errors raise)."""
        deadline = None
        if token.expires_at is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(token.expires_at - time.time(), 0.0)
        try:
            async with asyncio.timeout_at(deadline) as window:
                async with connect(socket_url(self._url, self._api_key, token.value),
                                   open_timeout=self._policy.connect_timeout_s, ping_interval=None,
                                   max_size=2**22, close_timeout=2, logger=ws_log,
                                   additional_headers={"X-Kite-Version": "3"},
                                   user_agent_header=USER_AGENT) as ws:
                    await self._session(ws)
        except TimeoutError:
            if window.expired():
                return None
            raise
        return "server ended the session"

    async def _session(self, ws: ClientConnection) -> None:
        subs = self._subs
        for message in subscribe_messages(subs):
            await ws.send(message)
        self._ws = ws
        self._gauge("connected", 1)
        self._gauge("subscribed", len(subs))
        await self._status.up(self.name)
        log.info("%s: connected, subscribed %d tokens (%s)", self.name, len(subs),
                 ", ".join(f"{n} {mode}" for mode, n in mode_counts(subs).items()) or "none")
        try:
            await self._read(ws)
        finally:
            self._ws = None
            self._gauge("connected", -1)
            self._gauge("subscribed", -len(self._subs))

    async def _read(self, ws: ClientConnection) -> None:
        stats, writer, symbols = self._stats, self._writer, self._symbols
        first = True
        while True:
            try:
                async with asyncio.timeout(self._policy.silence_s):
                    message = await ws.recv()
            except TimeoutError:
                ws.transport.abort()  # dead: no close handshake to wait for
                raise HeartbeatSilence from None
            recv_us = time.time_ns() // 1000
            if isinstance(message, str):
                self._text(message)
                continue
            if first:
                first = False
                self._count_gap()
            self._last_frame = time.monotonic()
            stats.inc("frames")
            try:
                ticks, skipped = kite.decode_counting(message, recv_us, symbols)
            except kite.KiteDecodeError as exc:
                stats.inc("decode_errors")
                if stats.counters["decode_errors"] <= MAX_LOGGED_DECODE_ERRORS:
                    log.warning("%s: dropped a %d-byte frame: %s", self.name, len(message), exc)
                continue
            if skipped:
                stats.inc("skipped_packets", skipped)
            if ticks:
                stats.inc("ticks", len(ticks))
                writer.offer(ticks)

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

    def _text(self, message: str) -> None:
        stats = self._stats
        try:
            parsed = parse_text(message)
        except KiteTextError as exc:
            stats.inc("decode_errors")
            if stats.counters["decode_errors"] <= MAX_LOGGED_DECODE_ERRORS:
                log.warning("%s: unreadable text message (%s): %.200r", self.name, exc, message)
            return
        stats.inc(f"text_{parsed.kind}")
        if parsed.kind == "order":
            log.info("%s: %s", self.name, describe_order(parsed.data))
        elif parsed.kind == "error":
            log.warning("%s: server error: %.300s", self.name, parsed.data)
        else:
            log.info("%s: server %s: %.300s", self.name, parsed.kind, parsed.data)

    def _gauge(self, name: str, delta: int) -> None:
        gauges = self._stats.gauges
        gauges[name] = gauges.get(name, 0) + delta


def mode_counts(subs: Mapping[int, str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for mode in subs.values():
        counts[mode] = counts.get(mode, 0) + 1
    return counts


def refusal_text(exc: InvalidStatus) -> str:
    """Kite's own message from a refused handshake's JSON body, when it sent one."""
    body = bytes(exc.response.body or b"")[:1000].decode("utf-8", "replace")
    try:
        message = orjson.loads(body).get("message", "")
    except (ValueError, AttributeError):
        message = body
    return str(message)[:MAX_REASON]


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, websockets.WebSocketException):
        return text
    return f"{type(exc).__name__}: {text}"
