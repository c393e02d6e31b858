"""The lifecycle every feed socket shares (Kite's ticker, Upstox's market data feed): take a
usable access token, open the socket, subscribe, read frames under a silence watchdog, and on
any failure mark the connection down, count the reconnect, back off and go again.

A feed subclass says how to open its socket (``_connect``), what to send to subscribe
(``_subscribe_messages``) and what a frame means (``_frame``, ``_text``); it raises
``TokenRefusal`` when the broker refuses the token and ``ConnectFailed`` for any other refusal
worth a line of its own in the feed's state.

The watchdog: a socket is dead when nothing (data, a heartbeat frame, a text message, and on
feeds that ``PROBES``, the pong of our own ping) arrived for ``silence_s``. A dead socket is
aborted, not closed: its peer would not answer a close handshake either. ``PROBES`` is for a
feed that sends no heartbeat of its own (Upstox) where a quiet market must not pass for a
dead socket: after half the window without a frame it pings, and a pong counts as life.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from ingest.backoff import ConnectionPolicy
from ingest.feed_status import FeedStatus
from ingest.tokens import AccessToken, AccessTokens
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")

MAX_LOGGED_DECODE_ERRORS = 20


class TokenRefusal(Exception):
    """The broker refused the access token: hand it back and wait for a new one."""


class ConnectFailed(Exception):
    """Opening the socket failed in a way the message describes (an HTTP refusal, a bad
    authorize answer): retried like any connection failure."""


class Silence(Exception):
    """Nothing arrived for longer than the watchdog allows."""


class FeedConnection(ABC):
    """One feed socket; ``run`` keeps it up until cancelled."""

    PROBES = False  # ping after half the silence window; a pong counts as life
    SILENCE_TEXT = "no data"

    def __init__(self, name: str, writer: TickWriter, stats: Stats, tokens: AccessTokens,
                 status: FeedStatus, policy: ConnectionPolicy) -> None:
        self.name = name
        self._writer = writer
        self._stats = stats
        self._tokens = tokens
        self._status = status
        self._policy = policy
        self._ws: ClientConnection | None = None
        self._alive_at = 0.0  # monotonic time of the last sign of life
        self._last_frame: float | None = None  # monotonic time of the last data frame

    # What a feed provides.

    @abstractmethod
    async def _connect(self, token: AccessToken) -> str | None:
        """Open the socket and run ``_session`` on it. Returns why the session ended, or None
        when the token reached its expiry; raises TokenRefusal, ConnectFailed, Silence or a
        transport error."""

    @abstractmethod
    def _subscribe_messages(self) -> Iterable[str | bytes]: ...

    @abstractmethod
    def _subscribed(self) -> int:
        """How many instruments this connection carries now."""

    @abstractmethod
    async def _frame(self, message: bytes, recv_us: int) -> None:
        """Decode one data frame and hand its ticks to the writer."""

    async def _text(self, message: str, recv_us: int) -> None:
        """A text message (not data: no gap is counted for it)."""
        await self._frame(message.encode(), recv_us)

    # The lifecycle.

    async def run(self) -> None:
        attempt = 0
        while True:
            token = await self._tokens.usable()
            started = time.monotonic()
            try:
                failure = await self._connect(token)
            except TokenRefusal as exc:
                await self._tokens.refuse(token, str(exc))
                attempt = 0
                continue
            except Silence:
                self._stats.inc("silences")
                failure = f"{self.SILENCE_TEXT} for {self._policy.silence_s:g} s"
            except ConnectFailed as exc:
                failure = str(exc)
            except (OSError, TimeoutError, WebSocketException) as exc:
                failure = f"connection lost: {describe(exc)}"
            if failure is None:  # the token reached its expiry
                await self._tokens.expire(token)
                attempt = 0
                continue
            log.warning("%s: %s", self.name, failure)
            await self._status.down(self.name, failure)
            attempt = await self._policy.pause(self.name, attempt, started, self._stats)

    async def _session(self, ws: ClientConnection) -> None:
        # Published before subscribing: a change of subscriptions meanwhile goes on this socket.
        self._ws = ws
        self._gauge("connected", 1)
        self._gauge("subscribed", self._subscribed())
        try:
            for message in self._subscribe_messages():
                await ws.send(message)
            await self._status.up(self.name)
            log.info("%s: connected, %s", self.name, self._describe_subscriptions())
            await self._read(ws)
        finally:
            self._ws = None
            self._gauge("connected", -1)
            self._gauge("subscribed", -self._subscribed())

    def _describe_subscriptions(self) -> str:
        return f"subscribed {self._subscribed()} instruments"

    async def _change(self, before: int, messages: Iterable[str | bytes]) -> None:
        """Subscriptions changed from ``before`` instruments: tell the live socket, if any;
        without one, the next connect subscribes the new set."""
        ws = self._ws
        if ws is None:
            return
        self._gauge("subscribed", self._subscribed() - before)
        try:
            for message in messages:
                await ws.send(message)
        except ConnectionClosed:
            pass  # the reconnect subscribes everything anyway

    async def _read(self, ws: ClientConnection) -> None:
        silence_s = self._policy.silence_s
        wait_s = silence_s / 2 if self.PROBES else silence_s
        self._alive_at = time.monotonic()
        first = True
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    message = await ws.recv()
            except TimeoutError:
                if not self.PROBES or time.monotonic() - self._alive_at > silence_s:
                    ws.transport.abort()  # dead: no close handshake to wait for
                    raise Silence from None
                pong = await ws.ping()
                pong.add_done_callback(self._on_pong)  # type: ignore[attr-defined]
                continue
            recv_us = time.time_ns() // 1000
            self._alive_at = time.monotonic()
            if isinstance(message, str):
                await self._text(message, recv_us)
                continue
            if first:
                first = False
                self._count_gap()
            self._last_frame = self._alive_at
            self._stats.inc("frames")
            await self._frame(message, recv_us)

    def _on_pong(self, future: asyncio.Future[float]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._alive_at = time.monotonic()

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

    def _decode_error(self, size: int, exc: Exception) -> None:
        stats = self._stats
        stats.inc("decode_errors")
        if stats.counters["decode_errors"] <= MAX_LOGGED_DECODE_ERRORS:
            log.warning("%s: dropped a %d-byte frame: %s", self.name, size, exc)

    def _gauge(self, name: str, delta: int) -> None:
        gauges = self._stats.gauges
        gauges[name] = gauges.get(name, 0) + delta


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, websockets.WebSocketException):
        return text
    return f"{type(exc).__name__}: {text}"
