"""The simulator's Upstox Market Data Feed V3, served on the same port as the Kite side.

Routes (``process_request``):

- ``GET /v3/feed/market-data-feed/authorize`` with ``Authorization: Bearer TOKEN``: JSON with a
  single-use WebSocket URL under both spellings the SDKs read; 401 JSON without a good token.
- ``GET /v3/feed/market-data-feed`` (WebSocket, Bearer): HTTP 302 to a fresh single-use URL.
- ``/market-data-feeder/v3/upstox-developer-api/feeds?requestId=…&code=…``: the feed socket;
  a code works once and for ``CODE_TTL_S``, a reused or unknown code gets 403.
- ``GET /upstox/instruments/complete.json.gz``: the instrument master (gzipped JSON array).

A session gets a ``market_info`` message on connect, and another whenever a segment's session
status changes (``ingest.sim.hours``: pre-open, open, closed; always open in the demo mode);
each ``sub`` (JSON in a binary or text
frame) answers with an ``initial_feed`` snapshot of the keys it names, then ``live_feed``
frames follow after every market step that trades a subscribed instrument. A ``sub`` of
subscribed keys with another mode, or ``change_mode``, switches their mode; ``unsub`` drops them.

Fault knobs (``ingest.sim.faults``) apply to feed sockets as to the Kite ticker; a stalled
Upstox socket also stops reading, so it answers no ping: Upstox's only heartbeat is the
WebSocket ping, and a hung server answers none.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingest.sim import upstox_wire as wire
from ingest.sim.connection import SimConnection
from ingest.sim.faults import Faults
from ingest.sim.hours import MarketHours
from ingest.sim.market import Market
from ingest.sim.session import StepSession
from ingest.sim.universe import Instrument
from proto import MarketDataFeedV3_pb2 as pb

log = logging.getLogger("stormalert.sim")

AUTHORIZE_PATH = "/v3/feed/market-data-feed/authorize"
WS_PATH = "/v3/feed/market-data-feed"
FEEDS_PATH = "/market-data-feeder/v3/upstox-developer-api/feeds"
MASTER_PATH = "/upstox/instruments/complete.json.gz"
PATHS = (AUTHORIZE_PATH, WS_PATH, FEEDS_PATH, MASTER_PATH)
CODE_TTL_S = 60.0
MAX_FEEDS_PER_FRAME = 1000
IST_OFFSET_S = 19_800
STATUS_CHECK_S = 0.2  # how often the segments' session status is looked at


def _response(status: HTTPStatus, body: bytes, content_type: str = "application/json",
              extra: Iterable[tuple[str, str]] = ()) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Connection", "close"), *extra])
    return Response(status.value, status.phrase, headers, body)


def _error(status: HTTPStatus, code: str, message: str) -> Response:
    error = {"errorCode": code, "message": message, "propertyPath": None,
             "invalidValue": None, "error_code": code, "property_path": None,
             "invalid_value": None}
    return _response(status, orjson.dumps({"status": "error", "errors": [error]}))


def _public_base(conn: ServerConnection, request: Request) -> str:
    """The scheme and host clients reach us by: the Host header (else the local address), and
    ``wss`` behind a TLS-terminating proxy that sends ``X-Forwarded-Proto: https``."""
    host = request.headers.get("Host")
    if not host:
        addr, port = conn.local_address[:2]
        host = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    secure = request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return f"{'wss' if secure else 'ws'}://{host}"


class UpstoxSide:
    """The Upstox protocol over the simulator's market; one per simulator."""

    def __init__(self, instruments: Sequence[Instrument], market: Market,
                 hours: MarketHours | None = None, clock: Callable[[], float] = time.time,
                 faults: Faults | None = None) -> None:
        self.instruments = list(instruments)
        self.market = market
        self.hours = hours or MarketHours()
        self.clock = clock
        self.faults = faults
        self.keys = wire.instrument_keys(self.instruments)
        self.index_of = {key: i for i, key in enumerate(self.keys)}
        self.segment_exchange = {wire.segment_of(inst): inst.exchange
                                 for inst in self.instruments}
        self.segments = sorted(self.segment_exchange)
        self.status = self.market_status(clock())
        self.status_version = 0  # sessions compare theirs to send a change once
        self._status_due = 0.0
        self.accepted_token: str | None = None  # None: any non-empty bearer token
        self.sessions: set[UpstoxSession] = set()
        self._codes: dict[str, float] = {}  # single-use code -> expiry (monotonic)
        self._master: bytes | None = None
        self._step_cache: dict[tuple[int, str], bytes] = {}

    @staticmethod
    def owns(path: str) -> bool:
        return urlsplit(path).path.rstrip("/") in PATHS

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        path = url.path.rstrip("/")
        if path == MASTER_PATH:
            if self._master is None:
                self._master = wire.master_json_gz(self.instruments, self.keys)
            return _response(HTTPStatus.OK, self._master, "application/gzip")
        if path == FEEDS_PATH:
            return self._feed_socket(url.query, request)
        rejected = self._check_token(request)
        if rejected is not None:
            return rejected
        location = self._issue_url(conn, request)
        if path == AUTHORIZE_PATH:
            data = {"authorized_redirect_uri": location, "authorizedRedirectUri": location}
            return _response(HTTPStatus.OK, orjson.dumps({"status": "success", "data": data}))
        return _response(HTTPStatus.FOUND, b"", "text/plain", [("Location", location)])

    def _check_token(self, request: Request) -> Response | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _error(HTTPStatus.UNAUTHORIZED, "UDAPI100068",
                          "Check your 'Authorization' header: 'Bearer ACCESS_TOKEN'")
        if self.accepted_token is not None and token != self.accepted_token:
            return _error(HTTPStatus.UNAUTHORIZED, "UDAPI100050",
                          "Invalid token used to access API")
        return None

    def _issue_url(self, conn: ServerConnection, request: Request) -> str:
        now = time.monotonic()
        for stale in [c for c, expiry in self._codes.items() if expiry < now]:
            del self._codes[stale]
        code = secrets.token_urlsafe(18)
        self._codes[code] = now + CODE_TTL_S
        return (f"{_public_base(conn, request)}{FEEDS_PATH}?requestId={uuid.uuid4()}"
                f"&code={code}")

    def _feed_socket(self, query: str, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _error(HTTPStatus.UPGRADE_REQUIRED, "UDAPI100500", "WebSocket only")
        code = (parse_qs(query).get("code") or [""])[0]
        expiry = self._codes.pop(code, None)
        if expiry is None or expiry < time.monotonic():
            return _error(HTTPStatus.FORBIDDEN, "UDAPI100073",
                          "This URL was used already or has expired: authorize again")
        return None

    def market_status(self, now_s: float) -> dict[str, int]:
        """Segment -> ``MarketStatus`` value at ``now_s`` (simulator clock)."""
        return {segment: pb.MarketStatus.Value(self.hours.status(exchange, now_s))
                for segment, exchange in sorted(self.segment_exchange.items())}

    def market_info(self) -> bytes:
        return wire.market_info_of(self.status, time.time_ns() // 1_000_000)

    def _follow_hours(self) -> None:
        now = time.monotonic()
        if now < self._status_due:
            return
        self._status_due = now + STATUS_CHECK_S
        status = self.market_status(self.clock())
        if status != self.status:
            log.info("upstox market status: %s", ", ".join(
                f"{seg}={pb.MarketStatus.Name(v)}" for seg, v in status.items()
                if self.status.get(seg) != v))
            self.status = status
            self.status_version += 1

    async def handle(self, ws: ServerConnection) -> None:
        if self.faults is not None:
            self.faults.attach(ws)
        session = UpstoxSession(ws, self)
        self.sessions.add(session)
        log.info("upstox client connected from %s", ws.remote_address)
        try:
            await session.run()
        except* ConnectionClosed:
            pass
        finally:
            self.sessions.discard(session)
            log.info("upstox client from %s gone", ws.remote_address)

    def notify(self, indices: list[int]) -> None:
        """After every market step: the instruments that traded."""
        self._step_cache.clear()
        self._follow_hours()
        for session in list(self.sessions):
            session.notify(indices)

    def feed_bytes(self, index: int, mode: str) -> bytes:
        """One instrument's current feed in ``mode``, built once per market step."""
        cached = self._step_cache.get((index, mode))
        if cached is None:
            if mode in ("full", "full_d30"):
                self.market.ensure_book(index)
            cached = self._step_cache[(index, mode)] = wire.feed_bytes(
                self.instruments[index], self.keys[index], self.market.quotes[index], mode,
                day_start_ms(time.time()))
        return cached

    def frames(self, kind: pb.Type, feeds: list[tuple[int, str]]) -> list[bytes]:
        now_ms = time.time_ns() // 1_000_000
        return [wire.header(kind, now_ms) + b"".join(
                    self.feed_bytes(index, mode)
                    for index, mode in feeds[start:start + MAX_FEEDS_PER_FRAME])
                for start in range(0, len(feeds), MAX_FEEDS_PER_FRAME)]


def day_start_ms(now_s: float) -> int:
    """Midnight IST of the trading day, epoch ms (the ``ts`` of the "1d" bar)."""
    day = (int(now_s) + IST_OFFSET_S) // 86_400 * 86_400 - IST_OFFSET_S
    return day * 1000


class UpstoxSession(StepSession):
    """One feed WebSocket client."""

    def __init__(self, ws: ServerConnection, side: UpstoxSide) -> None:
        super().__init__(ws)
        self.side = side
        self.modes: dict[int, str] = {}  # instrument index -> mode
        self.status_version = side.status_version
        self._stall_ends: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        self.status_version = self.side.status_version
        await self.ws.send(self.side.market_info())
        await self.serve("sim-upstox-send")

    async def _receive_loop(self) -> None:
        async for message in self.ws:
            snapshot = self._command(message)
            for frame in self.side.frames(pb.initial_feed, snapshot):
                await self.ws.send(frame)

    def _command(self, message: str | bytes) -> list[tuple[int, str]]:
        """Apply one sub/unsub/change_mode request; the feeds to snapshot now."""
        try:
            request = orjson.loads(message)
            method, data = request["method"], request["data"]
            keys = data["instrumentKeys"]
            mode = data.get("mode", "full") if method != "unsub" else None
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise TypeError("instrumentKeys must be a list of strings")
            if method not in ("sub", "unsub", "change_mode"):
                raise ValueError(f"unknown method {method!r}")
            if mode is not None and mode not in wire.MODES:
                raise ValueError(f"unknown mode {mode!r}")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            log.warning("upstox client sent an invalid request: %s", exc)
            return []
        indices = [self.side.index_of[k] for k in keys if k in self.side.index_of]
        if method == "unsub":
            for index in indices:
                self.modes.pop(index, None)
            return []
        if method == "change_mode":
            indices = [i for i in indices if i in self.modes]
        assert mode is not None
        for index in indices:
            self.modes[index] = mode
        return [(index, mode) for index in indices]

    async def _send_loop(self) -> None:
        while True:
            indices = await self.steps.get()
            self._stall_reading()
            if self.status_version != self.side.status_version:
                self.status_version = self.side.status_version
                await self.ws.send(self.side.market_info())
            modes = self.modes
            feeds = [(i, modes[i]) for i in dict.fromkeys(indices) if i in modes]
            for frame in self.side.frames(pb.live_feed, feeds):
                await self.ws.send(frame)

    def _stall_reading(self) -> None:
        """While the stall knob holds this socket, stop reading it too (no pongs)."""
        ws = self.ws
        if not isinstance(ws, SimConnection) or self._stall_ends is not None:
            return
        loop = asyncio.get_running_loop()
        if ws.stalled_until <= loop.time():
            return
        ws.transport.pause_reading()
        self._stall_ends = loop.call_at(ws.stalled_until, self._end_stall)

    def _end_stall(self) -> None:
        self._stall_ends = None
        if not self.ws.transport.is_closing():
            self.ws.transport.resume_reading()
