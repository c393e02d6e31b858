"""The Kite ticker connection lifecycle: connect, subscribe, read frames into the writer,
watch for heartbeat silence, reconnect with capped exponential backoff and jitter, resubscribe.

Decoding is ``ingest.kite.decode``; this module only moves frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlencode

import orjson
import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException

from ingest import kite
from ingest.backoff import backoff_s
from ingest.writer import TickWriter
from proto.runtime import Stats

log = logging.getLogger("stormalert.ingest")

USER_AGENT = "stormalert-ingest"
MAX_LOGGED_DECODE_ERRORS = 20


class HeartbeatSilence(Exception):
    """No frame, not even a heartbeat, for longer than the watchdog allows."""


def socket_url(ws_url: str, api_key: str, access_token: str) -> str:
    sep = "&" if "?" in ws_url else "?"
    return f"{ws_url}{sep}{urlencode({'api_key': api_key, 'access_token': access_token})}"


def subscribe_messages(tokens: Sequence[int], mode: str) -> list[str]:
    """What to send after (re)connecting: subscribe, then the mode for the same tokens."""
    return [orjson.dumps({"a": "subscribe", "v": list(tokens)}).decode(),
            orjson.dumps({"a": "mode", "v": [mode, list(tokens)]}).decode()]


class KiteConnection:
    """One ticker WebSocket carrying up to 3000 tokens; ``run`` keeps it up until cancelled."""

    def __init__(self, name: str, url: str, tokens: Sequence[int], mode: str,
                 symbols: Mapping[int, str], writer: TickWriter, stats: Stats, *,
                 silence_s: float, reconnect_min_s: float, reconnect_max_s: float,
                 connect_timeout_s: float) -> None:
        self.name = name
        self._url = url
        self._tokens = list(tokens)
        self._mode = mode
        self._symbols = symbols
        self._writer = writer
        self._stats = stats
        self._silence_s = silence_s
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._connect_timeout_s = connect_timeout_s

    async def run(self) -> None:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                async with connect(self._url, open_timeout=self._connect_timeout_s,
                                   ping_interval=None, max_size=2**22, close_timeout=2,
                                   additional_headers={"X-Kite-Version": "3"},
                                   user_agent_header=USER_AGENT) as ws:
                    await self._session(ws)
            except InvalidStatus as exc:
                log.error("%s: server refused the connection: HTTP %s (check the API key and "
                          "today's access token)", self.name, exc.response.status_code)
            except HeartbeatSilence:
                log.warning("%s: no data for %.1f s, reconnecting", self.name, self._silence_s)
            except (OSError, TimeoutError, WebSocketException) as exc:
                log.warning("%s: connection lost: %s", self.name, describe(exc))
            attempt = 1 if time.monotonic() - started > self._backoff[1] else attempt + 1
            delay = backoff_s(attempt, *self._backoff)
            self._stats.inc("reconnects")
            log.info("%s: reconnecting in %.2f s (attempt %d)", self.name, delay, attempt)
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection) -> None:
        for message in subscribe_messages(self._tokens, self._mode):
            await ws.send(message)
        self._gauge("connected", 1)
        self._gauge("subscribed", len(self._tokens))
        log.info("%s: connected, subscribed %d tokens in %s mode", self.name,
                 len(self._tokens), self._mode)
        try:
            await self._read(ws)
        finally:
            self._gauge("connected", -1)
            self._gauge("subscribed", -len(self._tokens))

    async def _read(self, ws: ClientConnection) -> None:
        stats, writer, symbols = self._stats, self._writer, self._symbols
        while True:
            try:
                async with asyncio.timeout(self._silence_s):
                    message = await ws.recv()
            except TimeoutError:
                raise HeartbeatSilence from None
            recv_us = time.time_ns() // 1000
            if isinstance(message, str):
                self._text(message)
                continue
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

    def _text(self, message: str) -> None:
        try:
            payload = orjson.loads(message)
        except orjson.JSONDecodeError:
            log.warning("%s: unreadable text message %.200r", self.name, message)
            return
        kind = payload.get("type") if isinstance(payload, dict) else None
        if kind == "error":
            log.warning("%s: server error: %.300s", self.name, payload.get("data"))
        elif kind == "message":
            log.info("%s: server message: %.300s", self.name, payload.get("data"))

    def _gauge(self, name: str, delta: int) -> None:
        gauges = self._stats.gauges
        gauges[name] = gauges.get(name, 0) + delta


def describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, websockets.WebSocketException):
        return text
    return f"{type(exc).__name__}: {text}"
