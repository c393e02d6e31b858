"""The simulator's single port: Kite REST instruments over plain HTTP (``process_request``) and
the Kite ticker WebSocket at ``/?api_key=K&access_token=T``, both on one ``websockets`` server.

Each WebSocket session keeps its own subscriptions (token -> mode) and receives, after every
market step, one binary frame with a packet per traded instrument it subscribes to; when
nothing it watches traded for a second it gets the 1-byte heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ingest.sim import kite_wire as wire
from ingest.sim.connection import SimConnection
from ingest.sim.faults import Faults
from ingest.sim.hours import TradingGate
from ingest.sim.market import STEP_S, Indices, Market
from ingest.sim.options import SimOptions
from ingest.sim.replay import ReplayRow, replay
from ingest.sim.session import StepSession
from ingest.sim.universe import Instrument, instruments_csv_gz
from ingest.sim.upstox_server import UpstoxSide

log = logging.getLogger("stormalert.sim")

MODES = ("ltp", "quote", "full")
HEARTBEAT_S = 1.0
NOTHING: Indices = np.empty(0, np.intp)  # no instruments: shared, so read-only
NOTHING.flags.writeable = False


def _response(status: HTTPStatus, body: bytes, content_type: str,
              extra: Iterable[tuple[str, str]] = ()) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body))),
                       ("Connection", "close"), *extra])
    return Response(status.value, status.phrase, headers, body)


def _error(status: HTTPStatus, message: str, error_type: str = "GeneralException") -> Response:
    body = orjson.dumps({"status": "error", "message": message, "error_type": error_type})
    return _response(status, body, "application/json")


class KiteSession(StepSession[Indices]):
    """One ticker WebSocket client."""

    def __init__(self, ws: ServerConnection, sim: Simulator) -> None:
        super().__init__(ws)
        self.sim = sim
        self.modes: dict[int, str] = {}  # token -> mode, as subscribed
        # the same per instrument index as wire.MODE_* codes, for the vectorised send
        self.mode_codes = np.zeros(len(sim.instruments), np.int8)
        self._last_sent = time.monotonic()

    async def run(self) -> None:
        await self.serve("sim-kite-send")

    async def _receive_loop(self) -> None:
        async for message in self.ws:
            if isinstance(message, bytes):
                continue  # clients send only text commands
            touched = self._command(message)
            if len(touched):
                await self._send(touched)

    def _command(self, text: str) -> Indices:
        """Apply one subscribe/unsubscribe/mode message; the indices to snapshot now."""
        try:
            msg = orjson.loads(text)
            action, value = msg["a"], msg["v"]
            if action == "mode":
                mode, tokens = value
                if mode not in MODES:
                    raise ValueError(f"unknown mode {mode!r}")
            else:
                mode, tokens = "quote", value
            tokens = [int(t) for t in tokens]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            self._send_text({"type": "error", "data": f"invalid message: {exc}"})
            return NOTHING
        index_of = self.sim.index_of
        known = [t for t in tokens if t in index_of]
        if action == "unsubscribe":
            for t in known:
                self.modes.pop(t, None)
                self.mode_codes[index_of[t]] = wire.MODE_NONE
            return NOTHING
        if action not in ("subscribe", "mode"):
            self._send_text({"type": "error", "data": f"unknown action {action!r}"})
            return NOTHING
        for t in known:
            if action == "mode" or t not in self.modes:
                self.modes[t] = mode
                self.mode_codes[index_of[t]] = wire.MODE_CODES[mode]
        played = self.sim.played  # replaying: nothing to show before its first tick
        return np.unique(np.array([index_of[t] for t in known
                                   if played is None or index_of[t] in played], np.intp))

    def _send_text(self, payload: dict[str, object]) -> None:
        self.sim.spawn(self.ws.send(orjson.dumps(payload).decode()))

    async def _send_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(HEARTBEAT_S):
                    indices = await self.steps.get()
            except TimeoutError:
                indices = NOTHING
            sent = await self._send(indices)
            if not sent and time.monotonic() - self._last_sent >= HEARTBEAT_S:
                await self.ws.send(wire.HEARTBEAT)
                self._last_sent = time.monotonic()

    async def _send(self, indices: Indices) -> bool:
        """One packet per index (distinct) this session subscribes, in as few frames as the
        frame limits allow (u16 packet count, 1 MiB)."""
        frames = self.sim.frames.frames(self.sim.market.state, indices,
                                        self.mode_codes[indices])
        for frame in frames:
            await self.ws.send(frame)
        if frames:
            self._last_sent = time.monotonic()
        return bool(frames)


class Simulator:
    def __init__(self, instruments: list[Instrument], market: Market,
                 options: SimOptions | None = None) -> None:
        self.instruments = instruments
        self.market = market
        self.options = options or SimOptions()
        self.faults = Faults(self.options.faults)
        self.played: set[int] | None = None if self.options.replay is None else set()
        self.index_of = {inst.token: i for i, inst in enumerate(instruments)}
        self.frames = wire.FrameBuilder(market.tick, market.is_index, seed=len(instruments))
        self.index_of_symbol = {inst.symbol: i for i, inst in enumerate(instruments)}
        self.exchanges = {inst.exchange for inst in instruments}
        self.sessions: set[KiteSession] = set()
        self.upstox = UpstoxSide(instruments, market, self.options.hours, self.options.clock,
                                 self.faults)
        self._dumps: dict[str | None, bytes] = {}
        self._background: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def process_request(self, _conn: ServerConnection, request: Request) -> Response | None:
        if self.upstox.owns(request.path):
            return self.upstox.process_request(_conn, request)
        url = urlsplit(request.path)
        path = url.path.rstrip("/")
        if path == "" and request.headers.get("Upgrade", "").lower() == "websocket":
            query = parse_qs(url.query)
            return self._refused(query.get("api_key", [""])[0],
                                 query.get("access_token", [""])[0])
        if path == "/session/token" and request.method == "POST":
            return self._session(_conn)
        if path == "/instruments" or path.startswith("/instruments/"):
            return self._instruments(path, request)
        return _error(HTTPStatus.NOT_FOUND, f"no route {url.path!r}")

    def _refused(self, api_key: str, access_token: str) -> Response | None:
        refusal = self.options.auth.check(api_key, access_token)
        if refusal is None:
            return None
        return _error(refusal.status, refusal.message, refusal.error_type)

    def _session(self, conn: ServerConnection) -> Response:
        data, refusal = self.options.auth.session(getattr(conn, "request_body", b""))
        if refusal is not None:
            return _error(refusal.status, refusal.message, refusal.error_type)
        return _response(HTTPStatus.OK, orjson.dumps({"status": "success", "data": data}),
                         "application/json")

    def _instruments(self, path: str, request: Request) -> Response:
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        api_key, _, access_token = credentials.partition(":")
        refused = self._refused(api_key, access_token) if scheme == "token" else _error(
            HTTPStatus.FORBIDDEN, "missing 'Authorization: token key:token'", "TokenException")
        if refused is not None:
            return refused
        exchange = path.removeprefix("/instruments").strip("/") or None
        if exchange is not None and exchange not in self.exchanges:
            return _error(HTTPStatus.BAD_REQUEST, f"unknown exchange {exchange!r}",
                          "InputException")
        if exchange not in self._dumps:
            self._dumps[exchange] = instruments_csv_gz(self.instruments, exchange)
        return _response(HTTPStatus.OK, self._dumps[exchange], "text/csv",
                         [("Content-Encoding", "gzip")])

    async def handle(self, ws: ServerConnection) -> None:
        if ws.request is not None and self.upstox.owns(ws.request.path):
            await self.upstox.handle(ws)
            return
        session = KiteSession(ws, self)
        self.faults.attach(ws)
        self.sessions.add(session)
        log.info("kite client connected from %s", ws.remote_address)
        expiry = self._end_at_expiry(ws)
        try:
            await session.run()
        except* ConnectionClosed:
            pass
        finally:
            if expiry is not None:
                expiry.cancel()
            self.sessions.discard(session)
            log.info("kite client from %s gone", ws.remote_address)

    def _end_at_expiry(self, ws: ServerConnection) -> asyncio.TimerHandle | None:
        """Close the session when its access token expires, as Kite does at the daily expiry."""
        token = parse_qs(urlsplit(ws.request.path).query).get("access_token", [""])[0] \
            if ws.request is not None else ""
        delay = self.options.auth.expires_in(token)
        if delay is None:
            return None
        return asyncio.get_running_loop().call_later(
            delay, lambda: self.spawn(ws.close(1000, "access token expired")))

    def publish(self, indices: Indices) -> None:
        for session in list(self.sessions):
            session.notify(indices)
        self.upstox.notify(indices.tolist())

    # What a replay needs (ingest.sim.replay.Stage).
    def subscribed(self) -> bool:
        return any(session.modes for session in self.sessions)

    def pending(self) -> bool:
        return any(not session.steps.empty() for session in self.sessions)

    def play(self, rows: list[ReplayRow]) -> None:
        indices = [self.index_of_symbol[row.symbol] for row in rows]
        for index, row in zip(indices, rows, strict=True):
            self.market.set_trade(index, row.ltp, row.volume, row.pc, row.ts_ms // 1000)
        if self.played is not None:
            self.played.update(indices)
        self.publish(np.unique(np.array(indices, np.intp)))

    async def market_loop(self) -> None:
        plan = self.options.replay
        if plan is not None:
            known = [row for row in plan.rows if row.symbol in self.index_of_symbol]
            if len(known) < len(plan.rows):
                log.warning("replay: %d rows name symbols outside the universe, skipped",
                            len(plan.rows) - len(known))
            await replay(known, self, plan.speed)
            await asyncio.Future()  # the file is over: keep serving heartbeats
        clock = self.options.clock
        gate = TradingGate(self.options.hours, [inst.exchange for inst in self.instruments])
        next_at = time.monotonic()
        while True:
            now = clock()
            if gate.update(now):
                self.market.closed = gate.closed
            self.market.vol_scale = gate.volatility(now)
            self.publish(self.market.step(int(now)))
            next_at += STEP_S
            await asyncio.sleep(max(next_at - time.monotonic(), 0.0))


async def serve_forever(sim: Simulator, host: str, port: int) -> None:
    """Serve until cancelled; prints the one ``sim listening on`` line once bound."""
    server: Server
    # No permessage-deflate: neither official SDK negotiates it, the packets are dense binary
    # integers, and zlib at benchmark rates would take the simulator's whole core.
    async with serve(sim.handle, host, port, process_request=sim.process_request,
                     create_connection=SimConnection, max_size=2**20, ping_interval=20,
                     close_timeout=2, compression=None) as server:
        bound = server.sockets[0].getsockname()
        shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        print(f"sim listening on http://{shown}:{bound[1]}", flush=True)
        try:
            async with asyncio.TaskGroup() as tg:
                if sim.faults.config.any:
                    tg.create_task(sim.faults.run(), name="sim-faults")
                await sim.market_loop()
        finally:
            with contextlib.suppress(Exception):
                server.close()
