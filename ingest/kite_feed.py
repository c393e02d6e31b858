"""The Kite ticker connection: connect with the current access token (in the URL), subscribe
per mode group, read frames into the writer, and change subscriptions on the live socket.
The lifecycle (watchdog, reconnect with backoff, resubscribe) is ``ingest.feed_connection``'s.

A 403 on the handshake means Kite refused the access token: the connection hands the token
back to ``AccessTokens`` (the feed becomes ``needs_login``) and waits for a new one instead of
retrying. The token's daily expiry ends a session the same way. Decoding is
``ingest.kite.decode``; this module only moves frames.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ingest import kite
from ingest.backoff import ConnectionPolicy
from ingest.feed_connection import (
    MAX_LOGGED_DECODE_ERRORS,
    ConnectFailed,
    FeedConnection,
    TokenRefusal,
)
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
TOKEN_REFUSED = 403
MAX_REASON = 200


def socket_url(ws_url: str, api_key: str, access_token: str) -> str:
    sep = "&" if "?" in ws_url else "?"
    return f"{ws_url}{sep}{urlencode({'api_key': api_key, 'access_token': access_token})}"


class KiteConnection(FeedConnection):
    """One ticker WebSocket carrying up to 3000 tokens; ``run`` keeps it up until cancelled."""

    def __init__(self, name: str, ws_url: str, subscriptions: Mapping[int, str],
                 symbols: Mapping[int, str], writer: TickWriter, stats: Stats,
                 tokens: AccessTokens, status: FeedStatus, policy: ConnectionPolicy) -> None:
        """The app key to connect with comes with each token (``AccessToken.api_key``)."""
        super().__init__(name, writer, stats, tokens, status, policy)
        self._url = ws_url
        self._subs = dict(subscriptions)
        self._symbols = symbols

    @property
    def subscriptions(self) -> dict[int, str]:
        return dict(self._subs)

    async def update(self, subscriptions: Mapping[int, str]) -> None:
        """New subscriptions: sent at once when connected, else on the next connect."""
        old, self._subs = self._subs, dict(subscriptions)
        await self._change(len(old), change_messages(old, self._subs))

    async def _connect(self, token: AccessToken) -> str | None:
        deadline = None
        if token.expires_at is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + max(token.expires_at - time.time(), 0.0)
        try:
            async with asyncio.timeout_at(deadline) as window:
                async with connect(socket_url(self._url, token.api_key, token.value),
                                   open_timeout=self._policy.connect_timeout_s, ping_interval=None,
                                   max_size=2**22, close_timeout=2, logger=ws_log,
                                   additional_headers={"X-Kite-Version": "3"},
                                   user_agent_header=USER_AGENT) as ws:
                    await self._session(ws)
        except TimeoutError:
            if window.expired():
                return None
            raise
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code == TOKEN_REFUSED:
                raise TokenRefusal(f"ticker refused the access token: HTTP 403 "
                                   f"{refusal_text(exc)}".rstrip()) from None
            raise ConnectFailed(f"server refused the connection: HTTP {code}") from None
        return "server ended the session"

    def _subscribe_messages(self) -> Iterable[str]:
        return subscribe_messages(self._subs)

    def _subscribed(self) -> int:
        return len(self._subs)

    def _describe_subscriptions(self) -> str:
        modes = ", ".join(f"{n} {mode}" for mode, n in mode_counts(self._subs).items())
        return f"subscribed {len(self._subs)} tokens ({modes or 'none'})"

    async def _frame(self, message: bytes, recv_us: int) -> None:
        try:
            ticks, skipped = kite.decode_counting(message, recv_us, self._symbols)
        except kite.KiteDecodeError as exc:
            self._decode_error(len(message), exc)
            return
        stats = self._stats
        if skipped:
            stats.inc("skipped_packets", skipped)
        if ticks:
            stats.inc("ticks", len(ticks))
            self._writer.offer(ticks)

    async def _text(self, message: str, recv_us: int) -> None:
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
