"""The simulator's Upstox side as a real process: authorize, the 302 to a single-use URL, the
feed (market_info, initial_feed, live_feed, mode changes) and the instrument master."""

from __future__ import annotations

import asyncio
import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from ingest import upstox
from proto import MarketDataFeedV3_pb2 as pb
from tests.ingest.procs import running_sim

INFY, NIFTY = "NSE_EQ|INE009A01021", "NSE_INDEX|Nifty 50"
TOKEN = "sim-upstox-token"


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_sim("--symbols", "120", "--rate", "400", "--seed", "5",
                     "--upstox-token", TOKEN) as url:
        yield url


def get(url: str, token: str | None = TOKEN) -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def authorize(sim: str) -> str:
    status, body = get(sim + "/v3/feed/market-data-feed/authorize")
    assert status == 200, body
    data = orjson.loads(body)
    assert data["status"] == "success"
    assert data["data"]["authorized_redirect_uri"] == data["data"]["authorizedRedirectUri"]
    return data["data"]["authorized_redirect_uri"]


def sub(keys: list[str], mode: str, method: str = "sub") -> bytes:
    return orjson.dumps({"guid": "g", "method": method,
                         "data": {"mode": mode, "instrumentKeys": keys}})


async def next_message(ws: ClientConnection) -> pb.FeedResponse:
    frame = await asyncio.wait_for(ws.recv(), 5)
    assert isinstance(frame, bytes), "the server never sends text frames"
    return pb.FeedResponse.FromString(frame)


def test_authorize_needs_a_good_bearer_token(sim: str) -> None:
    for token in (None, "wrong"):
        status, body = get(sim + "/v3/feed/market-data-feed/authorize", token)
        assert status == 401
        assert orjson.loads(body)["status"] == "error"
    uri = authorize(sim)
    host = sim.removeprefix("http://")
    assert uri.startswith(f"ws://{host}/market-data-feeder/v3/upstox-developer-api/feeds?")
    assert "requestId=" in uri and "code=" in uri


def test_instrument_master(sim: str) -> None:
    status, body = get(sim + "/upstox/instruments/complete.json.gz", None)
    assert status == 200
    rows = orjson.loads(gzip.decompress(body))
    assert len(rows) == 120
    by_key = {row["instrument_key"]: row for row in rows}
    assert by_key[INFY]["trading_symbol"] == "INFY" and by_key[INFY]["isin"] == "INE009A01021"
    assert by_key[NIFTY]["segment"] == "NSE_INDEX" and by_key[NIFTY]["exchange"] == "NSE"
    assert {"instrument_key", "trading_symbol", "segment", "exchange", "instrument_type",
            "lot_size", "tick_size", "exchange_token", "name"} <= set(rows[0])


def test_feed_url_is_single_use_and_the_socket_path_redirects(sim: str) -> None:
    async def scenario() -> None:
        uri = authorize(sim)
        async with connect(uri) as ws:
            info = await next_message(ws)
            assert info.type == pb.market_info
        with pytest.raises(InvalidStatus) as reused:
            async with connect(uri):
                pass
        assert reused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as bare:
            async with connect("ws" + sim.removeprefix("http") + "/v3/feed/market-data-feed"):
                pass
        assert bare.value.response.status_code == 401
        # With the bearer token the socket path redirects, and the client follows it.
        async with connect("ws" + sim.removeprefix("http") + "/v3/feed/market-data-feed",
                           additional_headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
            assert (await next_message(ws)).type == pb.market_info

    asyncio.run(scenario())


def test_market_info_then_snapshot_then_live_updates_and_mode_change(sim: str) -> None:
    async def scenario() -> None:
        async with connect(authorize(sim)) as ws:
            info = upstox.decode_frame(await ws.recv(), 0, {})  # type: ignore[arg-type]
            assert info.market_status and info.market_status["NSE_EQ"] == "NORMAL_OPEN"
            await ws.send(sub([INFY, NIFTY, "NSE_EQ|UNKNOWN"], "full"))
            snapshot = await next_message(ws)
            assert snapshot.type == pb.initial_feed
            assert set(snapshot.feeds) == {INFY, NIFTY}
            assert snapshot.feeds[INFY].fullFeed.marketFF.ltpc.ltp > 0
            assert snapshot.feeds[INFY].requestMode == pb.full_d5
            assert snapshot.feeds[NIFTY].fullFeed.WhichOneof("FullFeedUnion") == "indexFF"
            live = await next_message(ws)
            assert live.type == pb.live_feed and set(live.feeds) <= {INFY, NIFTY}
            await ws.send(sub([INFY], "ltpc"))  # a repeated sub with another mode
            seen = await _until(ws, lambda m: INFY in m.feeds
                                and m.feeds[INFY].WhichOneof("FeedUnion") == "ltpc")
            assert seen.feeds[INFY].requestMode == pb.ltpc
            await ws.send(sub([INFY], "option_greeks", "change_mode"))
            await _until(ws, lambda m: INFY in m.feeds and m.feeds[INFY].WhichOneof(
                "FeedUnion") == "firstLevelWithGreeks")
            await ws.send(sub([INFY, NIFTY], "", "unsub"))
            await asyncio.sleep(0.2)
            with pytest.raises(TimeoutError):
                await _until(ws, lambda m: bool(m.feeds), timeout_s=1.5)

    asyncio.run(scenario())


async def _until(ws: ClientConnection, accept, timeout_s: float = 5.0) -> pb.FeedResponse:
    async with asyncio.timeout(timeout_s):
        while True:
            msg = await next_message(ws)
            if accept(msg):
                return msg


def test_kite_routes_still_answer_on_the_same_port(sim: str) -> None:
    req = urllib.request.Request(sim + "/instruments/NSE", headers={"Authorization": "token a:b"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert b"INFY" in gzip.decompress(resp.read())
